//! The small value types every part of the ledger speaks in.
//!
//! They are plain data with a canonical serde encoding (see `codec`), so two validators that hold
//! equal values produce equal bytes and equal hashes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A sha2-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero digest, used as the parent of the first block.
    pub const ZERO: Hash = Hash([0; 32]);

    /// Lower-case hex, as used in the API and in logs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Hash> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Hash(out))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..12])
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An account: the 32-byte ed25519 public key that signs for it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(pub [u8; 32]);

impl AccountId {
    /// Lower-case hex of the public key.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<AccountId> {
        Hash::from_hex(s).map(|h| AccountId(h.0))
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "acct:{}", &self.to_hex()[..12])
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An asset code such as `USD` or `EURC`: 1 to 12 upper-case ASCII letters or digits. A code of
/// another shape does not decode, in JSON or in the binary encoding.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct AssetCode(String);

impl<'de> Deserialize<'de> for AssetCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        if AssetCode::is_valid(&code) {
            return Ok(AssetCode(code));
        }
        Err(serde::de::Error::custom(format!(
            "asset code {code:?}: expected 1 to 12 upper-case letters or digits"
        )))
    }
}

impl AssetCode {
    /// Longest accepted code.
    pub const MAX_LEN: usize = 12;

    /// Checks the shape of a code; `None` if it is empty, too long or not `[A-Z0-9]`.
    pub fn new(code: &str) -> Option<AssetCode> {
        Self::is_valid(code).then(|| AssetCode(code.to_owned()))
    }

    fn is_valid(code: &str) -> bool {
        !code.is_empty()
            && code.len() <= Self::MAX_LEN
            && code
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AssetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for AssetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An ISO 3166-1 alpha-2 jurisdiction code, e.g. `DE`, `SG`: the text `"DE"` in human-readable
/// formats (JSON, TOML), in and out; two bytes in the canonical binary encoding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Jurisdiction([u8; 2]);

impl Serialize for Jurisdiction {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(self.as_str())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Jurisdiction {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let invalid = |code: &str| {
            serde::de::Error::custom(format!(
                "jurisdiction {code:?}: expected an ISO 3166-1 alpha-2 code (two upper-case letters)"
            ))
        };
        if d.is_human_readable() {
            let code = String::deserialize(d)?;
            return Jurisdiction::new(&code).ok_or_else(|| invalid(&code));
        }
        // Decoded with every identity during execution: checked in place, no allocation.
        let b = <[u8; 2]>::deserialize(d)?;
        if b.iter().all(u8::is_ascii_uppercase) {
            Ok(Jurisdiction(b))
        } else {
            Err(invalid(&String::from_utf8_lossy(&b)))
        }
    }
}

impl Jurisdiction {
    /// Two upper-case ASCII letters, or `None`.
    pub fn new(code: &str) -> Option<Jurisdiction> {
        let b = code.as_bytes();
        (b.len() == 2 && b.iter().all(u8::is_ascii_uppercase)).then(|| Jurisdiction([b[0], b[1]]))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Constructed only from two ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Debug for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in an asset's minor units (e.g. millionths of a dollar for a 6-decimal asset).
/// Arithmetic on amounts is always checked; overflow rejects the transaction.
pub type Amount = u64;

/// A block height; the genesis state is height 0 and the first block is height 1.
pub type Height = u64;

/// Milliseconds since the Unix epoch, as agreed by consensus for a block. Never a local clock
/// reading inside execution.
pub type TimestampMs = u64;

/// Identifier of a KYC'd identity, chosen by the KYC provider that registered it.
pub type IdentityId = String;

/// Longest identity id.
pub const MAX_IDENTITY_ID: usize = 64;

/// Checks the shape of an identity id: 1 to 64 of `A-Z a-z 0-9 - _ . :`.
pub fn check_identity_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= MAX_IDENTITY_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "identity id must be 1 to {MAX_IDENTITY_ID} characters of A-Z a-z 0-9 - _ . :"
        ))
    }
}

/// 32-byte values are hex strings in human-readable formats (JSON, TOML) and raw bytes in the
/// canonical binary encoding.
macro_rules! bytes32_serde {
    ($t:ident) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&hex::encode(self.0))
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    let mut out = [0u8; 32];
                    hex::decode_to_slice(&s, &mut out).map_err(|_| {
                        serde::de::Error::custom(concat!(
                            stringify!($t),
                            ": expected 64 hex characters"
                        ))
                    })?;
                    Ok($t(out))
                } else {
                    <[u8; 32]>::deserialize(d).map($t)
                }
            }
        }
    };
}

bytes32_serde!(Hash);
bytes32_serde!(AccountId);

