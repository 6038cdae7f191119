//! HTTP API v1 (axum). Every error is JSON `{"error": {"code", "message"}}` with a stable code;
//! request bodies are size-limited; the routes are listed in docs/api/openapi.yaml, and a test
//! checks that the router and the document agree.

pub mod access_log;
pub mod auth;
mod error;
pub mod node;
mod views;

use auth::{Access, Caller};
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
pub use error::ApiError;
pub use node::{AdmitError, Limits, Node, Status};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;
use tally_ledger::block::InclusionProof;
use tally_ledger::merkle;
use tally_ledger::primitives::{AccountId, Hash, Height};
use tally_ledger::tx::{verify_batch, SignedTransaction, TxError, VerifiedTransaction};
use tally_ledger::{account_key, AccountState, Receipt};
use tokio::sync::watch;
pub use views::*;

type Shared = Arc<dyn Node>;

/// Every route of the API, as (method, path) in the router's syntax. docs/api/openapi.yaml
/// lists the same ones.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/transactions"),
    ("post", "/v1/transactions/batch"),
    ("get", "/v1/transactions/{hash}"),
    ("get", "/v1/accounts/{id}"),
    ("get", "/v1/identities/{id}"),
    ("get", "/v1/roles/{key}"),
    ("get", "/v1/compliance/rules"),
    ("get", "/v1/governance/proposals/{id}"),
    ("get", "/v1/blocks/{height}"),
    ("get", "/v1/status"),
    ("get", "/v1/audit/access-log"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
];

/// The (method, path) pairs an OpenAPI document lists under `paths:`, sorted.
pub fn documented_routes(openapi_yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_paths = false;
    let mut current: Option<String> = None;
    for line in openapi_yaml.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            in_paths = line.starts_with("paths:");
            current = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            current = Some(format!("/{p}"));
        } else if let (Some(path), Some(m)) = (&current, line.strip_prefix("    ")) {
            for method in ["get", "post", "put", "delete", "patch"] {
                if m.starts_with(&format!("{method}:")) {
                    out.push((method.to_owned(), path.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

/// The router over a node's shared state; fails if the access log in the store is unreadable.
pub fn router(shared: Shared) -> Result<Router, crate::storage::StorageError> {
    let limit = shared.limits().max_body_bytes;
    let log: access_log::SharedLog = Arc::new(access_log::AccessLog::open(shared.store())?);
    Ok(Router::new()
        .route("/v1/transactions", post(submit))
        .route("/v1/transactions/batch", post(submit_batch))
        .route("/v1/transactions/{hash}", get(transaction))
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/identities/{id}", get(identity))
        .route("/v1/roles/{key}", get(role))
        .route("/v1/compliance/rules", get(rules))
        .route("/v1/governance/proposals/{id}", get(proposal))
        .route("/v1/blocks/{height}", get(block))
        .route("/v1/status", get(status))
        .route("/v1/audit/access-log", get(access_log::read))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("route", "no such route") })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::Extension(auth::SharedNonces::default()))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            access_log::record,
        ))
        .layer(axum::Extension(log))
        .layer(middleware::from_fn(error::envelope))
        .layer(middleware::from_fn_with_state(shared.clone(), observe))
        .with_state(shared))
}

/// Serves the API on `listener` until `stop` flips.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let app = match router(shared) {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "the API cannot start: its access log is unreadable");
            return;
        }
    };
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn observe(State(shared): State<Shared>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    // A fixed set: a client that invents methods must not invent series.
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let m = shared.metrics();
    m.http_requests
        .with_label_values(&[&route, method, &status])
        .inc();
    m.http_request_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    tx: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBatchBody {
    txs: Vec<String>,
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is over the limit",
            )
        } else {
            ApiError::bad_request("bad_body", e.to_string())
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| match e.classify() {
        // Well-formed JSON of the wrong shape: a missing field, a wrong type.
        serde_json::error::Category::Data => ApiError::bad_request("bad_body", e.to_string()),
        _ => ApiError::bad_request("malformed_json", e.to_string()),
    })
}

/// A body, if it says what it is, must say JSON.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let json = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if json {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the request body must be JSON (Content-Type: application/json)",
    ))
}

