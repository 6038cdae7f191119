//! Signed reads: who is asking, and what they may see.
//!
//! A read about a person or their money carries four headers: `Tally-Key` (the caller's
//! ed25519 public key, 64 hex characters), `Tally-Timestamp` (Unix time in milliseconds),
//! `Tally-Nonce` (16 to 64 characters of `[A-Za-z0-9_-]`, never reused within the window) and
//! `Tally-Signature` (128 hex characters): an ed25519 signature over [`request_message`], which
//! binds the chain, the method, the path, the query, a SHA-256 digest of the body, the
//! timestamp and the nonce. A request more than [`MAX_SKEW_MS`] away from the node's clock is
//! `stale_request`; a nonce seen within the window is `replayed`; a key that holds no role and
//! no account is `unknown_key`. Every refusal is 401 and names no object, so a caller without a
//! valid signature learns nothing about what exists.
//!
//! Who sees what (docs/privacy.md): the holder of an account (its key) sees the account and the
//! transactions that touch it, with compliance decisions reduced to `compliance_refused` (the
//! tipping-off policy); the KYC provider that registered an identity sees the identity, its
//! accounts and their transactions in full; a regulator sees in full what touches an identity
//! in one of its jurisdictions. Anything else is answered as if it did not exist (404).

use super::{state_get, ApiError, Shared};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tally_ledger::compliance::registry::{role_key, Identity, Role, RoleEntry};
use tally_ledger::primitives::{AccountId, Jurisdiction};

/// The caller's public key.
pub const KEY_HEADER: &str = "tally-key";
/// Unix time of the request, in milliseconds.
pub const TIMESTAMP_HEADER: &str = "tally-timestamp";
/// A value the caller never reuses within the window.
pub const NONCE_HEADER: &str = "tally-nonce";
/// The signature over [`request_message`].
pub const SIGNATURE_HEADER: &str = "tally-signature";

/// How far a request's timestamp may be from the node's clock, either way.
pub const MAX_SKEW_MS: u64 = 30_000;
/// Nonces remembered at once (each until its request would be stale anyway): an estimated
/// 120 MB at most (about 120 bytes an entry, not measured), and filling it takes 250 keys at
/// their limit.
const MAX_NONCES: usize = 1_000_000;
/// Nonces one key may have remembered at once: one key cannot crowd out the others.
const MAX_NONCES_PER_KEY: usize = 4_096;

/// Domain tag of the signed request.
const REQUEST_DOMAIN: &str = "tally-request/v1";

/// The bytes a caller signs: every part of the request that decides its answer.
pub fn request_message(
    chain_id: &str,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    timestamp_ms: u64,
    nonce: &str,
) -> Vec<u8> {
    let body_digest = hex::encode(Sha256::digest(body));
    format!(
        "{REQUEST_DOMAIN}\n{chain_id}\n{}\n{path}\n{query}\n{body_digest}\n{timestamp_ms}\n{nonce}",
        method.to_ascii_uppercase()
    )
    .into_bytes()
}

/// The four headers of a signed request, for clients (the CLI, the load generator, tests).
/// `path_and_query` is what follows the host (`/v1/accounts/ab..?x=1`).
pub fn sign_request(
    key: &SigningKey,
    chain_id: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> [(&'static str, String); 4] {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let timestamp_ms = now_ms();
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let message = request_message(chain_id, method, path, query, body, timestamp_ms, &nonce);
    let signature = key.sign(&message);
    [
        (KEY_HEADER, hex::encode(key.verifying_key().as_bytes())),
        (TIMESTAMP_HEADER, timestamp_ms.to_string()),
        (NONCE_HEADER, nonce),
        (SIGNATURE_HEADER, hex::encode(signature.to_bytes())),
    ]
}

/// A signed `GET` of `path` (with its query) on the API at `base`, as `key`.
pub fn signed_get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    key: &SigningKey,
    chain_id: &str,
) -> reqwest::RequestBuilder {
    let mut request = client.get(format!("{base}{path}"));
    for (name, value) in sign_request(key, chain_id, "GET", path, b"") {
        request = request.header(name, value);
    }
    request
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Nonces seen within the window, per key.
#[derive(Default)]
pub struct Nonces {
    seen: HashMap<(AccountId, String), u64>,
    per_key: HashMap<AccountId, usize>,
    /// When the table was last swept: at most once a second, so a key at its limit cannot
    /// make every request walk the table.
    pruned_at_ms: u64,
}

impl Nonces {
    /// Records `nonce` of `key`, valid until `expires_ms`; false if it was seen already.
    /// `Err` when the table is full of live nonces (of this key, or of everyone).
    fn record(
        &mut self,
        key: AccountId,
        nonce: &str,
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<bool, ApiError> {
        if self.seen.contains_key(&(key, nonce.to_owned())) {
            return Ok(false);
        }
        let mine = self.per_key.get(&key).copied().unwrap_or(0);
        if (self.seen.len() >= MAX_NONCES || mine >= MAX_NONCES_PER_KEY)
            && now_ms.saturating_sub(self.pruned_at_ms) >= 1_000
        {
            self.prune(now_ms);
        }
        let mine = self.per_key.get(&key).copied().unwrap_or(0);
        if mine >= MAX_NONCES_PER_KEY {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "more than {MAX_NONCES_PER_KEY} signed requests by this key within {} s; retry later",
                    2 * MAX_SKEW_MS / 1000
                ),
            ));
        }
        if self.seen.len() >= MAX_NONCES {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many signed requests in flight; retry later",
            ));
        }
        self.seen.insert((key, nonce.to_owned()), expires_ms);
        *self.per_key.entry(key).or_default() += 1;
        Ok(true)
    }

    fn prune(&mut self, now_ms: u64) {
        self.pruned_at_ms = now_ms;
        self.seen.retain(|_, expires| *expires >= now_ms);
        self.per_key.clear();
        for (key, _) in self.seen.keys() {
            *self.per_key.entry(*key).or_default() += 1;
        }
    }
}

