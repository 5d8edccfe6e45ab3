//! Secrets at rest: every secret the store keeps (binding tokens, OAuth client secrets,
//! webhook secrets, project secrets, and any column that should be next) goes through
//! one [`SecretBox`] before it reaches the database.
//!
//! A sealed value is text, so it fits the `TEXT` column the plain value used:
//! `wharf-sealed:v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`, with
//! XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) and a random 24-byte nonce per
//! value. The key id says which key sealed it, so keys can rotate: a box holds the
//! current key (used to seal) and older keys (only to open), and
//! [`Store::reseal_all`](crate::Store::reseal_all) re-seals every stored secret with the
//! current key.
//!
//! To store a new kind of secret: `.bind(self.seal_secret(value.as_deref()))` on the
//! way in, `self.open_secret(row.get(i))?` on the way out
//! ([`Store::seal_secret`](crate::Store::seal_secret),
//! [`Store::open_secret`](crate::Store::open_secret)), and one line in
//! [`SEALED_COLUMNS`] so rotation re-seals it too.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use std::fmt;

const PREFIX: &str = "wharf-sealed:v1:";
const NONCE_LEN: usize = 24;

/// The columns that hold sealed values: (table, the text columns that name a row, the
/// secret columns). [`Store::reseal_all`](crate::Store::reseal_all) walks these.
pub const SEALED_COLUMNS: &[(&str, &[&str], &[&str])] = &[
    ("bindings", &["name"], &["client_secret", "token", "webhook_secret", "refresh_token"]),
    ("clusters", &["name"], &["kubeconfig"]),
    ("registries", &["name"], &["password"]),
    ("secrets", &["project", "name"], &["value"]),
];

/// Why a stored secret cannot be opened.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretError {
    /// The value was sealed with a key this server does not have (rotated away, or a
    /// different `secret_key`).
    #[error("a stored secret was sealed with key `{0}`, which this server does not have; configure that key")]
    UnknownKey(String),
    /// The text is not a sealed value or does not authenticate (damaged or edited).
    #[error("a stored secret is damaged (it does not decrypt)")]
    Damaged,
    /// A key given in the configuration is not 32 bytes of base64.
    #[error("a secret key must be 32 random bytes, base64 encoded (44 characters); {0}")]
    BadKey(String),
}

/// One 32-byte key with its id (the first 8 bytes of its SHA-256, hex).
#[derive(Clone)]
pub struct SecretKey {
    id: String,
    bytes: [u8; 32],
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}, ***)", self.id)
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> SecretKey {
        let digest = Sha256::digest(bytes);
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        SecretKey { id, bytes }
    }

    /// A fresh random key.
    pub fn generate() -> SecretKey {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the operating system's random source works");
        SecretKey::from_bytes(bytes)
    }

    /// Reads a key written as base64 (standard or URL-safe, padded or not).
    pub fn from_base64(text: &str) -> Result<SecretKey, SecretError> {
        let text = text.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|e| SecretError::BadKey(format!("not base64: {e}")))?;
        let bytes: [u8; 32] =
            decoded.try_into().map_err(|v: Vec<u8>| SecretError::BadKey(format!("it is {} bytes", v.len())))?;
        Ok(SecretKey::from_bytes(bytes))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.bytes)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new_from_slice(&self.bytes).expect("a 32-byte key")
    }
}

/// Seals and opens secrets: the current key and the older ones still readable.
#[derive(Clone, Debug)]
pub struct SecretBox {
    current: SecretKey,
    older: Vec<SecretKey>,
}

impl SecretBox {
    pub fn new(current: SecretKey, older: Vec<SecretKey>) -> SecretBox {
        let older = older.into_iter().filter(|k| k.id != current.id).collect();
        SecretBox { current, older }
    }

