//! `tally tx`, `tally account`, `tally block` and `tally status`: clients of the HTTP API, and
//! `tally tx sign`, which needs no network at all.

use crate::api::{AccountView, BlockView, DryRun, StatusView, Submitted, TxStatus};
use crate::keys;
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tally_ledger::compliance::{GovAction, Party, SanctionsUpdate, TravelRuleData};
use tally_ledger::primitives::{AccountId, AssetCode};
use tally_ledger::tx::{Payload, SignedTransaction, Transaction, Transfer};

/// How a command prints what it read or did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines for people.
    #[default]
    Text,
    /// One JSON object on one line, the API's own shape, for scripts.
    Json,
}

/// The default API address.
const API: &str = "http://127.0.0.1:8700";

/// `tally tx ...`
#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// Sign and submit a transfer.
    Transfer(Box<TransferArgs>),
    /// Sign and submit any payload given as JSON (identity, freeze and governance operations;
    /// docs/compliance.md shows each shape).
    Submit(SubmitArgs),
    /// Build and sign a transaction offline (no network): prints the body that
    /// `POST /v1/transactions` takes, for `tally tx send`, curl or any HTTP client.
    Sign(SignArgs),
    /// Submit a body that `tally tx sign` wrote (a file, or `-` for stdin).
    Send(SendBodyArgs),
    /// Propose a sanctions-list update loaded from a CSV file (`action,type,value`).
    Sanctions(SanctionsArgs),
    /// Show a transaction's status, receipt and proof (a signed read: the holder of an
    /// account it touches sees it, the KYC provider of a party or a regulator in scope in full).
    Show {
        /// API base URL.
        #[arg(long, default_value = API)]
        api: String,
        /// Key file the read is signed with.
        #[arg(long)]
        key: PathBuf,
        /// Transaction hash (hex).
        hash: String,
    },
}

/// What a transfer moves, and the travel-rule data that goes with it (required at or above
/// the rule set's travel-rule threshold; docs/compliance.md).
#[derive(Debug, Args)]
pub struct TransferFields {
    /// Recipient account (hex public key).
    #[arg(long)]
    pub to: String,
    /// Asset code, e.g. USD.
    #[arg(long)]
    pub asset: String,
    /// Amount in minor units (an integer).
    #[arg(long)]
    pub amount: u64,
    /// Optional memo.
    #[arg(long)]
    pub memo: Option<String>,
    /// Travel rule: the payer's full or legal name (with it, --beneficiary-name is required).
    #[arg(long)]
    pub originator_name: Option<String>,
    /// Travel rule: the payer's geographic address.
    #[arg(long, requires = "originator_name")]
    pub originator_address: Option<String>,
    /// Travel rule: the payer's national or customer identification number.
    #[arg(long, requires = "originator_name")]
    pub originator_national_id: Option<String>,
    /// Travel rule: the payer's date and place of birth.
    #[arg(long, requires = "originator_name")]
    pub originator_birth: Option<String>,
    /// Travel rule: the payee's full or legal name (with it, --originator-name is required).
    #[arg(long)]
    pub beneficiary_name: Option<String>,
    /// Travel rule: the payee's geographic address.
    #[arg(long, requires = "beneficiary_name")]
    pub beneficiary_address: Option<String>,
    /// Travel rule: the payee's national or customer identification number.
    #[arg(long, requires = "beneficiary_name")]
    pub beneficiary_national_id: Option<String>,
    /// Travel rule: the payee's date and place of birth.
    #[arg(long, requires = "beneficiary_name")]
    pub beneficiary_birth: Option<String>,
}

impl TransferFields {
    /// The transfer payload from `sender`; the travel-rule parties are the sender and `--to`.
    fn payload(self, sender: AccountId) -> anyhow::Result<Payload> {
        let to = AccountId::from_hex(&self.to).context("--to: expected 64 hex characters")?;
        let asset =
            AssetCode::new(&self.asset).context("--asset: expected an asset code such as USD")?;
        let travel = match (self.originator_name, self.beneficiary_name) {
            (None, None) => None,
            (Some(_), None) => bail!("--beneficiary-name: required with --originator-name"),
            (None, Some(_)) => bail!("--originator-name: required with --beneficiary-name"),
            (Some(originator), Some(beneficiary)) => Some(TravelRuleData {
                originator: Party {
                    name: originator,
                    account: sender,
                    address: self.originator_address,
                    national_id: self.originator_national_id,
                    date_and_place_of_birth: self.originator_birth,
                },
                beneficiary: Party {
                    name: beneficiary,
                    account: to,
                    address: self.beneficiary_address,
                    national_id: self.beneficiary_national_id,
                    date_and_place_of_birth: self.beneficiary_birth,
                },
            }),
        };
        if let Some(t) = &travel {
            t.check_shape()
                .map_err(|e| anyhow::anyhow!("travel rule: {e}"))?;
        }
        Ok(Payload::Transfer(Transfer {
            to,
            asset,
            amount: self.amount,
            memo: self.memo,
            travel,
        }))
    }
}

