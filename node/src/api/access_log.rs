//! The access log: every signed read this node answered or refused, who asked, what, when and
//! with what result, appended to a hash chain in the node's store.
//!
//! Entry `n` carries the chain hash of entry `n - 1` (`prev`); its own chain hash is
//! `sha256("tally/access-log/v1" || prev || sha256(postcard(entry)))`. An entry's content
//! digest stands in for it where the reader may not see it (another regulator's query), so the
//! chain verifies end to end (`tally audit verify-access-log`) while each regulator reads only
//! its own queries; a key with the `oversight` role reads them all. Removing, reordering or
//! changing an entry breaks every chain hash after it.

use super::auth::{Caller, KEY_HEADER};
use super::{storage, ApiError, Shared};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::sync::{Arc, Mutex};
use tally_ledger::codec;
use tally_ledger::compliance::Role;
use tally_ledger::primitives::{AccountId, Hash};

/// Domain tag of the chain hash.
const CHAIN_DOMAIN: &[u8] = b"tally/access-log/v1";
/// Most entries one read of the log returns.
pub const MAX_PAGE: usize = 1_000;
/// The routes whose requests are logged: the signed reads.
pub const LOGGED_ROUTES: &[&str] = &[
    "/v1/transactions/{hash}",
    "/v1/accounts/{id}",
    "/v1/identities/{id}",
    "/v1/audit/access-log",
];

/// One request, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// Its place in the log, from 1.
    pub seq: u64,
    /// When the node answered, Unix milliseconds (the node's clock).
    pub at_ms: u64,
    /// The key the request named (`Tally-Key`), if it named a well-formed one.
    pub key: Option<AccountId>,
    /// Method and path with query, as received.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// The HTTP status of the answer: 200 answered, 401 refused unauthenticated, 404 nothing
    /// the caller may see, ...
    pub status: u16,
    /// The chain hash of the entry before (zero for the first).
    pub prev: Hash,
}

impl AccessEntry {
    /// The digest of the entry's content.
    pub fn digest(&self) -> Hash {
        Hash(Sha256::digest(codec::encode(self)).into())
    }
}

/// The chain hash after an entry whose content digest is `digest`.
pub fn chain(prev: &Hash, digest: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(CHAIN_DOMAIN);
    h.update(prev.0);
    h.update(digest.0);
    Hash(h.finalize().into())
}

/// An entry as stored: the entry and its chain hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    entry: AccessEntry,
    hash: Hash,
}

/// One entry as a reader sees it: in full, or (another reader's query) its digest only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Its place in the log.
    pub seq: u64,
    /// The chain hash of the entry before.
    pub prev: Hash,
    /// The content digest of the entry.
    pub digest: Hash,
    /// The chain hash after it.
    pub hash: Hash,
    /// The entry, if the reader may see it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entry: Option<AccessEntry>,
}

/// A page of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogPage {
    /// The node that keeps the log (its validator key).
    pub node: AccountId,
    /// The entries after the requested sequence number, in order.
    pub lines: Vec<LogLine>,
    /// The log's last sequence number and chain hash when the page was read.
    pub head_seq: u64,
    /// The chain hash of the last entry.
    pub head: Hash,
}

/// The log's head, shared by the requests that append to it.
pub struct AccessLog {
    head: Mutex<(u64, Hash)>,
}

/// The access log the router shares.
pub type SharedLog = Arc<AccessLog>;

impl AccessLog {
    /// Opens the log at its last entry in `store`.
    pub fn open(store: &crate::storage::Store) -> Result<AccessLog, crate::storage::StorageError> {
        let head = match store.last_access_entry()? {
            Some((seq, bytes)) => {
                let s: Stored = codec::decode(&bytes, 1 << 20).map_err(|source| {
                    crate::storage::StorageError::Corrupt {
                        what: format!("access log entry {seq}"),
                        source,
                    }
                })?;
                (seq, s.hash)
            }
            None => (0, Hash::ZERO),
        };
        Ok(AccessLog {
            head: Mutex::new(head),
        })
    }

    /// Appends one request.
    fn append(
        &self,
        store: &crate::storage::Store,
        key: Option<AccountId>,
        method: String,
        target: String,
        status: u16,
    ) -> Result<(), crate::storage::StorageError> {
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        let entry = AccessEntry {
            seq: head.0.saturating_add(1),
            at_ms: super::auth::now_ms(),
            key,
            method,
            target,
            status,
            prev: head.1,
        };
        let hash = chain(&entry.prev, &entry.digest());
        let seq = entry.seq;
        store.put_access_entry(seq, &codec::encode(&Stored { entry, hash }))?;
        *head = (seq, hash);
        Ok(())
    }

