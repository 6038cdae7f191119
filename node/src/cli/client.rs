//! `tally tx` and `tally account`: small clients of the HTTP API.

use crate::api::{AccountView, StatusView, Submitted, TxStatus};
use crate::keys;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tally_ledger::compliance::{GovAction, SanctionsUpdate};
use tally_ledger::primitives::{AccountId, AssetCode};
use tally_ledger::tx::{Payload, Transaction, Transfer};

/// `tally tx ...`
#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// Sign and submit a transfer.
    Transfer(TransferArgs),
    /// Sign and submit any payload given as JSON (identity, freeze and governance operations;
    /// docs/compliance.md shows each shape).
    Submit(SubmitArgs),
    /// Propose a sanctions-list update loaded from a CSV file (`action,type,value`).
    Sanctions(SanctionsArgs),
    /// Show a transaction's status, receipt and proof.
    Show {
        /// API base URL.
        #[arg(long, default_value = "http://127.0.0.1:8700")]
        api: String,
        /// Transaction hash (hex).
        hash: String,
    },
}

/// `tally tx transfer`
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// API base URL of any validator.
    #[arg(long, default_value = "http://127.0.0.1:8700")]
    pub api: String,
    /// The sender's key file.
    #[arg(long)]
    pub key: PathBuf,
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
    /// Blocks until expiry, counted from the current height.
    #[arg(long, default_value_t = 1000)]
    pub ttl: u64,
    /// Wait until the transaction is final and print its receipt.
    #[arg(long)]
    pub wait: bool,
}

/// Where to send a transaction and how.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// API base URL of any validator.
    #[arg(long, default_value = "http://127.0.0.1:8700")]
    pub api: String,
    /// The signer's key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Blocks until expiry, counted from the current height.
    #[arg(long, default_value_t = 1000)]
    pub ttl: u64,
    /// Wait until the transaction is final and print its receipt.
    #[arg(long)]
    pub wait: bool,
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
    #[arg(long, default_value = "http://127.0.0.1:8700")]
    pub api: String,
    /// Account id (hex public key).
    pub id: String,
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
    let r = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !r.status().is_success() {
        return Err(error_of(r).await);
    }
    Ok(r.json().await?)
}

/// Runs `tally tx`.
pub fn tx(cmd: TxCommand) -> anyhow::Result<()> {
    crate::process::runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        match cmd {
            TxCommand::Transfer(args) => transfer(&client, args).await,
            TxCommand::Submit(args) => {
                let path = args.payload.display().to_string();
                let text = std::fs::read_to_string(&args.payload).context(path.clone())?;
                let payload: Payload = serde_json::from_str(&text)
                    .with_context(|| format!("{path}: not a payload"))?;
                send(&client, &args.send, payload).await
            }
            TxCommand::Sanctions(args) => {
                let path = args.csv.display().to_string();
                let text = std::fs::read_to_string(&args.csv).context(path.clone())?;
                let update =
                    SanctionsUpdate::from_csv(&args.list, &text).with_context(|| path.clone())?;
                crate::outln!(
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
                send(&client, &args.send, payload).await
            }
            TxCommand::Show { api, hash } => {
                let s: TxStatus = get(&client, &format!("{api}/v1/transactions/{hash}")).await?;
                crate::outln!("{}", serde_json::to_string_pretty(&s)?);
                Ok(())
            }
        }
    })
}

async fn transfer(client: &reqwest::Client, args: TransferArgs) -> anyhow::Result<()> {
    let to = AccountId::from_hex(&args.to).context("--to: expected 64 hex characters")?;
    let asset =
        AssetCode::new(&args.asset).context("--asset: expected an asset code such as USD")?;
    let payload = Payload::Transfer(Transfer {
        to,
        asset,
        amount: args.amount,
        memo: args.memo,
        travel: None,
    });
    let send_args = SendArgs {
        api: args.api,
        key: args.key,
        ttl: args.ttl,
        wait: args.wait,
    };
    send(client, &send_args, payload).await
}

/// Signs `payload` with the key, submits it, and with `--wait` follows it to its receipt.
async fn send(client: &reqwest::Client, args: &SendArgs, payload: Payload) -> anyhow::Result<()> {
    let key = keys::read_key_file(&args.key)?;
    let me = keys::account_id(&key);
    let status: StatusView = get(client, &format!("{}/v1/status", args.api)).await?;
    let sequence = match get::<AccountView>(client, &format!("{}/v1/accounts/{me}", args.api)).await
    {
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
    let r = client
        .post(format!("{}/v1/transactions", args.api))
        .json(&serde_json::json!({ "tx": hex::encode(signed.to_bytes()) }))
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(error_of(r).await);
    }
    let submitted: Submitted = r.json().await?;
    crate::outln!("{}", submitted.hash);
    if args.wait {
        let url = format!("{}/v1/transactions/{}", args.api, submitted.hash);
        let started = Instant::now();
        loop {
            let s: TxStatus = get(client, &url).await?;
            if s.status != "pending" {
                crate::outln!("{}", serde_json::to_string_pretty(&s)?);
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
    Ok(())
}

/// Runs `tally account`.
pub fn account(args: AccountArgs) -> anyhow::Result<()> {
    crate::process::runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let a: AccountView = get(&client, &format!("{}/v1/accounts/{}", args.api, args.id)).await?;
        crate::outln!("{}", serde_json::to_string_pretty(&a)?);
        Ok(())
    })
}