/// A query string that does not parse into the route's parameters.
pub(crate) fn bad_query(e: QueryRejection) -> ApiError {
    ApiError::bad_request("bad_query", e.body_text())
}

/// A path segment that does not decode (invalid percent-encoding or UTF-8).
fn bad_path(e: PathRejection) -> ApiError {
    ApiError::bad_request("bad_path", e.body_text())
}

fn decode_tx(hex_tx: &str) -> Result<SignedTransaction, TxError> {
    let bytes = hex::decode(hex_tx).map_err(|_| {
        TxError::Malformed(tally_ledger::codec::CodecError::Malformed(
            "the transaction is not hex".into(),
        ))
    })?;
    SignedTransaction::from_bytes(&bytes)
}

/// Stateless checks that need the node: expiry against the executed height and whether the
/// transaction was already committed.
fn admit_checks(shared: &dyn Node, tx: &VerifiedTransaction) -> Result<(), ApiError> {
    let height = shared.height();
    if tx.tx.expiry_height <= height {
        return Err(ApiError::from_tx(&TxError::Expired {
            expiry: tx.tx.expiry_height,
            height,
        }));
    }
    if let Some(loc) = shared.store().tx_location(&tx.hash).map_err(storage)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_committed",
            format!(
                "transaction {} was committed at height {}",
                tx.hash, loc.height
            ),
        ));
    }
    Ok(())
}

/// Only validators of the current epoch order transactions.
fn require_validator(shared: &dyn Node) -> Result<(), ApiError> {
    if shared.is_validator() {
        return Ok(());
    }
    count_rejection(shared, "not_a_validator");
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_a_validator",
        "this node is not in the current validator set; submit to a validator",
    ))
}

/// Back-pressure: while the mempool is full a submission is refused before its body is decoded
/// or its signatures checked, so overload costs the node almost nothing.
fn require_room(shared: &dyn Node) -> Result<(), ApiError> {
    if !shared.mempool_is_full() {
        return Ok(());
    }
    count_rejection(shared, "mempool_full");
    Err(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "mempool_full",
        "the mempool is full; retry later",
    ))
}

fn admit_error(e: AdmitError) -> ApiError {
    match e {
        AdmitError::Full(_) => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "mempool_full", e.to_string())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitQuery {
    #[serde(default)]
    dry_run: bool,
}

async fn submit(
    State(shared): State<Shared>,
    query: Result<Query<SubmitQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    require_json(&headers)?;
    if !query.dry_run {
        require_validator(&*shared)?;
    }
    require_room(&*shared)?;
    let body: SubmitBody = parse_json(body)?;
    let signed = decode_tx(&body.tx).map_err(|e| ApiError::from_tx(&e))?;
    let chain_id = shared.chain_id().to_owned();
    let verified = tokio::task::spawn_blocking(move || signed.verify(&chain_id))
        .await
        .map_err(|_| ApiError::internal("verification task failed"))?
        .map_err(|e| ApiError::from_tx(&e))?;
    if query.dry_run {
        admit_checks(&*shared, &verified)?;
        let simulated = tokio::task::spawn_blocking(move || dry_run(&*shared, verified))
            .await
            .map_err(|_| ApiError::internal("dry run task failed"))??;
        return Ok((StatusCode::OK, Json(simulated)).into_response());
    }
    admit_checks(&*shared, &verified).inspect_err(|e| count_rejection(&*shared, e.code()))?;
    let hash = verified.hash;
    let result = shared.admit(vec![verified]).remove(0);
    result.map_err(|e| {
        count_rejection(&*shared, "mempool_full");
        admit_error(e)
    })?;
    Ok((StatusCode::ACCEPTED, Json(Submitted::pending(hash))).into_response())
}

async fn submit_batch(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    require_validator(&*shared)?;
    require_room(&*shared)?;
    let body: SubmitBatchBody = parse_json(body)?;
    if body.txs.len() > shared.limits().max_batch_submit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} transactions in one submission; at most {} are accepted",
                body.txs.len(),
                shared.limits().max_batch_submit
            ),
        ));
    }
    let n = body.txs.len();
    let mut results: Vec<Option<Result<Hash, ApiError>>> = vec![None; n];
    let mut decoded = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    for (i, t) in body.txs.iter().enumerate() {
        match decode_tx(t) {
            Ok(s) => {
                decoded.push(s);
                positions.push(i);
            }
            Err(e) => results[i] = Some(Err(ApiError::from_tx(&e))),
        }
    }
    let chain_id = shared.chain_id().to_owned();
    let verified = tokio::task::spawn_blocking(move || verify_batch(decoded, &chain_id))
        .await
        .map_err(|_| ApiError::internal("verification task failed"))?;
    let mut admit = Vec::with_capacity(n);
    let mut admit_pos = Vec::with_capacity(n);
    for (r, i) in verified.into_iter().zip(positions) {
        match r.map_err(|e| ApiError::from_tx(&e)).and_then(|v| {
            admit_checks(&*shared, &v)?;
            Ok(v)
        }) {
            Ok(v) => {
                admit.push(v);
                admit_pos.push(i);
            }
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    for (r, i) in shared.admit(admit).into_iter().zip(admit_pos) {
        results[i] = Some(r.map_err(admit_error));
    }
    let results: Vec<Result<Hash, ApiError>> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApiError::internal("no result"))))
        .collect();
    for r in &results {
        if let Err(e) = r {
            count_rejection(&*shared, e.code());
        }
    }
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let all_full = accepted == 0
        && !results.is_empty()
        && results
            .iter()
            .all(|r| matches!(r, Err(e) if e.code() == "mempool_full"));
    if all_full {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "mempool_full",
            "the mempool is full; retry later",
        ));
    }
    Ok((StatusCode::ACCEPTED, Json(BatchSubmitted::new(results))).into_response())
}

