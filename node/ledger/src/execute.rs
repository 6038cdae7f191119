//! Deterministic execution of a committed block's transactions, in order.
//!
//! Time is the block's timestamp and height, never a clock. Each transaction runs in its own
//! overlay: a rejected transaction leaves no trace, not even on the sender's sequence number.

use super::accounts::{account_key, asset_key, AccountState, AssetInfo};
use super::receipt::{receipt_root, Event, Flag, Receipt, RejectCode, Rejection};
use super::state::{Overlay, StateError, StateView, WriteSet};
use crate::compliance::registry::RULES_KEY;
use crate::compliance::{self, governance, Payment, RuleSet, Rules};
use crate::primitives::{AccountId, Amount, AssetCode, Hash, Height, TimestampMs};
use crate::tx::{Payload, Transfer, VerifiedTransaction};

/// What execution knows about the block it runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockContext {
    /// Height of the block being executed.
    pub height: Height,
    /// The block's agreed timestamp.
    pub timestamp_ms: TimestampMs,
}

/// The effects of one block.
#[derive(Debug, Clone)]
pub struct BlockOutput {
    /// One receipt per transaction, in block order.
    pub receipts: Vec<Receipt>,
    /// Merkle root over the receipts.
    pub receipt_root: Hash,
    /// The version of the rule set the block's transactions were checked against (after any
    /// governance change due at its height).
    pub rules_version: u64,
    /// Every state key the block changed.
    pub writes: WriteSet,
    /// The governance proposals that came due at the block's start, applied or superseded.
    pub governance: Vec<governance::DueProposal>,
}

/// Executes `txs` against `state` without changing it; apply `writes` to commit.
pub fn execute_block(
    state: &dyn StateView,
    ctx: &BlockContext,
    txs: &[VerifiedTransaction],
) -> Result<BlockOutput, StateError> {
    let mut overlay = Overlay::new(state);
    // Governance changes scheduled for this height apply before its transactions; the rule
    // set is then read once for the whole block.
    let due = governance::begin_block(&mut overlay, ctx.height)?;
    let rules = Rules::new(
        overlay
            .get::<RuleSet>(RULES_KEY)?
            .ok_or_else(|| StateError::Corrupt {
                key: String::from_utf8_lossy(RULES_KEY).into_owned(),
                source: crate::codec::CodecError::Malformed("the rule set is missing".into()),
            })?,
        governance::kyc_providers(&overlay)?,
    );
    let mut receipts = Vec::with_capacity(txs.len());
    for tx in txs {
        let receipt = match execute_tx(&mut overlay, ctx, &rules, tx)? {
            Ok((events, flags)) => {
                overlay.commit_tx();
                Receipt::applied(tx.hash, events, flags, rules.set.version)
            }
            Err(rejection) => {
                overlay.discard_tx();
                let flags = rejection.flag.clone().into_iter().collect();
                Receipt::rejected(tx.hash, rejection, flags, rules.set.version)
            }
        };
        receipts.push(receipt);
    }
    Ok(BlockOutput {
        rules_version: rules.set.version,
        receipt_root: receipt_root(&receipts),
        receipts,
        writes: overlay.into_writes(),
        governance: due,
    })
}

type Applied = Result<(Vec<Event>, Vec<Flag>), Rejection>;

fn execute_tx(
    o: &mut Overlay<'_>,
    ctx: &BlockContext,
    rules: &Rules,
    vtx: &VerifiedTransaction,
) -> Result<Applied, StateError> {
    let tx = &vtx.tx;
    if ctx.height > tx.expiry_height {
        return Ok(Err(Rejection::new(
            RejectCode::Expired,
            format!(
                "expired at height {}, block is {}",
                tx.expiry_height, ctx.height
            ),
        )));
    }
    let mut sender = account(o, &tx.sender)?;
    if sender.sequence != tx.sequence {
        return Ok(Err(Rejection::new(
            RejectCode::BadSequence,
            format!(
                "sequence {} but the account's next is {}",
                tx.sequence, sender.sequence
            ),
        )));
    }
    sender.sequence += 1;
    o.put(account_key(&tx.sender), &sender);
    let (now, height) = (ctx.timestamp_ms, ctx.height);
    let result = match &tx.payload {
        Payload::Transfer(t) => return transfer(o, rules, now, &tx.sender, t),
        Payload::Issue { to, asset, amount } => {
            issue(o, rules, now, &tx.sender, to, asset, *amount)?
        }
        Payload::Redeem { asset, amount } => redeem(o, rules, now, &tx.sender, asset, *amount)?,
        Payload::Identity(op) => compliance::identity_op(o, &tx.sender, now, op)?,
        Payload::Freeze(op) => compliance::freeze_op(o, &tx.sender, height, op)?,
        Payload::Propose {
            action,
            effective_height,
        } => governance::propose(o, &tx.sender, height, action, *effective_height)?,
        Payload::Vote { proposal, approve } => {
            governance::vote(o, &tx.sender, height, *proposal, *approve)?
        }
    };
    Ok(result.map(|events| (events, Vec::new())))
}

fn account(o: &Overlay<'_>, id: &AccountId) -> Result<AccountState, StateError> {
    Ok(o.get(&account_key(id))?.unwrap_or_default())
}

fn asset(o: &Overlay<'_>, code: &AssetCode) -> Result<Result<AssetInfo, Rejection>, StateError> {
    Ok(o.get(&asset_key(code))?.ok_or_else(|| {
        Rejection::new(
            RejectCode::UnknownAsset,
            format!("asset {code} is not registered"),
        )
    }))
}

fn overflow(what: &str) -> Rejection {
    Rejection::new(RejectCode::AmountOverflow, format!("{what} would overflow"))
}

