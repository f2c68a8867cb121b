//! Patient identifiers become keyed HMAC-SHA256 pseudonyms before anything is stored or
//! indexed; the raw identifier never reaches the database or the logs.

use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a pseudonym key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create the pseudonym key {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the pseudonym key {path} must hold at least 32 bytes, found {len}")]
    TooShort { path: String, len: usize },
    #[error("cannot generate a pseudonym key: {0}")]
    Random(String),
}

/// The keyed pseudonymiser.
#[derive(Clone)]
pub struct Pseudonymiser {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(<key>)")
    }
}

const MINIMUM_KEY_BYTES: usize = 32;

impl Pseudonymiser {
    /// A pseudonymiser with `key` (at least 32 bytes).
    pub fn new(key: &[u8]) -> Result<Self, KeyError> {
        if key.len() < MINIMUM_KEY_BYTES {
            return Err(KeyError::TooShort {
                path: "(key)".into(),
                len: key.len(),
            });
        }
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Pseudonymiser { mac })
    }

    /// Reads the key file, or creates it with a fresh random key readable only by its owner.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let io = |source| KeyError::Io {
            path: shown.clone(),
            source,
        };
        match std::fs::read(path) {
            Ok(key) if key.len() >= MINIMUM_KEY_BYTES => Pseudonymiser::new(&key),
            Ok(key) => Err(KeyError::TooShort {
                path: shown.clone(),
                len: key.len(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = vec![0u8; MINIMUM_KEY_BYTES];
                getrandom::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
                if let Some(dir) = path.parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options.open(path).map_err(io)?;
                file.write_all(&key).map_err(io)?;
                file.sync_all().map_err(io)?;
                Pseudonymiser::new(&key)
            }
            Err(e) => Err(io(e)),
        }
    }

    fn mac(&self, domain: &str, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(domain.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        lower_hex(&mac.finalize().into_bytes())
    }

    /// Pseudonym of a validated NHS number (digits only).
    pub fn nhs_number(&self, digits: &str) -> String {
        format!("nhs:{}", self.mac("nhs-number", digits))
    }

    /// Pseudonym of a local patient reference.
    pub fn local_reference(&self, reference: &str) -> String {
        format!("local:{}", self.mac("local-reference", reference))
    }

    /// Keyed hash of arbitrary bytes (used for request fingerprints).
    pub fn fingerprint(&self, bytes: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"request\0");
        mac.update(bytes);
        lower_hex(&mac.finalize().into_bytes())
    }
}

/// Lower-case hex, two digits per byte: a formatted write per byte had been about 1 % of the
/// server's CPU with the decision log on.
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    hex
}

/// Validates an NHS number: 10 digits (spaces ignored) whose modulus 11 check digit is right.
/// Returns the digits.
pub(crate) fn valid_nhs_number(raw: &str) -> Result<String, &'static str> {
    let digits: String = raw.chars().filter(|c| *c != ' ').collect();
    if digits.len() != 10 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("must be 10 digits");
    }
    let values: Vec<u32> = digits.chars().filter_map(|c| c.to_digit(10)).collect();
    // NHS Digital: weights 10..2 on the first nine digits; check = 11 - (sum mod 11), 11 -> 0, 10 is invalid.
    let sum: u32 = values
        .iter()
        .take(9)
        .zip((2..=10).rev())
        .map(|(d, w)| d * w)
        .sum();
    let check = match 11 - (sum % 11) {
        11 => 0,
        10 => return Err("is not a valid NHS number (check digit)"),
        c => c,
    };
    if values[9] != check {
        return Err("is not a valid NHS number (check digit)");
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_11_accepts_valid_and_refuses_invalid_nhs_numbers() {
        // 943 476 5919 is NHS Digital's published example of a valid number.
        assert_eq!(valid_nhs_number("943 476 5919"), Ok("9434765919".into()));
        assert!(valid_nhs_number("9434765918").is_err());
        assert!(valid_nhs_number("943476591").is_err());
        assert!(valid_nhs_number("94347659AB").is_err());
    }

    #[test]
    fn the_generated_key_is_owner_only_and_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("net-pathway-key-{}", std::process::id()));
        let path = dir.join("pseudonym.key");
        let _ = std::fs::remove_dir_all(&dir);
        let first = Pseudonymiser::load_or_create(&path).expect("create");
        let second = Pseudonymiser::load_or_create(&path).expect("reload");
        assert_eq!(
            first.nhs_number("9434765919"),
            second.nhs_number("9434765919")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("key file")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&path, b"short").expect("overwrite");
        assert!(matches!(
            Pseudonymiser::load_or_create(&path),
            Err(KeyError::TooShort { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pseudonyms_are_keyed_and_stable() {
        let a = Pseudonymiser::new(&[1; 32]).expect("key");
        let b = Pseudonymiser::new(&[2; 32]).expect("key");
        assert_eq!(a.nhs_number("9434765919"), a.nhs_number("9434765919"));
        assert_ne!(a.nhs_number("9434765919"), b.nhs_number("9434765919"));
        assert!(!a.nhs_number("9434765919").contains("9434765919"));
    }

    /// Pseudonyms already in a decision log must not change: HMAC-SHA256 in lower-case hex, as
    /// Python's hmac module computes it for the same key and message.
    #[test]
    fn pseudonyms_and_fingerprints_match_an_independent_hmac() {
        let p = Pseudonymiser::new(&[1; 32]).expect("key");
        assert_eq!(
            p.nhs_number("9434765919"),
            "nhs:fad33886b892ebdfb65df312dd0226e7cd64864ffe746b9b3a1cdbd3f7e02c30"
        );
        assert_eq!(
            p.fingerprint(b"abc"),
            "6a0e64aaf9e08541f08c5754c75ad212fb0a6f0708ea9e8c37adbc5fd0d811ba"
        );
    }
}