/// Executes one transaction against the committed state as if it were alone in the next block
/// (its height, the last block's timestamp), and throws the result away: the receipt says what
/// execution and compliance would decide now. Nothing is written and nothing is admitted.
fn dry_run(shared: &dyn Node, tx: VerifiedTransaction) -> Result<DryRun, ApiError> {
    let store = shared.store();
    let height = shared.height();
    let timestamp_ms = store
        .block(height)
        .map_err(storage)?
        .map_or(0, |b| b.header.timestamp_ms);
    let ctx = tally_ledger::BlockContext {
        height: height + 1,
        timestamp_ms,
    };
    let output =
        tally_ledger::execute_block(store, &ctx, std::slice::from_ref(&tx)).map_err(|e| {
            tracing::error!(error = %e, "dry run could not read the state");
            ApiError::internal("the state could not be read")
        })?;
    let receipt = output
        .receipts
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("execution returned no receipt"))?;
    Ok(DryRun::new(tx.hash, ctx.height, holder_receipt(receipt)))
}

fn count_rejection(shared: &dyn Node, code: &str) {
    shared
        .metrics()
        .transactions_rejected
        .with_label_values(&["ingress", code])
        .inc();
}

/// 32 bytes in their one text form: 64 lower-case hex characters.
fn parse_hex32(s: &str) -> Option<Hash> {
    let lower = s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    lower.then(|| Hash::from_hex(s)).flatten()
}

/// A non-negative integer in its one text form: decimal digits, no sign, no leading zero.
fn parse_integer(s: &str) -> Option<u64> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let canonical = digits && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

fn parse_hash(s: &str) -> Result<Hash, ApiError> {
    parse_hex32(s).ok_or_else(|| {
        ApiError::bad_request(
            "bad_hash",
            "a transaction hash is 64 lower-case hexadecimal characters",
        )
    })
}

fn parse_account(s: &str, code: &'static str, what: &str) -> Result<AccountId, ApiError> {
    parse_hex32(s).map(|h| AccountId(h.0)).ok_or_else(|| {
        ApiError::bad_request(
            code,
            format!("{what} is 64 lower-case hexadecimal characters"),
        )
    })
}

pub(crate) fn storage(e: crate::storage::StorageError) -> ApiError {
    tracing::error!(error = %e, "storage read failed");
    ApiError::internal("storage read failed")
}

