//! Where the key that seals secrets at rest comes from (see
//! [`wharf_store::secretbox`]):
//!
//! - `secret_key` in the config (or `WHARF_SECRET_KEY`): 32 bytes, base64. Older keys
//!   still needed to read what they sealed go in `old_secret_keys`
//!   (`WHARF_OLD_SECRET_KEYS`, comma-separated). To rotate: make a new key
//!   (`openssl rand -base64 32`), set it as `secret_key`, move the previous one to
//!   `old_secret_keys`, restart; the server re-seals everything at start and the old
//!   key may then be removed.
//! - Otherwise the key file `<data dir>/secret.key` (mode 0600), made at first start:
//!   one base64 key per line, the first is current. `wharf serve --rotate-secret-key`
//!   puts a new key first; at start every stored secret is re-sealed with it and the
//!   file is rewritten with the new key only.

use crate::{ServerConfig, ServerError};
use std::io::Write;
use std::path::{Path, PathBuf};
use wharf_store::secretbox::{SecretBox, SecretKey};

pub const KEY_FILE: &str = "secret.key";

/// Where the keys came from: the key file can be tidied after a re-seal.
#[derive(Debug, Clone)]
pub enum KeySource {
    Config,
    File(PathBuf),
}

fn bad(context: String) -> impl FnOnce(wharf_store::secretbox::SecretError) -> ServerError {
    move |e| ServerError::Config(format!("{context}: {e}"))
}

/// The box for the store, and where its keys are kept.
pub fn load(config: &ServerConfig) -> Result<(SecretBox, KeySource), ServerError> {
    if let Some(text) = &config.secret_key {
        if config.rotate_secret_key {
            return Err(ServerError::Config(
                "--rotate-secret-key rotates the key file; with `secret_key` configured, rotate by setting a new \
                 secret_key and moving the old one to old_secret_keys"
                    .into(),
            ));
        }
        let current = SecretKey::from_base64(text).map_err(bad("secret_key".into()))?;
        let older = config
            .old_secret_keys
            .iter()
            .enumerate()
            .map(|(i, k)| SecretKey::from_base64(k).map_err(bad(format!("old_secret_keys[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((SecretBox::new(current, older), KeySource::Config));
    }
    let path = config.data_dir.join(KEY_FILE);
    let mut keys = if path.exists() { read_file(&path)? } else { Vec::new() };
    if keys.is_empty() || config.rotate_secret_key {
        keys.insert(0, SecretKey::generate());
        write_file(&path, &keys)?;
        if config.rotate_secret_key {
            tracing::info!(key = keys[0].id(), "new secret key; stored secrets are re-sealed with it");
        }
    }
    let current = keys.remove(0);
    Ok((SecretBox::new(current, keys), KeySource::File(path)))
}

fn read_file(path: &Path) -> Result<Vec<SecretKey>, ServerError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ServerError::Io { context: format!("cannot read {}", path.display()), source })?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(i, l)| SecretKey::from_base64(l).map_err(bad(format!("{} line {}", path.display(), i + 1))))
        .collect()
}

/// Writes the key file with mode 0600 (created so; never world-readable in between).
pub fn write_file(path: &Path, keys: &[SecretKey]) -> Result<(), ServerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| ServerError::Io { context: format!("cannot write {}", path.display()), source };
    let tmp = path.with_extension("key.new");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    let mut text = String::from("# Wharf's secret keys: the first seals, the others only open. Keep this file safe.\n");
    for key in keys {
        text.push_str(&key.to_base64());
        text.push('\n');
    }
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// After every stored secret was re-sealed with the current key: the key file keeps
/// only that key.
pub fn forget_older(source: &KeySource, secret_box: &SecretBox) -> Result<(), ServerError> {
    if let KeySource::File(path) = source {
        let keys = read_file(path)?;
        if keys.len() > 1
            && let Some(current) = keys.into_iter().find(|k| k.id() == secret_box.current_key_id())
        {
            write_file(path, &[current])?;
        }
    }
    Ok(())
}