/// `tally tx transfer`
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Signer, API and waiting.
    #[command(flatten)]
    pub send: SendArgs,
    /// What to move.
    #[command(flatten)]
    pub transfer: TransferFields,
}

/// Where to send a transaction and how.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// API base URL of any validator.
    #[arg(long, default_value = API)]
    pub api: String,
    /// The signer's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Blocks until expiry, counted from the current height.
    #[arg(long, default_value_t = 1000)]
    pub ttl: u64,
    /// Wait until the transaction is final and print its receipt.
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// Ask the node what execution and compliance would decide now, without submitting.
    #[arg(long)]
    pub dry_run: bool,
}

/// `tally tx submit`
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Signer, API and waiting.
    #[command(flatten)]
    pub send: SendArgs,
    /// JSON file holding the payload, e.g. `{"vote": {"proposal": 1, "approve": true}}`.
    #[arg(long)]
    pub payload: PathBuf,
}

/// `tally tx sign`: everything the network would otherwise supply is given.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The signer's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// The network's chain id (`GET /v1/status` shows it).
    #[arg(long)]
    pub chain_id: String,
    /// The sender's next sequence number (`GET /v1/accounts/{id}` shows it).
    #[arg(long)]
    pub sequence: u64,
    /// The last height at which the transaction may be included.
    #[arg(long)]
    pub expiry_height: u64,
    /// Write the body here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// What to sign.
    #[command(subcommand)]
    pub what: SignWhat,
}

/// What `tally tx sign` signs.
#[derive(Debug, Subcommand)]
pub enum SignWhat {
    /// A transfer.
    Transfer(Box<TransferFields>),
    /// Any payload, as JSON in a file (`-` for stdin).
    Payload {
        /// The payload file.
        file: PathBuf,
    },
}

/// `tally tx send`
#[derive(Debug, Args)]
pub struct SendBodyArgs {
    /// API base URL of any validator.
    #[arg(long, default_value = API)]
    pub api: String,
    /// The body file `tally tx sign` wrote, or `-` for stdin.
    pub body: PathBuf,
    /// Wait until the transaction is final and print its receipt (read with `--key`).
    #[arg(long, conflicts_with = "dry_run", requires = "key")]
    pub wait: bool,
    /// Key file the receipt is read with (the sender's, or its KYC provider's).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Ask the node what execution and compliance would decide now, without submitting.
    #[arg(long)]
    pub dry_run: bool,
}

/// `tally tx sanctions`
#[derive(Debug, Args)]
pub struct SanctionsArgs {
    /// Signer (a member), API and waiting.
    #[command(flatten)]
    pub send: SendArgs,
    /// The CSV file: header `action,type,value` (more columns are ignored); action `add` or
    /// `remove`, type `identity` or `jurisdiction`.
    #[arg(long)]
    pub csv: PathBuf,
    /// Name of the list (e.g. the authority and date it was published).
    #[arg(long)]
    pub list: String,
    /// Height at which the update takes effect once passed.
    #[arg(long)]
    pub effective_height: u64,
}

/// `tally account`
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// API base URL.
    #[arg(long, default_value = API)]
    pub api: String,
    /// Key file the read is signed with: the account's own key, its KYC provider's, or a
    /// regulator's in scope.
    #[arg(long)]
    pub key: PathBuf,
    /// Account id (hex public key).
    pub id: String,
}

/// `tally block`
#[derive(Debug, Args)]
pub struct BlockArgs {
    /// API base URL.
    #[arg(long, default_value = API)]
    pub api: String,
    /// Also list each transaction's hash and code.
    #[arg(long)]
    pub receipts: bool,
    /// Height (0 is genesis).
    pub height: u64,
}

/// `tally status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// API base URL.
    #[arg(long, default_value = API)]
    pub api: String,
}

/// `tally probe`: a container health check without curl in the image.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// API base URL.
    #[arg(long, default_value = API)]
    pub api: String,
    /// Probe readiness (`/ready`) instead of liveness (`/health`).
    #[arg(long)]
    pub ready: bool,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
}