async fn transaction(
    State(shared): State<Shared>,
    caller: Result<Caller, ApiError>,
    hash: Result<Path<String>, PathRejection>,
) -> Result<Json<TxStatus>, ApiError> {
    let Path(hash) = hash.map_err(bad_path)?;
    let hash = parse_hash(&hash)?;
    // The request's form first (it says nothing about what exists), then who asks.
    let caller = caller?;
    let not_found = || {
        ApiError::not_found(
            "tx_not_found",
            format!("transaction {hash} is neither pending on this node nor committed"),
        )
    };
    let Some(loc) = shared.store().tx_location(&hash).map_err(storage)? else {
        if shared.is_pending(&hash) {
            return Ok(Json(TxStatus::pending(hash)));
        }
        return Err(not_found());
    };
    let tx = crate::runtime::committed_transaction(shared.store(), loc.height, loc.index, &hash)
        .ok_or_else(|| ApiError::internal("the committed transaction's batch is missing"))?;
    let tx: tally_ledger::tx::Transaction =
        tally_ledger::codec::decode(&tx.body, tally_ledger::tx::MAX_TX_BYTES)
            .map_err(|_| ApiError::internal("a committed transaction does not decode"))?;
    let access = transaction_access(&*shared, &caller, &tx)?;
    if access == Access::None {
        return Err(not_found());
    }
    let block = shared
        .store()
        .block(loc.height)
        .map_err(storage)?
        .ok_or_else(|| ApiError::internal("indexed block is missing"))?;
    let receipts: Vec<Receipt> = shared
        .store()
        .receipts(loc.height)
        .map_err(storage)?
        .ok_or_else(|| ApiError::internal("indexed receipts are missing"))?;
    let index = loc.index as usize;
    let receipt = receipts
        .get(index)
        .cloned()
        .ok_or_else(|| ApiError::internal("receipt index out of range"))?;
    if access == Access::Holder {
        // The tipping-off policy: the holder learns that a compliance rule refused, not which
        // one, and no flag; the proof, which carries the whole receipt, is for the member and
        // regulators in scope. A party that did not sign (the payee, the account a provider
        // operated on) learns that the transaction was refused, not why: the reason can name
        // the sender's balance or a listing.
        let mut receipt = holder_receipt(receipt);
        if tx.sender != caller.key && receipt.outcome == tally_ledger::Outcome::Rejected {
            receipt.reason = "refused; its sender can tell you more".into();
        }
        return Ok(Json(TxStatus::committed(
            hash, loc.height, loc.index, receipt, None,
        )));
    }
    let leaves: Vec<Hash> = receipts.iter().map(Receipt::leaf).collect();
    let path = merkle::prove(&leaves, index)
        .ok_or_else(|| ApiError::internal("no Merkle path for the receipt"))?;
    let proof = block.certificate.clone().map(|certificate| InclusionProof {
        receipt: receipt.clone(),
        path: path.clone(),
        header: block.header.clone(),
        certificate,
    });
    Ok(Json(TxStatus::committed(
        hash, loc.height, loc.index, receipt, proof,
    )))
}

/// The code a holder sees for any compliance refusal.
pub const COMPLIANCE_REFUSED: &str = "compliance_refused";

/// A receipt as its holder sees it: compliance refusals reduced to [`COMPLIANCE_REFUSED`],
/// flags removed.
fn holder_receipt(mut receipt: Receipt) -> Receipt {
    if receipt.code == tally_ledger::RejectCode::ComplianceRejected.as_str() {
        receipt.code = COMPLIANCE_REFUSED.into();
        receipt.reason =
            "refused by the network's compliance rules; your member can tell you more".into();
    }
    receipt.flags.clear();
    receipt
}