/// The replay table the router shares between requests.
pub type SharedNonces = Arc<Mutex<Nonces>>;

/// An authenticated caller: its key and, if it holds one, its role entry.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key that signed.
    pub key: AccountId,
    /// Its entry in the role registry.
    pub role: Option<RoleEntry>,
}

/// How much of an object a caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing: the object is answered as not found.
    None,
    /// The holder's view: compliance decisions reduced to `compliance_refused`, no flags.
    Holder,
    /// Everything, compliance detail included.
    Full,
}

impl Caller {
    /// A regulator covering `jurisdiction`.
    fn supervises(&self, jurisdiction: &Jurisdiction) -> bool {
        self.role
            .as_ref()
            .is_some_and(|r| r.has(Role::Regulator) && r.jurisdictions.contains(jurisdiction))
    }

    /// Whether the caller is an institution of the consortium (holds a role in the registry).
    pub fn institution(&self) -> bool {
        self.role.as_ref().is_some_and(|r| !r.roles.is_empty())
    }

    /// What the caller sees of `identity`: in full if it registered it and is a KYC provider
    /// still, or supervises its jurisdiction.
    pub fn identity_access(&self, identity: &Identity) -> Access {
        let provider = identity.provider == self.key
            && self.role.as_ref().is_some_and(|r| r.has(Role::KycProvider));
        if provider || self.supervises(&identity.jurisdiction) {
            Access::Full
        } else {
            Access::None
        }
    }

    /// What the caller sees of something that touches `accounts` (bound to `identities`).
    pub fn access<'a>(
        &self,
        accounts: &[AccountId],
        identities: impl IntoIterator<Item = &'a Identity>,
    ) -> Access {
        let mut access = if accounts.contains(&self.key) {
            Access::Holder
        } else {
            Access::None
        };
        for identity in identities {
            access = access.max(self.identity_access(identity));
        }
        access
    }
}

fn unauthenticated(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

fn header<'a>(parts: &'a Parts, name: &str) -> Result<Option<&'a str>, ApiError> {
    match parts.headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| unauthenticated("bad_signature", format!("{name} is not ASCII"))),
    }
}