/// The body of `POST /v1/transactions`.
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    tx: String,
}

async fn error_of(r: reqwest::Response) -> anyhow::Error {
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    anyhow::anyhow!(
        "{} {}: {}",
        status.as_u16(),
        body["error"]["code"].as_str().unwrap_or("error"),
        body["error"]["message"].as_str().unwrap_or("")
    )
}

async fn get<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    answer(client.get(url), url).await
}

/// A signed read of `path` (docs/api/README.md, "Signed reads"), as `key`.
async fn get_signed<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    api: &str,
    path: &str,
    key: &ed25519_dalek::SigningKey,
    chain_id: &str,
) -> anyhow::Result<T> {
    let request = crate::api::auth::signed_get(client, api, path, key, chain_id);
    answer(request, &format!("{api}{path}")).await
}

/// Sends a read; its JSON answer, or the API's error.
async fn answer<T: serde::de::DeserializeOwned>(
    request: reqwest::RequestBuilder,
    url: &str,
) -> anyhow::Result<T> {
    let r = request.send().await.with_context(|| format!("GET {url}"))?;
    if !r.status().is_success() {
        return Err(error_of(r).await);
    }
    Ok(r.json().await?)
}

/// Prints `value` as one line of JSON, or as text for people.
fn print<T: Serialize>(output: Output, value: &T, text: impl FnOnce(&T) -> String) {
    match output {
        Output::Json => match serde_json::to_string(value) {
            Ok(line) => crate::outln!("{line}"),
            Err(e) => crate::outln!("{{\"error\": \"{e}\"}}"),
        },
        Output::Text => crate::out!("{}", text(value)),
    }
}

/// Reads a file, or stdin for `-`.
fn read_input(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| path.display().to_string())
}

fn read_payload(path: &Path) -> anyhow::Result<Payload> {
    let text = read_input(path)?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a payload", path.display()))
}

/// Runs `tally tx`.
pub fn tx(cmd: TxCommand, output: Output) -> anyhow::Result<()> {
    if let TxCommand::Sign(args) = cmd {
        return sign(args, output);
    }
    crate::process::runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        match cmd {
            TxCommand::Transfer(args) => {
                let args = *args;
                let key = keys::read_key_file(&args.send.key)?;
                let payload = args.transfer.payload(keys::account_id(&key))?;
                send(&client, &args.send, payload, output).await
            }
            TxCommand::Submit(args) => {
                let payload = read_payload(&args.payload)?;
                send(&client, &args.send, payload, output).await
            }
            TxCommand::Send(args) => {
                let text = read_input(&args.body)?;
                let body: Body = serde_json::from_str(&text).with_context(|| {
                    format!("{}: not a body from `tally tx sign`", args.body.display())
                })?;
                let signed = hex::decode(&body.tx)
                    .ok()
                    .and_then(|b| SignedTransaction::from_bytes(&b).ok())
                    .with_context(|| {
                        format!("{}: tx is not a signed transaction", args.body.display())
                    })?;
                let reader = match (&args.key, args.wait) {
                    (Some(path), true) => Some(keys::read_key_file(path)?),
                    _ => None,
                };
                post(
                    &client,
                    &args.api,
                    &signed,
                    args.dry_run,
                    reader.as_ref(),
                    output,
                )
                .await
            }
            TxCommand::Sanctions(args) => {
                let path = args.csv.display().to_string();
                let text = std::fs::read_to_string(&args.csv).context(path.clone())?;
                let update =
                    SanctionsUpdate::from_csv(&args.list, &text).with_context(|| path.clone())?;
                eprintln!(
                    "{path}: {} identities and {} jurisdictions to list, {} and {} to delist",
                    update.add_identities.len(),
                    update.add_jurisdictions.len(),
                    update.remove_identities.len(),
                    update.remove_jurisdictions.len()
                );
                let payload = Payload::Propose {
                    action: GovAction::UpdateSanctions(update),
                    effective_height: args.effective_height,
                };
                send(&client, &args.send, payload, output).await
            }
            TxCommand::Show { api, key, hash } => {
                let key = keys::read_key_file(&key)?;
                let status: StatusView = get(&client, &format!("{api}/v1/status")).await?;
                let path = format!("/v1/transactions/{hash}");
                let s: TxStatus = get_signed(&client, &api, &path, &key, &status.chain_id).await?;
                print(output, &s, tx_text);
                Ok(())
            }
            TxCommand::Sign(_) => unreachable!("signed offline above"),
        }
    })
}