/// Adds to a balance, refusing overflow.
fn credit(acct: &mut AccountState, asset: &AssetCode, amount: Amount) -> Result<(), Rejection> {
    let new = acct
        .balance(asset)
        .checked_add(amount)
        .ok_or_else(|| overflow("the receiving balance"))?;
    acct.balances.insert(asset.clone(), new);
    Ok(())
}

/// Takes from a balance, refusing to go below zero.
fn debit(acct: &mut AccountState, asset: &AssetCode, amount: Amount) -> Result<(), Rejection> {
    let have = acct.balance(asset);
    let new = have.checked_sub(amount).ok_or_else(|| {
        Rejection::new(
            RejectCode::InsufficientFunds,
            format!("balance {have} {asset} is less than {amount}"),
        )
    })?;
    if new == 0 {
        acct.balances.remove(asset);
    } else {
        acct.balances.insert(asset.clone(), new);
    }
    Ok(())
}

fn transfer(
    o: &mut Overlay<'_>,
    rules: &Rules,
    now: TimestampMs,
    from: &AccountId,
    t: &Transfer,
) -> Result<Applied, StateError> {
    if let Err(r) = asset(o, &t.asset)? {
        return Ok(Err(r));
    }
    let payer = account(o, from)?;
    let payee = account(o, &t.to)?;
    let payment = Payment {
        from: (from, &payer),
        to: (&t.to, &payee),
        asset: &t.asset,
        amount: t.amount,
        travel: t.travel.as_ref(),
    };
    let flags = match compliance::check_transfer(o, rules, now, &payment)? {
        Ok(flags) => flags,
        Err(r) => return Ok(Err(r)),
    };
    let mut payer = payer;
    if let Err(r) = debit(&mut payer, &t.asset, t.amount) {
        return Ok(Err(r));
    }
    o.put(account_key(from), &payer);
    let mut payee = account(o, &t.to)?;
    if let Err(r) = credit(&mut payee, &t.asset, t.amount) {
        return Ok(Err(r));
    }
    o.put(account_key(&t.to), &payee);
    let events = vec![Event::Transferred {
        from: *from,
        to: t.to,
        asset: t.asset.clone(),
        amount: t.amount,
    }];
    Ok(Ok((events, flags)))
}

fn issuer_asset(
    o: &Overlay<'_>,
    sender: &AccountId,
    code: &AssetCode,
) -> Result<Result<AssetInfo, Rejection>, StateError> {
    Ok(asset(o, code)?.and_then(|info| {
        if info.issuer == *sender {
            Ok(info)
        } else {
            Err(Rejection::new(
                RejectCode::UnauthorizedIssuer,
                format!("only the issuer of {code} may issue or redeem it"),
            ))
        }
    }))
}

fn issue(
    o: &mut Overlay<'_>,
    rules: &Rules,
    now: TimestampMs,
    sender: &AccountId,
    to: &AccountId,
    code: &AssetCode,
    amount: Amount,
) -> Result<Result<Vec<Event>, Rejection>, StateError> {
    let mut info = match issuer_asset(o, sender, code)? {
        Ok(info) => info,
        Err(r) => return Ok(Err(r)),
    };
    // The issuer's own identity must be in good standing, new units go only to an account
    // whose identity may receive them, and across borders only along an open corridor.
    let issuer = account(o, sender)?;
    let from = match compliance::check_party(o, rules, (sender, &issuer), code, now, "issuer")? {
        Ok(identity) => identity,
        Err(r) => return Ok(Err(r)),
    };
    let receiver = account(o, to)?;
    let into = match compliance::check_party(o, rules, (to, &receiver), code, now, "receiver")? {
        Ok(identity) => identity,
        Err(r) => return Ok(Err(r)),
    };
    let (fj, tj) = (from.jurisdiction, into.jurisdiction);
    if fj != tj && !rules.corridor_open(fj, tj) {
        return Ok(Err(Rejection::rule(
            "corridor.closed",
            rules.set.version,
            format!("issuing from {fj} to {tj} is not an allowed corridor"),
        )));
    }
    let Some(supply) = info.supply.checked_add(amount) else {
        return Ok(Err(overflow("the supply")));
    };
    info.supply = supply;
    // Nothing was written since it was read: the receiver's state is `receiver`.
    let mut acct = receiver;
    if let Err(r) = credit(&mut acct, code, amount) {
        return Ok(Err(r));
    }
    o.put(asset_key(code), &info);
    o.put(account_key(to), &acct);
    Ok(Ok(vec![Event::Issued {
        to: *to,
        asset: code.clone(),
        amount,
    }]))
}

fn redeem(
    o: &mut Overlay<'_>,
    rules: &Rules,
    now: TimestampMs,
    sender: &AccountId,
    code: &AssetCode,
    amount: Amount,
) -> Result<Result<Vec<Event>, Rejection>, StateError> {
    let mut info = match issuer_asset(o, sender, code)? {
        Ok(info) => info,
        Err(r) => return Ok(Err(r)),
    };
    let mut acct = account(o, sender)?;
    // Paying out fiat is a payment to the issuer's own identity: it must be in good standing.
    if let Err(r) = compliance::check_party(o, rules, (sender, &acct), code, now, "issuer")? {
        return Ok(Err(r));
    }
    if let Err(r) = debit(&mut acct, code, amount) {
        return Ok(Err(r));
    }
    // Supply >= any balance, because balances only come from issue.
    info.supply = info.supply.saturating_sub(amount);
    o.put(asset_key(code), &info);
    o.put(account_key(sender), &acct);
    Ok(Ok(vec![Event::Redeemed {
        asset: code.clone(),
        amount,
    }]))
}