/// The accounts a transaction touches and the identities it names.
fn parties(tx: &tally_ledger::tx::Transaction) -> (Vec<AccountId>, Vec<String>) {
    use tally_ledger::compliance::{FreezeOp, IdentityOp};
    use tally_ledger::tx::Payload;
    let mut accounts = vec![tx.sender];
    let mut identities = Vec::new();
    match &tx.payload {
        Payload::Transfer(t) => accounts.push(t.to),
        Payload::Issue { to, .. } => accounts.push(*to),
        Payload::Identity(op) => match op {
            IdentityOp::Register { id, .. }
            | IdentityOp::Update { id, .. }
            | IdentityOp::Revoke { id } => identities.push(id.clone()),
            IdentityOp::Bind { id, account } => {
                identities.push(id.clone());
                accounts.push(*account);
            }
            IdentityOp::Unbind { account } => accounts.push(*account),
        },
        Payload::Freeze(op) => match op {
            FreezeOp::Freeze { id, .. }
            | FreezeOp::Unfreeze { id }
            | FreezeOp::FreezeAsset { id, .. }
            | FreezeOp::UnfreezeAsset { id, .. } => identities.push(id.clone()),
        },
        Payload::Redeem { .. } | Payload::Propose { .. } | Payload::Vote { .. } => {}
    }
    (accounts, identities)
}

/// What `caller` sees of `tx`: judged on the identities its accounts are bound to now and the
/// identities it names.
fn transaction_access(
    shared: &dyn Node,
    caller: &Caller,
    tx: &tally_ledger::tx::Transaction,
) -> Result<Access, ApiError> {
    let governance = matches!(
        tx.payload,
        tally_ledger::tx::Payload::Propose { .. } | tally_ledger::tx::Payload::Vote { .. }
    );
    if governance && caller.institution() {
        // Governance is the consortium's business: its institutions read its transactions.
        return Ok(Access::Full);
    }
    let (accounts, mut ids) = parties(tx);
    for a in &accounts {
        if let Some(state) = state_get::<AccountState>(shared, &account_key(a))? {
            ids.extend(state.identity);
        }
    }
    let mut identities = Vec::new();
    for id in ids {
        if let Some(i) = state_get::<tally_ledger::compliance::Identity>(
            shared,
            &tally_ledger::compliance::registry::identity_key(&id),
        )? {
            identities.push(i);
        }
    }
    Ok(caller.access(&accounts, &identities))
}

async fn account(
    State(shared): State<Shared>,
    caller: Result<Caller, ApiError>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<AccountView>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let id = parse_account(&id, "bad_account", "an account id")?;
    let caller = caller?;
    let not_found = || ApiError::not_found("account_not_found", format!("no account {id}"));
    let state: AccountState = state_get(&*shared, &account_key(&id))?.ok_or_else(not_found)?;
    let identity = match &state.identity {
        Some(i) => state_get::<tally_ledger::compliance::Identity>(
            &*shared,
            &tally_ledger::compliance::registry::identity_key(i),
        )?,
        None => None,
    };
    if caller.access(&[id], identity.iter()) == Access::None {
        return Err(not_found());
    }
    Ok(Json(AccountView::new(id, state, shared.height())))
}

/// A committed state value, decoded.
pub(crate) fn state_get<T: serde::de::DeserializeOwned>(
    shared: &dyn Node,
    key: &[u8],
) -> Result<Option<T>, ApiError> {
    let Some(raw) = shared.store().state_value(key).map_err(storage)? else {
        return Ok(None);
    };
    tally_ledger::codec::decode(&raw, 1 << 24)
        .map(Some)
        .map_err(|_| ApiError::internal("stored state value does not decode"))
}

async fn identity(
    State(shared): State<Shared>,
    caller: Result<Caller, ApiError>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<IdentityView>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    use tally_ledger::compliance::registry::{
        check_identity_id, identity_key, sanction_key, usage_key,
    };
    use tally_ledger::compliance::window::{DAY, HOUR, THIRTY_DAYS};
    check_identity_id(&id).map_err(|m| ApiError::bad_request("bad_identity", m))?;
    let caller = caller?;
    let height = shared.height();
    let not_found = || ApiError::not_found("identity_not_found", format!("no identity {id}"));
    let identity: tally_ledger::compliance::Identity =
        state_get(&*shared, &identity_key(&id))?.ok_or_else(not_found)?;
    if caller.identity_access(&identity) == Access::None {
        return Err(not_found());
    }
    let mut usage: tally_ledger::compliance::Usage =
        state_get(&*shared, &usage_key(&id))?.unwrap_or_default();
    let now = shared
        .store()
        .block(height)
        .map_err(storage)?
        .map_or(0, |b| b.header.timestamp_ms);
    usage.hour.advance(HOUR, now);
    usage.day.advance(DAY, now);
    usage.thirty_days.advance(THIRTY_DAYS, now);
    usage.near_threshold.advance(DAY, now);
    Ok(Json(IdentityView {
        sanctioned_by: state_get(&*shared, &sanction_key(&id))?,
        identity,
        usage: UsageView {
            transfers_last_hour: usage.hour.count(),
            transfers_last_24h: usage.day.count(),
            amount_last_24h: usage.day.amount(),
            amount_last_30d: usage.thirty_days.amount(),
            near_threshold_last_24h: usage.near_threshold.count(),
        },
        height,
    }))
}

