//! The checks every value taken from a payload passes before it leaves this module:
//! ref names by git's rules plus Wharf's shell-metacharacter ban, commits as 40 hex
//! digits, repository addresses as data git cannot mistake for a command. The
//! provider parsers call these with the field's path in the provider's payload, so an
//! error names exactly what to look at.

use serde::de::DeserializeOwned;
use wharf_core::git::{validate_branch_name, validate_repo_url};

use super::{Event, ParseError};

/// The sha a provider sends for "no commit": `before` of a created ref, `after` of a
/// deleted one.
pub(crate) const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// What a pushed ref names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RefName {
    Branch(String),
    Tag(String),
    /// Neither `refs/heads/` nor `refs/tags/` (notes, pull-request heads…): valid, but
    /// nothing a pipeline can be triggered by.
    Other,
}

/// Splits a full ref (`refs/heads/main`, `refs/tags/v1.0`) after checking it.
pub(crate) fn git_ref(field: &'static str, full: &str) -> Result<RefName, ParseError> {
    let checked = |name: &str| validate_branch_name(name).map_err(|reason| ParseError::field(field, full, reason));
    if let Some(branch) = full.strip_prefix("refs/heads/") {
        checked(branch)?;
        Ok(RefName::Branch(branch.to_string()))
    } else if let Some(tag) = full.strip_prefix("refs/tags/") {
        checked(tag)?;
        Ok(RefName::Tag(tag.to_string()))
    } else if full.starts_with("refs/") {
        checked(full)?;
        Ok(RefName::Other)
    } else {
        Err(ParseError::field(field, full, "a full ref name like refs/heads/main or refs/tags/v1.0 was expected"))
    }
}

/// A short branch name (`main`, `feature/x`), as merge requests give them.
pub(crate) fn branch(field: &'static str, name: &str) -> Result<String, ParseError> {
    validate_branch_name(name).map_err(|reason| ParseError::field(field, name, reason))?;
    Ok(name.to_string())
}

/// A full commit sha, returned in lower case as git prints it.
pub(crate) fn commit(field: &'static str, sha: &str) -> Result<String, ParseError> {
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseError::field(field, sha, "a commit sha of 40 hexadecimal digits was expected"));
    }
    Ok(sha.to_ascii_lowercase())
}

/// A commit the provider may leave out, as `null` or `""`.
pub(crate) fn optional_commit(field: &'static str, sha: Option<&str>) -> Result<Option<String>, ParseError> {
    match sha {
        None | Some("") => Ok(None),
        Some(sha) => commit(field, sha).map(Some),
    }
}

/// The repository's clone addresses, in the order given, without blanks or repeats.
/// Each must be an address git treats as data; at least one must be present.
pub(crate) fn repo_urls(candidates: &[(&'static str, Option<&str>)]) -> Result<Vec<String>, ParseError> {
    let mut urls: Vec<String> = Vec::new();
    for &(field, url) in candidates {
        let Some(url) = url.filter(|url| !url.is_empty()) else { continue };
        validate_repo_url(url).map_err(|reason| ParseError::field(field, url, reason))?;
        if !urls.iter().any(|known| known == url) {
            urls.push(url.to_string());
        }
    }
    if urls.is_empty() {
        let field = candidates.first().map_or("repository", |&(field, _)| field);
        return Err(ParseError::field(field, "", "the payload names no clone address of the repository"));
    }
    Ok(urls)
}

/// A provider's name for an action, kept for storage and logs: a short word.
pub(crate) fn action(field: &'static str, name: &str) -> Result<String, ParseError> {
    if name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ParseError::field(
            field,
            name,
            "an action name of at most 64 letters, digits, `_` or `-` was expected",
        ));
    }
    Ok(name.to_string())
}

/// A push as the providers describe it, before its values are checked.
pub(crate) struct RawPush<'a> {
    /// The full ref, from the payload field `ref`.
    pub git_ref: &'a str,
    pub before: &'a str,
    pub after: &'a str,
    /// The commit the ref points at once peeled, where the provider gives it apart
    /// from `after` (for an annotated tag `after` is the tag object): field and value.
    pub peeled: (&'static str, Option<&'a str>),
    /// The provider's own deletion flag; an all-zero `after` counts too.
    pub deleted: bool,
    pub repo_urls: Vec<String>,
    pub sender: String,
}

