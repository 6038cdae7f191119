//! Key files. One ed25519 key per validator is both its consensus key and its libp2p identity;
//! account keys use the same format.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tally_ledger::primitives::AccountId;

/// A key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a key file.
    #[error("key file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// On-disk form: hex public key (for people) and hex secret key.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    public_key: String,
    secret_key: String,
}

/// A fresh random key from the operating system's generator.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// The account id (public key) of a signing key.
pub fn account_id(key: &SigningKey) -> AccountId {
    AccountId(key.verifying_key().to_bytes())
}

/// Writes a key file readable by its owner only (mode 0600). Refuses to overwrite.
pub fn write_key_file(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let body = serde_json::to_string_pretty(&KeyFile {
        public_key: hex::encode(key.verifying_key().to_bytes()),
        secret_key: hex::encode(key.to_bytes()),
    })
    .map_err(|e| KeyError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(body.as_bytes()).map_err(io)?;
    file.write_all(b"\n").map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads a key file and checks that its public key matches its secret key.
pub fn read_key_file(path: &Path) -> Result<SigningKey, KeyError> {
    let invalid = |reason: &str| KeyError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let file: KeyFile = serde_json::from_str(&text).map_err(|e| invalid(&e.to_string()))?;
    let mut secret = [0u8; 32];
    hex::decode_to_slice(file.secret_key.trim(), &mut secret)
        .map_err(|_| invalid("secret_key must be 64 hex characters"))?;
    let key = SigningKey::from_bytes(&secret);
    if hex::encode(key.verifying_key().to_bytes()) != file.public_key.trim().to_lowercase() {
        return Err(invalid("public_key does not match secret_key"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        let key = generate();
        write_key_file(&path, &key).unwrap();
        assert_eq!(read_key_file(&path).unwrap().to_bytes(), key.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(write_key_file(&path, &key).is_err(), "must not overwrite");
        std::fs::write(dir.path().join("bad.json"), "{}").unwrap();
        assert!(read_key_file(&dir.path().join("bad.json")).is_err());
    }
}