fn nonce_ok(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks the signed headers of a request without a body (the reads).
impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, shared: &Shared) -> Result<Caller, ApiError> {
        let key = header(parts, KEY_HEADER)?;
        let timestamp = header(parts, TIMESTAMP_HEADER)?;
        let nonce = header(parts, NONCE_HEADER)?;
        let signature = header(parts, SIGNATURE_HEADER)?;
        let (Some(key), Some(timestamp), Some(nonce), Some(signature)) =
            (key, timestamp, nonce, signature)
        else {
            return Err(unauthenticated(
                "unauthenticated",
                "this read needs a signed request: Tally-Key, Tally-Timestamp, Tally-Nonce and Tally-Signature (docs/api/README.md)",
            ));
        };
        let key_bytes: [u8; 32] = hex::decode(key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                unauthenticated("bad_signature", "Tally-Key is not 64 hex characters")
            })?;
        let verifying = VerifyingKey::from_bytes(&key_bytes)
            .map_err(|_| unauthenticated("bad_signature", "Tally-Key is not an ed25519 key"))?;
        let signature: [u8; 64] = hex::decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                unauthenticated("bad_signature", "Tally-Signature is not 128 hex characters")
            })?;
        let timestamp_ms: u64 = timestamp.parse().map_err(|_| {
            unauthenticated(
                "bad_signature",
                "Tally-Timestamp is not a Unix time in milliseconds",
            )
        })?;
        if !nonce_ok(nonce) {
            return Err(unauthenticated(
                "bad_signature",
                "Tally-Nonce is 16 to 64 characters of A-Z, a-z, 0-9, '-' and '_'",
            ));
        }
        let message = request_message(
            shared.chain_id(),
            parts.method.as_str(),
            parts.uri.path(),
            parts.uri.query().unwrap_or(""),
            b"",
            timestamp_ms,
            nonce,
        );
        let signature = Signature::from_bytes(&signature);
        if verifying.is_weak() || verifying.verify_strict(&message, &signature).is_err() {
            return Err(unauthenticated(
                "bad_signature",
                "the signature does not verify for this key over this request",
            ));
        }
        // Checked after the signature: only the key's holder can learn about the node's clock.
        let now = now_ms();
        if timestamp_ms.abs_diff(now) > MAX_SKEW_MS {
            return Err(unauthenticated(
                "stale_request",
                format!(
                    "the request's timestamp is {} ms from this node's clock; at most {MAX_SKEW_MS} ms is accepted",
                    timestamp_ms.abs_diff(now)
                ),
            ));
        }
        let key = AccountId(key_bytes);
        let role: Option<RoleEntry> = state_get(&**shared, &role_key(&key))?;
        if role.is_none()
            && shared
                .store()
                .state_value(&tally_ledger::account_key(&key))
                .map_err(super::storage)?
                .is_none()
        {
            return Err(unauthenticated(
                "unknown_key",
                "the key holds no role and no account on this network",
            ));
        }
        let nonces = parts
            .extensions
            .get::<SharedNonces>()
            .cloned()
            .ok_or_else(|| ApiError::internal("the replay table is missing"))?;
        let fresh = nonces.lock().unwrap_or_else(|e| e.into_inner()).record(
            key,
            nonce,
            timestamp_ms.saturating_add(MAX_SKEW_MS),
            now,
        )?;
        if !fresh {
            return Err(unauthenticated(
                "replayed",
                "this nonce was already used by this key; sign each request with a new one",
            ));
        }
        Ok(Caller { key, role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_counts_once_until_it_expires_and_one_key_cannot_fill_the_table() {
        let mut n = Nonces::default();
        let a = AccountId([1; 32]);
        let b = AccountId([2; 32]);
        assert!(n.record(a, "n1", 100, 0).unwrap());
        assert!(!n.record(a, "n1", 100, 50).unwrap());
        assert!(n.record(b, "n1", 100, 50).unwrap());
        for i in 0..MAX_NONCES_PER_KEY - 1 {
            assert!(n.record(a, &format!("x{i}"), 100, 50).unwrap());
        }
        let e = n.record(a, "one-more", 100, 50).unwrap_err();
        assert_eq!(e.code(), "too_many_requests");
        assert!(n.record(b, "still-fine", 100, 50).unwrap());
        // Once the window has passed, the key's nonces are forgotten.
        assert!(n.record(a, "later", 3_000, 2_000).unwrap());
    }

    #[test]
    fn providers_see_their_customers_only_while_in_office_and_regulators_their_jurisdictions() {
        use tally_ledger::compliance::rules::Tier;
        let j = |c: &str| Jurisdiction::new(c).unwrap();
        let provider = AccountId([1; 32]);
        let identity = Identity {
            id: "p".into(),
            provider,
            jurisdiction: j("DE"),
            tier: 1 as Tier,
            expires_ms: 0,
            commitment: tally_ledger::primitives::Hash([0; 32]),
            revoked: false,
            frozen: None,
        };
        let caller = |key: AccountId, roles: &[Role], js: &[&str]| Caller {
            key,
            role: Some(RoleEntry {
                name: "x".into(),
                key,
                roles: roles.iter().copied().collect(),
                jurisdictions: js.iter().map(|c| j(c)).collect(),
                max_tier: None,
            }),
        };
        let in_office = caller(provider, &[Role::KycProvider], &["DE"]);
        assert_eq!(in_office.identity_access(&identity), Access::Full);
        // The same key after governance took its role away: an account holder like any other.
        let former = caller(provider, &[], &[]);
        assert_eq!(former.identity_access(&identity), Access::None);
        let de = caller(AccountId([2; 32]), &[Role::Regulator], &["DE", "FR"]);
        let sg = caller(AccountId([3; 32]), &[Role::Regulator], &["SG"]);
        assert_eq!(de.identity_access(&identity), Access::Full);
        assert_eq!(sg.identity_access(&identity), Access::None);
        let holder = Caller {
            key: AccountId([4; 32]),
            role: None,
        };
        assert_eq!(
            holder.access(&[AccountId([4; 32])], [&identity]),
            Access::Holder
        );
        assert_eq!(sg.access(&[AccountId([4; 32])], [&identity]), Access::None);
        assert_eq!(de.access(&[AccountId([4; 32])], [&identity]), Access::Full);
    }

    #[test]
    fn the_message_binds_every_part_of_the_request() {
        let base = request_message("c", "get", "/v1/a", "x=1", b"", 5, "nonce-nonce-nonce");
        let variants = [
            request_message("d", "get", "/v1/a", "x=1", b"", 5, "nonce-nonce-nonce"),
            request_message("c", "post", "/v1/a", "x=1", b"", 5, "nonce-nonce-nonce"),
            request_message("c", "get", "/v1/b", "x=1", b"", 5, "nonce-nonce-nonce"),
            request_message("c", "get", "/v1/a", "x=2", b"", 5, "nonce-nonce-nonce"),
            request_message("c", "get", "/v1/a", "x=1", b"{}", 5, "nonce-nonce-nonce"),
            request_message("c", "get", "/v1/a", "x=1", b"", 6, "nonce-nonce-nonce"),
            request_message("c", "get", "/v1/a", "x=1", b"", 5, "nonce-nonce-nonceX"),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
    }
}