/// `#[serde(with = "signature_text")]`: an ed25519 signature is 128 lower-case hex characters in
/// human-readable formats (the API, proof files) and its own 64 bytes in the binary encoding,
/// which is unchanged.
pub mod signature_text {
    use ed25519_dalek::Signature;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serialises one signature.
    pub fn serialize<S: Serializer>(sig: &Signature, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(sig.to_bytes()))
        } else {
            sig.serialize(s)
        }
    }

    /// Deserialises one signature.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        if !d.is_human_readable() {
            return Signature::deserialize(d);
        }
        let text = String::deserialize(d)?;
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(&text, &mut bytes).map_err(|_| {
            serde::de::Error::custom("signature: expected 128 hexadecimal characters")
        })?;
        Ok(Signature::from_bytes(&bytes))
    }

    /// The same for a list of (signer, signature) pairs.
    pub mod pairs {
        use crate::primitives::AccountId;
        use ed25519_dalek::Signature;
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        #[derive(Serialize, Deserialize)]
        struct Pair(AccountId, #[serde(with = "super")] Signature);

        /// Serialises the list.
        pub fn serialize<S: Serializer>(
            pairs: &[(AccountId, Signature)],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            if !s.is_human_readable() {
                return pairs.serialize(s);
            }
            s.collect_seq(pairs.iter().map(|(who, sig)| Pair(*who, *sig)))
        }

        /// Deserialises the list.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<(AccountId, Signature)>, D::Error> {
            if !d.is_human_readable() {
                return Vec::<(AccountId, Signature)>::deserialize(d);
            }
            Ok(Vec::<Pair>::deserialize(d)?
                .into_iter()
                .map(|Pair(who, sig)| (who, sig))
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_checked() {
        assert!(AssetCode::new("USD").is_some());
        assert!(AssetCode::new("usd").is_none());
        assert!(AssetCode::new("").is_none());
        assert!(AssetCode::new("ABCDEFGHIJKLM").is_none());
        assert_eq!(
            Jurisdiction::new("SG").map(|j| j.to_string()),
            Some("SG".into())
        );
        assert!(Jurisdiction::new("S1").is_none());
        assert!(Jurisdiction::new("SGP").is_none());
    }

    #[test]
    fn an_asset_code_of_another_shape_does_not_decode() {
        assert_eq!(
            serde_json::from_str::<AssetCode>("\"USD\"").unwrap(),
            AssetCode::new("USD").unwrap()
        );
        for bad in ["\"usd\"", "\"\"", "\"ABCDEFGHIJKLM\"", "\"US D\""] {
            assert!(serde_json::from_str::<AssetCode>(bad).is_err(), "{bad}");
        }
        let bin = crate::codec::encode(&"usd".to_owned());
        assert!(crate::codec::decode::<AssetCode>(&bin, 64).is_err());
        let good = crate::codec::encode(&AssetCode::new("EURC").unwrap());
        assert_eq!(
            good,
            crate::codec::encode(&"EURC".to_owned()),
            "encoding unchanged"
        );
    }

    #[test]
    fn jurisdictions_are_text_in_json_and_two_bytes_in_binary() {
        let de = Jurisdiction::new("DE").unwrap();
        assert_eq!(serde_json::to_string(&de).unwrap(), "\"DE\"");
        assert_eq!(serde_json::from_str::<Jurisdiction>("\"DE\"").unwrap(), de);
        assert!(serde_json::from_str::<Jurisdiction>("\"de\"").is_err());
        assert!(serde_json::from_str::<Jurisdiction>("[68, 69]").is_err());
        assert_eq!(crate::codec::encode(&de), b"DE".to_vec());
        assert_eq!(crate::codec::decode::<Jurisdiction>(b"DE", 2).unwrap(), de);
        assert!(crate::codec::decode::<Jurisdiction>(b"d1", 2).is_err());
    }

    #[test]
    fn signatures_are_hex_in_json_and_their_64_bytes_in_binary() {
        use crate::block::CommitCertificate;
        let sig = ed25519_dalek::Signature::from_bytes(&[9; 64]);
        let cert = CommitCertificate {
            header_hash: Hash([1; 32]),
            signatures: vec![(AccountId([2; 32]), sig)],
        };
        let json = serde_json::to_value(&cert).unwrap();
        assert_eq!(
            json["signatures"],
            serde_json::json!([["02".repeat(32), "09".repeat(64)]])
        );
        let back: CommitCertificate = serde_json::from_value(json).unwrap();
        assert_eq!(back, cert);
        // The binary encoding is what it always was: 32 + 1 + 32 + 64 bytes, no length prefix
        // on the signature, so hashes and stored blocks do not change.
        let bin = crate::codec::encode(&cert);
        assert_eq!(bin.len(), 32 + 1 + 32 + 64);
        assert_eq!(&bin[65..], &[9; 64][..]);
        assert_eq!(
            crate::codec::decode::<CommitCertificate>(&bin, 1 << 10).unwrap(),
            cert
        );
        let short = serde_json::json!({"header_hash": "01".repeat(32), "signatures": [["02".repeat(32), "09"]]});
        assert!(serde_json::from_value::<CommitCertificate>(short).is_err());
    }

    #[test]
    fn hashes_are_hex_in_json_and_bytes_in_binary() {
        let h = Hash([7; 32]);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{}\"", "07".repeat(32)));
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), h);
        assert!(serde_json::from_str::<Hash>("\"zz\"").is_err());
        let bin = postcard::to_allocvec(&h).unwrap();
        assert_eq!(bin.len(), 32);
        assert_eq!(postcard::from_bytes::<Hash>(&bin).unwrap(), h);
    }
}
