//! Bearer tokens. Until users and scoped tokens arrive (the tenancy issue), there is
//! one admin token: `WHARF_ADMIN_TOKEN` (or the config's `admin_token`) when set,
//! otherwise one generated at first start and shown once. Only its SHA-256 is stored.

use sha2::{Digest, Sha256};
use wharf_store::{Store, StoreError};

const SETTING: &str = "admin_token_sha256";

#[derive(Clone, Debug)]
pub struct Auth {
    admin_hash: String,
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token: `wharf_` and 64 hex digits.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    format!("wharf_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Auth {
    /// Returns the verifier and, when one was just made up, the new token to show.
    pub async fn init(store: &Store, configured: Option<&str>) -> Result<(Auth, Option<String>), StoreError> {
        if let Some(token) = configured {
            let hash = sha256_hex(token.as_bytes());
            store.set_setting(SETTING, &hash).await?;
            return Ok((Auth { admin_hash: hash }, None));
        }
        if let Some(hash) = store.setting(SETTING).await? {
            return Ok((Auth { admin_hash: hash }, None));
        }
        let token = new_token();
        let hash = sha256_hex(token.as_bytes());
        store.set_setting(SETTING, &hash).await?;
        Ok((Auth { admin_hash: hash }, Some(token)))
    }

    /// Checks an `Authorization` header value (`Bearer <token>`).
    pub fn check(&self, header: Option<&str>) -> bool {
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let Some((scheme, token)) = header.and_then(|h| h.split_once(' ')) else { return false };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let hash = sha256_hex(token.trim().as_bytes());
        // Compare without an early exit, so timing says nothing about the hash.
        hash.len() == self.admin_hash.len()
            && hash.bytes().zip(self.admin_hash.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}
