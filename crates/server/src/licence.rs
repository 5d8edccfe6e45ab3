//! The pipeline quota (seed 002 §2.6): a trial install may hold at most
//! [`TRIAL_PIPELINES`] pipelines in total; a licence file raises the limit.
//!
//! A licence file is JSON:
//!
//! ```json
//! { "licensee": "ACME", "max_pipelines": 500, "expires": "2027-12-31", "signature": "<base64>" }
//! ```
//!
//! `signature` is the Ed25519 signature of [`Licence::message`] (`wharf-licence-v1`,
//! then licensee, max_pipelines and expires — empty when absent — one per line) made
//! with the vendor's private key; the server checks it with [`PUBLIC_KEY`], compiled
//! in. An expired licence falls back to the trial limit (with a warning). A licence
//! that does not verify stops the server at start: it was configured on purpose.
//!
//! Development and tests: `licence_public_key` (base64) replaces the compiled-in key,
//! **in debug builds only**; a release build refuses to start with it set.

use crate::{ServerConfig, ServerError};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

pub const TRIAL_PIPELINES: u64 = 10;

/// The vendor's licence-signing public key (Ed25519).
pub const PUBLIC_KEY: [u8; 32] = [
    0x12, 0x43, 0x81, 0xc7, 0xfe, 0x63, 0x54, 0xc1, 0xc2, 0x26, 0xb8, 0x4f, 0x40, 0x68, 0xaa, 0x1c, 0x48, 0xe2, 0x5f,
    0x2c, 0x5d, 0x8b, 0xaa, 0x75, 0x0e, 0x1a, 0x28, 0xdc, 0xc7, 0x97, 0x36, 0x79,
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Licence {
    pub licensee: String,
    pub max_pipelines: u64,
    /// `YYYY-MM-DD`: valid through that day (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    pub signature: String,
}

impl Licence {
    /// The bytes the signature covers.
    pub fn message(licensee: &str, max_pipelines: u64, expires: Option<&str>) -> String {
        format!("wharf-licence-v1\n{licensee}\n{max_pipelines}\n{}", expires.unwrap_or(""))
    }
}

/// The limit in force and where it comes from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    pub max_pipelines: u64,
    pub source: String,
}

impl Quota {
    pub fn trial() -> Quota {
        Quota { max_pipelines: TRIAL_PIPELINES, source: "the trial licence".into() }
    }

    /// The error at the cap: which limit, and how to raise it.
    pub fn exceeded(&self) -> String {
        format!(
            "pipeline limit reached: {} allows at most {} pipelines in total; delete pipelines, or ask your \
             cloud administrator to install a licence file that raises the limit (config `licence_file` / \
             WHARF_LICENCE_FILE, then restart)",
            self.source, self.max_pipelines
        )
    }
}

fn public_key(config: &ServerConfig) -> Result<VerifyingKey, ServerError> {
    let bytes = match &config.licence_public_key {
        None => PUBLIC_KEY,
        Some(text) => {
            if !cfg!(debug_assertions) {
                return Err(ServerError::Config(
                    "licence_public_key is for development builds only; remove it (release builds verify licences \
                     with the vendor's key)"
                        .into(),
                ));
            }
            let raw = STANDARD
                .decode(text.trim())
                .map_err(|e| ServerError::Config(format!("licence_public_key is not base64: {e}")))?;
            raw.try_into().map_err(|_| ServerError::Config("licence_public_key must be 32 bytes".into()))?
        }
    };
    VerifyingKey::from_bytes(&bytes).map_err(|e| ServerError::Config(format!("licence public key: {e}")))
}

/// Reads and verifies the configured licence; the trial quota without one.
pub fn load(config: &ServerConfig) -> Result<Quota, ServerError> {
    let key = public_key(config)?;
    let Some(path) = &config.licence_file else { return Ok(Quota::trial()) };
    let bad = |why: String| ServerError::Config(format!("licence file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let licence: Licence = serde_json::from_str(&text).map_err(|e| bad(format!("not a licence: {e}")))?;
    let signature = STANDARD
        .decode(licence.signature.trim())
        .ok()
        .and_then(|raw| Signature::from_slice(&raw).ok())
        .ok_or_else(|| bad("the signature is not a base64 Ed25519 signature".into()))?;
    let message = Licence::message(&licence.licensee, licence.max_pipelines, licence.expires.as_deref());
    key.verify_strict(message.as_bytes(), &signature)
        .map_err(|_| bad("the signature does not verify; this is not a licence issued for Wharf".into()))?;
    if let Some(expires) = &licence.expires {
        let date: jiff::civil::Date =
            expires.parse().map_err(|e| bad(format!("`expires` is not a date (YYYY-MM-DD): {e}")))?;
        let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
        if date < today {
            tracing::warn!(licensee = %licence.licensee, %expires, "the licence has expired; the trial limit applies");
            return Ok(Quota {
                max_pipelines: TRIAL_PIPELINES,
                source: format!("the trial licence (the licence of {} expired on {expires})", licence.licensee),
            });
        }
    }
    Ok(Quota { max_pipelines: licence.max_pipelines, source: format!("the licence of {}", licence.licensee) })
}

/// Signs a licence (for tests and the vendor's tooling).
pub fn sign(
    signing_key: &ed25519_dalek::SigningKey,
    licensee: &str,
    max_pipelines: u64,
    expires: Option<&str>,
) -> Licence {
    use ed25519_dalek::Signer;
    let message = Licence::message(licensee, max_pipelines, expires);
    let signature = signing_key.sign(message.as_bytes());
    Licence {
        licensee: licensee.to_owned(),
        max_pipelines,
        expires: expires.map(str::to_owned),
        signature: STANDARD.encode(signature.to_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ed25519_dalek::SigningKey {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        ed25519_dalek::SigningKey::from_bytes(&seed)
    }

    fn config_with(dir: &std::path::Path, signer: &ed25519_dalek::SigningKey, licence: &Licence) -> ServerConfig {
        let mut config = ServerConfig::new(dir.to_path_buf());
        let path = dir.join("licence.json");
        std::fs::write(&path, serde_json::to_string(licence).unwrap()).unwrap();
        config.licence_file = Some(path);
        config.licence_public_key = Some(STANDARD.encode(signer.verifying_key().to_bytes()));
        config
    }

    #[test]
    fn a_signed_licence_raises_the_limit_and_a_forged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let signer = key();
        let good = sign(&signer, "ACME", 500, Some("2999-01-01"));
        assert_eq!(load(&config_with(dir.path(), &signer, &good)).unwrap().max_pipelines, 500);

        let mut forged = good.clone();
        forged.max_pipelines = 5000;
        let err = load(&config_with(dir.path(), &signer, &forged)).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");

        let other = sign(&key(), "ACME", 500, None);
        assert!(load(&config_with(dir.path(), &signer, &other)).is_err(), "signed by another key");

        let expired = sign(&signer, "ACME", 500, Some("2000-01-01"));
        let quota = load(&config_with(dir.path(), &signer, &expired)).unwrap();
        assert_eq!(quota.max_pipelines, TRIAL_PIPELINES);
        assert!(quota.exceeded().contains("expired on 2000-01-01"));
    }

    #[test]
    fn without_a_licence_the_trial_allows_ten() {
        let config = ServerConfig::new("/nonexistent".into());
        let quota = load(&config).unwrap();
        assert_eq!(quota.max_pipelines, 10);
        assert!(quota.exceeded().contains("at most 10"));
        assert!(quota.exceeded().contains("licence_file"));
    }
}
