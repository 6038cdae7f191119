//! The one canonical binary encoding: postcard over serde, for the wire, for storage and for
//! hashes. Equal values give equal bytes; a hash depends on the canonical bytes alone.

use crate::primitives::Hash;
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

/// Decoding untrusted bytes failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input is longer than the caller's limit.
    #[error("input of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The caller's limit.
        max: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// A valid value was followed by extra bytes.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

/// Canonical bytes of a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // postcard only fails on types serde cannot describe (maps with non-string keys are fine);
    // every type we encode is plain data, so this is infallible in practice.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// Decodes untrusted bytes: rejects input over `max_len`, malformed input and trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max_len: usize) -> Result<T, CodecError> {
    if bytes.len() > max_len {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: max_len,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// sha2-256 over a domain tag (length-prefixed) and the bytes, so that no two kinds of object
/// can share a hash.
pub fn hash_with_domain(domain: &[u8], bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update((domain.len() as u32).to_le_bytes());
    h.update(domain);
    h.update(bytes);
    Hash(h.finalize().into())
}

/// Hash of a value's canonical encoding under a domain tag.
pub fn hash_value<T: Serialize + ?Sized>(domain: &[u8], value: &T) -> Hash {
    hash_with_domain(domain, &encode(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let v: (u64, String) = (42, "hi".into());
        let b = encode(&v);
        assert_eq!(decode::<(u64, String)>(&b, 100).unwrap(), v);
        assert!(matches!(
            decode::<(u64, String)>(&b, 2),
            Err(CodecError::TooLarge { .. })
        ));
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(
            decode::<(u64, String)>(&longer, 100),
            Err(CodecError::TrailingBytes(1))
        );
        assert!(matches!(
            decode::<(u64, String)>(&[0xff], 100),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn domains_separate_hashes() {
        assert_ne!(hash_with_domain(b"a", b"bc"), hash_with_domain(b"ab", b"c"));
        assert_eq!(hash_with_domain(b"a", b"x"), hash_with_domain(b"a", b"x"));
    }
}