    fn head(&self) -> (u64, Hash) {
        *self.head.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Middleware: logs every request to a signed-read route that named a key (a request without
/// one says nothing about anyone and is refused before any lookup).
pub async fn record(State(shared): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let logged = route.is_some_and(|r| LOGGED_ROUTES.contains(&r.as_str()));
    let named = req.headers().contains_key(KEY_HEADER);
    if !logged || !named {
        return next.run(req).await;
    }
    let key = req
        .headers()
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| hex::decode(v).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(AccountId);
    let method = req.method().as_str().to_owned();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let log = req.extensions().get::<SharedLog>().cloned();
    let response = next.run(req).await;
    if let Some(log) = log {
        let status = response.status().as_u16();
        if let Err(e) = log.append(shared.store(), key, method, target, status) {
            tracing::error!(error = %e, "the access log could not be written");
        }
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// `GET /v1/audit/access-log?after=N&limit=M`: a regulator reads its own queries in full and the
/// rest as digests; an oversight key reads everything.
pub(super) async fn read(
    State(shared): State<Shared>,
    caller: Result<Caller, ApiError>,
    query: Result<axum::extract::Query<LogQuery>, axum::extract::rejection::QueryRejection>,
    log: axum::Extension<SharedLog>,
) -> Result<axum::Json<LogPage>, ApiError> {
    let axum::extract::Query(q) = query.map_err(super::bad_query)?;
    let caller = caller?;
    let role = |r: Role| caller.role.as_ref().is_some_and(|e| e.has(r));
    let everything = role(Role::Oversight);
    if !everything && !role(Role::Regulator) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "the access log is read by regulators (their own queries) and oversight keys",
        ));
    }
    let (head_seq, head) = log.head();
    let limit = q.limit.clamp(1, MAX_PAGE);
    let raw = shared
        .store()
        .access_entries(q.after, limit)
        .map_err(storage)?;
    let mut lines = Vec::with_capacity(raw.len());
    for bytes in raw {
        let s: Stored = codec::decode(&bytes, 1 << 20)
            .map_err(|_| ApiError::internal("an access log entry does not decode"))?;
        let visible = everything || s.entry.key == Some(caller.key);
        lines.push(LogLine {
            seq: s.entry.seq,
            prev: s.entry.prev,
            digest: s.entry.digest(),
            hash: s.hash,
            entry: visible.then_some(s.entry),
        });
    }
    Ok(axum::Json(LogPage {
        node: shared.account(),
        lines,
        head_seq,
        head,
    }))
}

/// Checks a sequence of log lines: each names the hash of the one before, each visible entry
/// matches its digest, each hash follows from `prev` and the digest. `start` is the chain hash
/// before the first line (zero for a log read from its beginning). Returns the last hash.
pub fn verify(start: Hash, lines: &[LogLine]) -> Result<Hash, String> {
    let mut prev = start;
    for line in lines {
        if line.prev != prev {
            return Err(format!(
                "entry {}: names {} as the entry before, the chain has {prev}",
                line.seq, line.prev
            ));
        }
        if let Some(e) = &line.entry {
            if e.seq != line.seq || e.prev != line.prev || e.digest() != line.digest {
                return Err(format!(
                    "entry {}: the entry does not match its digest",
                    line.seq
                ));
            }
        }
        let hash = chain(&line.prev, &line.digest);
        if hash != line.hash {
            return Err(format!("entry {}: chain hash does not follow", line.seq));
        }
        prev = hash;
    }
    Ok(prev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, prev: Hash, target: &str) -> LogLine {
        let entry = AccessEntry {
            seq,
            at_ms: 1,
            key: Some(AccountId([1; 32])),
            method: "GET".into(),
            target: target.into(),
            status: 200,
            prev,
        };
        let digest = entry.digest();
        LogLine {
            seq,
            prev,
            digest,
            hash: chain(&prev, &digest),
            entry: Some(entry),
        }
    }

    #[test]
    fn a_changed_dropped_or_reordered_entry_breaks_the_chain() {
        let a = line(1, Hash::ZERO, "/v1/accounts/a");
        let b = line(2, a.hash, "/v1/accounts/b");
        let c = line(3, b.hash, "/v1/accounts/c");
        let head = verify(Hash::ZERO, &[a.clone(), b.clone(), c.clone()]).unwrap();
        assert_eq!(head, c.hash);
        // Another reader's entry, as a digest: still verifies.
        let mut hidden = b.clone();
        hidden.entry = None;
        assert_eq!(
            verify(Hash::ZERO, &[a.clone(), hidden, c.clone()]).unwrap(),
            head
        );
        // Dropped.
        assert!(verify(Hash::ZERO, &[a.clone(), c.clone()]).is_err());
        // Reordered.
        assert!(verify(Hash::ZERO, &[b.clone(), a.clone(), c.clone()]).is_err());
        // Changed: the target rewritten, the digest kept.
        let mut forged = b.clone();
        if let Some(e) = forged.entry.as_mut() {
            e.target = "/v1/accounts/z".into();
        }
        let err = verify(Hash::ZERO, &[a, forged, c]).unwrap_err();
        assert!(err.contains("entry 2"), "{err}");
    }
}