/// `tally tx sign`: no network; the caller supplies chain id, sequence and expiry.
fn sign(args: SignArgs, output: Output) -> anyhow::Result<()> {
    let key = keys::read_key_file(&args.key)?;
    let sender = keys::account_id(&key);
    let payload = match args.what {
        SignWhat::Transfer(fields) => (*fields).payload(sender)?,
        SignWhat::Payload { file } => read_payload(&file)?,
    };
    let chain_id = args.chain_id;
    let signed = Transaction {
        chain_id: chain_id.clone(),
        sender,
        sequence: args.sequence,
        expiry_height: args.expiry_height,
        payload,
    }
    .sign(&key);
    // The same checks a node makes before it admits anything, so a body that cannot be
    // accepted is refused here, where the key is.
    let verified = signed
        .clone()
        .verify(&chain_id)
        .map_err(|e| anyhow::anyhow!("{}: {e}", e.code()))?;
    let body = serde_json::to_string(&Body {
        tx: hex::encode(signed.to_bytes()),
    })?;
    match args.out {
        Some(path) => {
            std::fs::write(&path, format!("{body}\n"))
                .with_context(|| path.display().to_string())?;
            match output {
                Output::Json => crate::outln!("{}", serde_json::json!({ "hash": verified.hash })),
                Output::Text => crate::outln!("{}", verified.hash),
            }
        }
        None => {
            crate::outln!("{body}");
            eprintln!("{}", verified.hash);
        }
    }
    Ok(())
}

/// Signs `payload` with the key, submits it, and with `--wait` follows it to its receipt.
async fn send(
    client: &reqwest::Client,
    args: &SendArgs,
    payload: Payload,
    output: Output,
) -> anyhow::Result<()> {
    let key = keys::read_key_file(&args.key)?;
    let me = keys::account_id(&key);
    let status: StatusView = get(client, &format!("{}/v1/status", args.api)).await?;
    let path = format!("/v1/accounts/{me}");
    let sequence =
        match get_signed::<AccountView>(client, &args.api, &path, &key, &status.chain_id).await {
            Ok(a) => a.sequence,
            Err(_) => 0,
        };
    let signed = Transaction {
        chain_id: status.chain_id,
        sender: me,
        sequence,
        expiry_height: status.height + args.ttl,
        payload,
    }
    .sign(&key);
    let reader = args.wait.then_some(&key);
    post(client, &args.api, &signed, args.dry_run, reader, output).await
}