async fn role(
    State(shared): State<Shared>,
    key: Result<Path<String>, PathRejection>,
) -> Result<Json<tally_ledger::compliance::RoleEntry>, ApiError> {
    let Path(key) = key.map_err(bad_path)?;
    let key = parse_account(&key, "bad_key", "a key")?;
    let entry = state_get(
        &*shared,
        &tally_ledger::compliance::registry::role_key(&key),
    )?;
    entry
        .map(Json)
        .ok_or_else(|| ApiError::not_found("role_not_found", format!("{key} holds no role")))
}

async fn rules(State(shared): State<Shared>) -> Result<Json<RulesView>, ApiError> {
    use tally_ledger::compliance::governance::{MEMBERS_KEY, PARAMS_KEY, VALIDATORS_KEY};
    let height = shared.height();
    let rules = state_get(&*shared, tally_ledger::compliance::registry::RULES_KEY)?
        .ok_or_else(|| ApiError::internal("the rule set is missing"))?;
    let members: std::collections::BTreeSet<AccountId> =
        state_get(&*shared, MEMBERS_KEY)?.unwrap_or_default();
    Ok(Json(RulesView {
        rules,
        params: state_get(&*shared, PARAMS_KEY)?.unwrap_or_default(),
        members: members.into_iter().collect(),
        validators: state_get(&*shared, VALIDATORS_KEY)?,
        height,
    }))
}

/// What a rule-set change would change if applied now, field by field (the sanctions list is
/// kept as in force, as it would be).
fn rule_changes(
    current: &tally_ledger::compliance::RuleSet,
    proposed: &tally_ledger::compliance::RuleSet,
) -> std::collections::BTreeMap<String, RuleChange> {
    let mut effective = proposed.clone();
    effective.sanctioned_jurisdictions = current.sanctioned_jurisdictions.clone();
    effective.version = current.version;
    let (serde_json::Value::Object(from), serde_json::Value::Object(to)) = (
        serde_json::to_value(current).unwrap_or_default(),
        serde_json::to_value(&effective).unwrap_or_default(),
    ) else {
        return Default::default();
    };
    to.into_iter()
        .filter_map(|(field, to)| {
            let from = from.get(&field).cloned().unwrap_or_default();
            (from != to).then_some((field, RuleChange { from, to }))
        })
        .collect()
}