impl RawPush<'_> {
    pub(crate) fn into_event(self) -> Result<Event, ParseError> {
        let (branch, tag) = match git_ref("ref", self.git_ref)? {
            RefName::Branch(branch) => (Some(branch), None),
            RefName::Tag(tag) => (None, Some(tag)),
            RefName::Other => (None, None),
        };
        let before = commit("before", self.before)?;
        let after = commit("after", self.after)?;
        let deleted = self.deleted || after == ZERO_SHA;
        let commit = match self.peeled {
            _ if deleted => ZERO_SHA.to_string(),
            (field, Some(peeled)) => commit(field, peeled)?,
            _ => after,
        };
        Ok(Event::Push { repo_urls: self.repo_urls, branch, tag, commit, before, sender: self.sender, deleted })
    }
}

/// The first non-empty name, or `""` when the provider sent none.
pub(crate) fn first_name<'a>(names: impl IntoIterator<Item = Option<&'a str>>) -> String {
    names.into_iter().flatten().find(|name| !name.is_empty()).unwrap_or_default().to_string()
}

/// The body as JSON of type `T`, after checking it is UTF-8.
pub(crate) fn json<T: DeserializeOwned>(event: &str, body: &[u8]) -> Result<T, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| ParseError::NotUtf8 { valid_up_to: e.valid_up_to() })?;
    serde_json::from_str(text).map_err(|source| ParseError::InvalidJson { event: event.to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<impl std::fmt::Debug, ParseError>) -> String {
        result.expect_err("refused").to_string()
    }

    #[test]
    fn refs_split_into_branch_and_tag() {
        assert_eq!(git_ref("ref", "refs/heads/main").unwrap(), RefName::Branch("main".into()));
        assert_eq!(git_ref("ref", "refs/heads/release/1.x").unwrap(), RefName::Branch("release/1.x".into()));
        assert_eq!(git_ref("ref", "refs/tags/v1.0.0").unwrap(), RefName::Tag("v1.0.0".into()));
        assert_eq!(git_ref("ref", "refs/notes/commits").unwrap(), RefName::Other);
    }

    #[test]
    fn hostile_refs_are_refused_naming_the_field() {
        let text = reason(git_ref("ref", "refs/heads/$(id)"));
        assert!(text.starts_with(r#"field `ref` is not valid ("refs/heads/$(id)")"#), "{text}");
        assert!(text.contains("`$`"), "{text}");
        assert!(reason(git_ref("ref", "refs/heads/$(touch /tmp/x)")).contains("space"));
        assert!(reason(git_ref("ref", "refs/heads/a/../b")).contains("`..`"));
        assert!(reason(git_ref("ref", "refs/tags/v1;rm -rf")).contains("space"));
        assert!(reason(git_ref("ref", "refs/heads/")).contains("empty"));
        assert!(reason(git_ref("ref", "refs/heads/-x")).contains("`-`"));
        assert!(reason(git_ref("ref", "refs/x/a..b")).contains("`..`"));
        assert!(reason(git_ref("ref", "main")).contains("full ref name"));
        assert!(reason(git_ref("ref", "")).contains("full ref name"));
        assert!(reason(branch("source_branch", "a`id`")).contains("source_branch"));
    }

    #[test]
    fn commits_are_40_hex_digits() {
        assert_eq!(commit("after", &"AB".repeat(20)).unwrap(), "ab".repeat(20));
        assert!(reason(commit("after", "abc1234")).contains("40 hexadecimal"));
        assert!(reason(commit("after", &"g".repeat(40))).contains("field `after`"));
        assert!(commit("after", &"a".repeat(64)).is_err());
        assert_eq!(optional_commit("merge_commit_sha", None).unwrap(), None);
        assert_eq!(optional_commit("merge_commit_sha", Some("")).unwrap(), None);
        assert!(optional_commit("merge_commit_sha", Some("x")).is_err());
    }

    #[test]
    fn repo_urls_are_checked_and_deduplicated() {
        let urls = repo_urls(&[
            ("clone_url", Some("https://example.com/a/b.git")),
            ("ssh_url", Some("git@example.com:a/b.git")),
            ("git_http_url", Some("https://example.com/a/b.git")),
            ("git_ssh_url", None),
            ("url", Some("")),
        ])
        .unwrap();
        assert_eq!(urls, ["https://example.com/a/b.git", "git@example.com:a/b.git"]);
        assert!(reason(repo_urls(&[("clone_url", Some("ext::sh -c id"))])).contains("clone_url"));
        assert!(reason(repo_urls(&[("clone_url", None)])).contains("no clone address"));
    }

    #[test]
    fn names_fall_back_in_order() {
        assert_eq!(first_name([None, Some(""), Some("octocat"), Some("other")]), "octocat");
        assert_eq!(first_name([None, Some("")]), "");
    }
}