/// Submits (or dry-runs) a signed transaction and prints the answer.
async fn post(
    client: &reqwest::Client,
    api: &str,
    signed: &SignedTransaction,
    dry_run: bool,
    wait: Option<&ed25519_dalek::SigningKey>,
    output: Output,
) -> anyhow::Result<()> {
    let query = if dry_run { "?dry_run=true" } else { "" };
    let r = client
        .post(format!("{api}/v1/transactions{query}"))
        .json(&Body {
            tx: hex::encode(signed.to_bytes()),
        })
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(error_of(r).await);
    }
    if dry_run {
        let answer: DryRun = r.json().await?;
        print(output, &answer, |d| {
            format!(
                "{} {} at height {}\n{}",
                d.hash,
                d.status,
                d.height,
                receipt_text(&d.receipt)
            )
        });
        return Ok(());
    }
    let submitted: Submitted = r.json().await?;
    let Some(reader) = wait else {
        print(output, &submitted, |s| format!("{}\n", s.hash));
        return Ok(());
    };
    let chain_id = get::<StatusView>(client, &format!("{api}/v1/status"))
        .await?
        .chain_id;
    let path = format!("/v1/transactions/{}", submitted.hash);
    let started = Instant::now();
    loop {
        let s: TxStatus = get_signed(client, api, &path, reader, &chain_id).await?;
        if s.status != "pending" {
            print(output, &s, tx_text);
            if s.status == "rejected" {
                bail!("the transaction was rejected");
            }
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("not final after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn receipt_text(r: &tally_ledger::Receipt) -> String {
    let mut out = format!("  outcome  {:?}\n  code     {}\n", r.outcome, r.code);
    if !r.reason.is_empty() {
        out += &format!("  reason   {}\n", r.reason);
    }
    for e in &r.events {
        out += &format!(
            "  event    {}\n",
            serde_json::to_string(e).unwrap_or_default()
        );
    }
    for f in &r.flags {
        out += &format!(
            "  flag     {} (rules v{}): {}\n",
            f.rule_id, f.rule_version, f.reason
        );
    }
    out
}

fn tx_text(s: &TxStatus) -> String {
    let mut out = format!("{} {}", s.hash, s.status);
    if let (Some(h), Some(i)) = (s.height, s.index) {
        out += &format!(" at height {h}, index {i}");
    }
    out.push('\n');
    if let Some(r) = &s.receipt {
        out += &receipt_text(r);
    }
    if s.proof.is_some() {
        out += "  proof    yes (check it with `tally verify-proof`)\n";
    }
    out
}

/// Runs `tally account`.
pub fn account(args: AccountArgs, output: Output) -> anyhow::Result<()> {
    let key = keys::read_key_file(&args.key)?;
    let path = format!("/v1/accounts/{}", args.id);
    read_signed(&args.api, &path, &key, output, |a: &AccountView| {
        let mut out = format!("account  {}\nsequence {}\n", a.id, a.sequence);
        out += &format!(
            "identity {}\n",
            a.identity.as_deref().unwrap_or("(unbound)")
        );
        for (asset, amount) in &a.balances {
            out += &format!("balance  {amount} {asset}\n");
        }
        out += &format!("height   {}\n", a.height);
        out
    })
}

/// Runs `tally block`.
pub fn block(args: BlockArgs, output: Output) -> anyhow::Result<()> {
    let query = if args.receipts { "?receipts=true" } else { "" };
    let url = format!("{}/v1/blocks/{}{query}", args.api, args.height);
    read(&url, output, |b: &BlockView| {
        let h = &b.header;
        let mut out = format!(
            "block    {} at height {}\nparent   {}\nproposer {}\ntime_ms  {}\nstate    {}\nreceipts {}\ncertified {}\n",
            b.hash,
            h.height,
            h.parent_hash,
            h.proposer,
            h.timestamp_ms,
            h.state_root,
            h.receipt_root,
            b.certificate
                .as_ref()
                .map_or_else(|| "no".to_owned(), |c| format!("yes, {} signatures", c.signatures.len())),
        );
        for t in b.transactions.iter().flatten() {
            out += &format!("  tx {} {}\n", t.hash, t.code);
        }
        out
    })
}

/// Runs `tally status`.
pub fn status(args: StatusArgs, output: Output) -> anyhow::Result<()> {
    read(
        &format!("{}/v1/status", args.api),
        output,
        |s: &StatusView| {
            format!(
            "chain    {}\nnode     {} ({})\nheight   {} (certified {}, lag {}, {})\nround    {} in epoch {}\nleader   {}\npeers    {}\nmempool  {}\nversion  {}\n",
            s.chain_id,
            s.node,
            s.validator,
            s.height,
            s.certified_height,
            s.sync_lag,
            if s.ready { "ready" } else { "not ready" },
            s.round,
            s.epoch,
            s.leader.map_or_else(|| "none".to_owned(), |l| l.to_string()),
            s.peers,
            s.mempool,
            s.version
        )
        },
    )
}

/// `tally probe`: exits 0 when the node answers 200 on `/health` (or `/ready`), 1 otherwise,
/// printing the node's answer or the reason it could not be reached.
pub fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    let path = if args.ready { "/ready" } else { "/health" };
    let url = format!("{}{path}", args.api.trim_end_matches('/'));
    let timeout = std::time::Duration::from_millis(args.timeout_ms);
    let answer = crate::process::runtime()?.block_on(async move {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let r = client.get(&url).send().await?;
        let code = r.status();
        let body = r.text().await.unwrap_or_default();
        anyhow::Ok((code, body))
    });
    match answer {
        Ok((code, body)) if code.is_success() => {
            crate::outln!("{}", body.trim());
            Ok(())
        }
        Ok((code, body)) => anyhow::bail!("{path}: {code}: {}", body.trim()),
        Err(e) => anyhow::bail!("{path}: {e:#}"),
    }
}

/// GETs one resource and prints it.
fn read_signed<T: serde::de::DeserializeOwned + Serialize>(
    api: &str,
    path: &str,
    key: &ed25519_dalek::SigningKey,
    output: Output,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    crate::process::runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let status: StatusView = get(&client, &format!("{api}/v1/status")).await?;
        let value: T = get_signed(&client, api, path, key, &status.chain_id).await?;
        print(output, &value, text);
        Ok(())
    })
}

fn read<T: serde::de::DeserializeOwned + Serialize>(
    url: &str,
    output: Output,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    crate::process::runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let value: T = get(&client, url).await?;
        print(output, &value, text);
        Ok(())
    })
}
