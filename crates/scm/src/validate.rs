//! Helpers for the values handed to git. The branch-name and repository-address
//! checks themselves live in `wharf_core::git`, shared with pipeline validation.

pub use wharf_core::git::{validate_branch_name, validate_repo_url};

/// Checks a requested commit and returns it in lower case, as git prints shas.
pub(crate) fn normalize_commit(commit: &str) -> Result<String, String> {
    if !(7..=40).contains(&commit.len()) {
        return Err("a commit sha has 7 to 40 hexadecimal digits".into());
    }
    if !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("a commit sha has only hexadecimal digits (0-9, a-f)".into());
    }
    Ok(commit.to_ascii_lowercase())
}

/// The address handed to git: absolute paths become `file://` URLs, because git ignores
/// `--depth` for plain local paths (it hard-links the whole object store instead).
pub(crate) fn git_url(url: &str) -> String {
    if url.starts_with('/') { format!("file://{url}") } else { url.to_string() }
}

/// `url` as shown in logs and errors: the password of `scheme://user:password@host`
/// becomes `***`, as does a bare http(s) user, which is how tokens are usually passed.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some((userinfo, host_and_path)) =
        rest[..authority_end].rsplit_once('@').map(|(userinfo, _)| (userinfo, &rest[userinfo.len() + 1..]))
    else {
        return url.to_string();
    };
    let userinfo = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None if scheme.starts_with("http") => "***".to_string(),
        None => userinfo.to_string(),
    };
    format!("{scheme}://{userinfo}@{host_and_path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_hex_of_7_to_40_digits() {
        assert_eq!(normalize_commit("ABCDEF1"), Ok("abcdef1".to_string()));
        assert!(normalize_commit(&"a".repeat(40)).is_ok());
        assert!(normalize_commit("abcdef").is_err());
        assert!(normalize_commit(&"a".repeat(41)).is_err());
        assert!(normalize_commit("abcdefg").is_err());
        assert!(normalize_commit("-abcdef1").is_err());
    }

    #[test]
    fn absolute_paths_become_file_urls() {
        assert_eq!(git_url("/srv/app.git"), "file:///srv/app.git");
        assert_eq!(git_url("git@h:app"), "git@h:app");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("https://bob:s3cret@example.com/a@b.git"), "https://bob:***@example.com/a@b.git");
        assert_eq!(redact_url("https://tok@example.com/a"), "https://***@example.com/a");
        assert_eq!(redact_url("ssh://git@example.com/a"), "ssh://git@example.com/a");
        assert_eq!(redact_url("https://example.com/a@b"), "https://example.com/a@b");
        assert_eq!(redact_url("git@example.com:a"), "git@example.com:a");
    }
}