async fn proposal(
    State(shared): State<Shared>,
    caller: Result<Caller, ApiError>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ProposalView>, ApiError> {
    let Path(id) = id.map_err(bad_path)?;
    let id = parse_integer(&id).filter(|id| *id > 0).ok_or_else(|| {
        ApiError::bad_request(
            "bad_proposal",
            "a proposal id is a positive integer (decimal digits, no sign or leading zero)",
        )
    })?;
    use tally_ledger::compliance::governance::{proposal_key, Params, PARAMS_KEY};
    let p: Option<tally_ledger::compliance::Proposal> = state_get(&*shared, &proposal_key(id))?;
    let mut p =
        p.ok_or_else(|| ApiError::not_found("proposal_not_found", format!("no proposal {id}")))?;
    // An open proposal whose voting closed is shown as expired.
    let params: Params = state_get(&*shared, PARAMS_KEY)?.unwrap_or_default();
    p.status = p.status_at(shared.height(), &params);
    let changes = match &p.action {
        tally_ledger::compliance::GovAction::SetRules(proposed) => {
            let current: Option<tally_ledger::compliance::RuleSet> =
                state_get(&*shared, tally_ledger::compliance::registry::RULES_KEY)?;
            current.map(|current| rule_changes(&current, proposed))
        }
        _ => None,
    };
    // Which persons a sanctions list names is for the consortium's institutions (a signed
    // read by a key with a role): anyone else sees how many, not who (the tipping-off policy).
    let mut identities_withheld = None;
    if let tally_ledger::compliance::GovAction::UpdateSanctions(u) = &mut p.action {
        if !caller.is_ok_and(|c| c.institution()) {
            identities_withheld = Some(u.add_identities.len() + u.remove_identities.len());
            u.add_identities.clear();
            u.remove_identities.clear();
        }
    }
    Ok(Json(ProposalView {
        proposal: p,
        changes,
        identities_withheld,
    }))
}

#[derive(Deserialize)]
struct BlockQuery {
    #[serde(default)]
    receipts: bool,
}

async fn block(
    State(shared): State<Shared>,
    height: Result<Path<String>, PathRejection>,
    query: Result<Query<BlockQuery>, QueryRejection>,
) -> Result<Json<BlockView>, ApiError> {
    let Path(height) = height.map_err(bad_path)?;
    let Query(q) = query.map_err(bad_query)?;
    let height: Height = parse_integer(&height).ok_or_else(|| {
        ApiError::bad_request(
            "bad_height",
            "a height is a non-negative integer (decimal digits, no sign or leading zero)",
        )
    })?;
    let block = shared
        .store()
        .block(height)
        .map_err(storage)?
        .ok_or_else(|| {
            ApiError::not_found(
                "block_not_found",
                format!("no committed block at height {height}"),
            )
        })?;
    let receipts = if q.receipts {
        shared.store().receipts(height).map_err(storage)?
    } else {
        None
    };
    Ok(Json(BlockView::new(block, receipts)))
}

async fn status(State(shared): State<Shared>) -> Json<StatusView> {
    Json(StatusView::new(&*shared))
}

async fn health(State(shared): State<Shared>) -> Response {
    let peers = shared.connected_peers();
    let height = shared.height();
    // A node whose state diverged from the quorum's runs but must not be trusted or kept in a
    // load balancer: it fails its health check until it is resynced.
    if let Some(at) = shared.status().diverged_at {
        let body = serde_json::json!({
            "status": "diverged", "height": height, "peers": peers, "diverged_at": at,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let body = serde_json::json!({ "status": "ok", "height": height, "peers": peers });
    (StatusCode::OK, Json(body)).into_response()
}

/// Readiness, distinct from liveness (`/health`): 200 once this node reflects the network
/// (caught up to within `READY_LAG` certified blocks, connected to a peer, not diverged), so
/// load balancers and Kubernetes send it reads and submissions only then; 503 with the reason
/// while it starts, catches up or is cut off.
async fn ready(State(shared): State<Shared>) -> Response {
    let s = StatusView::new(&*shared);
    let reason = s.not_ready_reason();
    let body = serde_json::json!({
        "ready": reason.is_none(),
        "reason": reason,
        "height": s.height,
        "certified_height": s.certified_height,
        "sync_lag": s.sync_lag,
        "peers": s.peers,
    });
    let code = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(shared): State<Shared>) -> Response {
    // Gauges that are cheap to read at scrape time and need no bookkeeping in between.
    let m = shared.metrics();
    m.storage_size_bytes
        .set(shared.store().size_on_disk() as i64);
    if let Some(free) = shared.store().free_bytes() {
        m.storage_free_bytes.set(free as i64);
    }
    let status = shared.status();
    m.sync_lag_blocks
        .set(status.certified_height.saturating_sub(status.height) as i64);
    if let Ok(Some(rules)) = state_get::<tally_ledger::compliance::RuleSet>(
        &*shared,
        tally_ledger::compliance::registry::RULES_KEY,
    ) {
        m.compliance_rules_version.set(rules.version as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics().render(),
    )
        .into_response()
}