    /// A box with a random key that lives as long as the process (a store opened
    /// without configuration, as in tests and benchmarks). The server always gives the
    /// store its configured box.
    pub fn ephemeral() -> SecretBox {
        SecretBox::new(SecretKey::generate(), Vec::new())
    }

    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// Seals a secret with the current key.
    pub fn seal(&self, plain: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random source works");
        let sealed = self
            .current
            .cipher()
            .encrypt(&XNonce::from(nonce), plain.as_bytes())
            .expect("XChaCha20-Poly1305 seals any message that fits in memory");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", self.current.id, URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a sealed value. A value that is not sealed at all is a secret stored by a
    /// Wharf from before encryption: it is returned as it is (and
    /// [`Store::reseal_all`](crate::Store::reseal_all) seals it at the next start).
    pub fn open(&self, stored: &str) -> Result<String, SecretError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_owned()) };
        let (key_id, data) = rest.split_once(':').ok_or(SecretError::Damaged)?;
        let key = std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id == key_id)
            .ok_or_else(|| SecretError::UnknownKey(key_id.to_owned()))?;
        let data = URL_SAFE_NO_PAD.decode(data).map_err(|_| SecretError::Damaged)?;
        if data.len() < NONCE_LEN {
            return Err(SecretError::Damaged);
        }
        let (nonce, sealed) = data.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SecretError::Damaged)?;
        let plain = key.cipher().decrypt(&XNonce::from(nonce), sealed).map_err(|_| SecretError::Damaged)?;
        String::from_utf8(plain).map_err(|_| SecretError::Damaged)
    }

    /// Whether a stored value should be sealed again: plain, or sealed with an older key.
    pub fn needs_reseal(&self, stored: &str) -> bool {
        match stored.strip_prefix(PREFIX).and_then(|rest| rest.split_once(':')) {
            Some((key_id, _)) => key_id != self.current.id,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_and_do_not_show_the_secret() {
        let b = SecretBox::ephemeral();
        let sealed = b.seal("hunter2-very-secret");
        assert!(SecretBox::is_sealed(&sealed));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(b.open(&sealed).unwrap(), "hunter2-very-secret");
        // A fresh nonce each time.
        assert_ne!(b.seal("x"), b.seal("x"));
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_reseal_moves_them() {
        let old = SecretKey::generate();
        let sealed_old = SecretBox::new(old.clone(), vec![]).seal("s3cret");
        let new = SecretKey::generate();
        let rotated = SecretBox::new(new.clone(), vec![old.clone()]);
        assert_eq!(rotated.open(&sealed_old).unwrap(), "s3cret");
        assert!(rotated.needs_reseal(&sealed_old));
        let resealed = rotated.seal(&rotated.open(&sealed_old).unwrap());
        assert!(!rotated.needs_reseal(&resealed));
        // Without the old key the old value cannot be read, and the error names the key.
        let only_new = SecretBox::new(new, vec![]);
        assert_eq!(only_new.open(&sealed_old), Err(SecretError::UnknownKey(old.id().to_owned())));
        assert_eq!(only_new.open(&resealed).unwrap(), "s3cret");
    }

    #[test]
    fn tampering_is_detected_and_plain_legacy_values_pass() {
        let b = SecretBox::ephemeral();
        let mut sealed = b.seal("value");
        let last = sealed.pop().unwrap();
        sealed.push(if last == 'A' { 'B' } else { 'A' });
        assert_eq!(b.open(&sealed), Err(SecretError::Damaged));
        assert_eq!(b.open("legacy-plain").unwrap(), "legacy-plain");
        assert!(b.needs_reseal("legacy-plain"));
    }

    #[test]
    fn keys_read_from_base64_and_refuse_wrong_lengths() {
        let k = SecretKey::generate();
        assert_eq!(SecretKey::from_base64(&k.to_base64()).unwrap().id(), k.id());
        assert!(matches!(SecretKey::from_base64("c2hvcnQ="), Err(SecretError::BadKey(_))));
        assert!(format!("{k:?}").contains("***"));
    }
}
