//! `tally tx` and `tally account`: small clients of the HTTP API.

use crate::api::{AccountView, StatusView, Submitted, TxStatus};
use crate::keys;
use crate::primitives::{AccountId, AssetCode};
use crate::tx::{Payload, Transaction, Transfer};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `tally tx ...`
#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// Sign and submit a transfer.
    Transfer(TransferArgs),
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
    super::run::runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        match cmd {
            TxCommand::Transfer(args) => transfer(&client, args).await,
            TxCommand::Show { api, hash } => {
                let s: TxStatus = get(&client, &format!("{api}/v1/transactions/{hash}")).await?;
                println!("{}", serde_json::to_string_pretty(&s)?);
                Ok(())
            }
        }
    })
}

async fn transfer(client: &reqwest::Client, args: TransferArgs) -> anyhow::Result<()> {
    let key = keys::read_key_file(&args.key)?;
    let me = keys::account_id(&key);
    let to = AccountId::from_hex(&args.to).context("--to: expected 64 hex characters")?;
    let asset =
        AssetCode::new(&args.asset).context("--asset: expected an asset code such as USD")?;
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
        payload: Payload::Transfer(Transfer {
            to,
            asset,
            amount: args.amount,
            memo: args.memo,
            travel: None,
        }),
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
    println!("{}", submitted.hash);
    if args.wait {
        let url = format!("{}/v1/transactions/{}", args.api, submitted.hash);
        let started = Instant::now();
        loop {
            let s: TxStatus = get(client, &url).await?;
            if s.status != "pending" {
                println!("{}", serde_json::to_string_pretty(&s)?);
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
    super::run::runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let a: AccountView = get(&client, &format!("{}/v1/accounts/{}", args.api, args.id)).await?;
        println!("{}", serde_json::to_string_pretty(&a)?);
        Ok(())
    })
}
