//! `tally verify-proof`: checks an inclusion proof offline.

use anyhow::Context;
use std::path::PathBuf;
use tally_ledger::block::InclusionProof;
use tally_ledger::compliance::ValidatorEpoch;
use tally_ledger::genesis::Genesis;

/// Arguments of `tally verify-proof`.
#[derive(Debug, clap::Args)]
pub struct VerifyProofArgs {
    /// The proof, as JSON (the `proof` object of `GET /v1/transactions/{hash}`).
    pub file: PathBuf,
    /// The network's genesis file: the validator set the certificate must come from.
    #[arg(long)]
    pub genesis: PathBuf,
    /// For a block after a governance validator-set change: the set of its epoch, as JSON (the
    /// `validators` object of `GET /v1/compliance/rules`: epoch, first_height, validators).
    #[arg(long)]
    pub validator_set: Option<PathBuf>,
}

pub fn verify(args: VerifyProofArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let proof: InclusionProof = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an inclusion proof", args.file.display()))?;
    let genesis = Genesis::load(&args.genesis)?;
    let (validators, whose) = match &args.validator_set {
        None => (genesis.validator_keys(), "genesis".to_owned()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let set: ValidatorEpoch = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a validator set", path.display()))?;
            if proof.header.height < set.first_height {
                anyhow::bail!(
                    "block {} is older than the validator set of epoch {} (first height {})",
                    proof.header.height,
                    set.epoch,
                    set.first_height
                );
            }
            let keys = set.validators.iter().map(|v| v.public_key).collect();
            (keys, format!("epoch {}", set.epoch))
        }
    };
    proof
        .verify(&validators)
        .with_context(|| format!("proof in {} does NOT verify", args.file.display()))?;
    let h = &proof.header;
    if h.chain_id != genesis.chain_id {
        anyhow::bail!(
            "the header is for chain {:?} but the genesis is {:?}",
            h.chain_id,
            genesis.chain_id
        );
    }
    crate::outln!("proof verifies:");
    crate::outln!(
        "  receipt of tx {} ({}: {}) is leaf {} of {} under receipt root {}",
        proof.receipt.tx_hash,
        proof.receipt.code,
        proof.receipt.reason,
        proof.path.index,
        proof.path.leaf_count,
        h.receipt_root
    );
    crate::outln!(
        "  block {} of chain {} (header {}, state root {})",
        h.height,
        h.chain_id,
        h.hash(),
        h.state_root
    );
    crate::outln!(
        "  certified by {} of {} {whose} validators (quorum {})",
        proof.certificate.signatures.len(),
        validators.len(),
        tally_ledger::block::quorum(validators.len())
    );
    Ok(())
}
