//! The grammar of what a pipeline may name in git: branch names and repository
//! addresses. Pure checks, shared by validation (before a run) and checkout (at run
//! time, on resolved values). They are the security boundary: pipeline authors choose
//! these strings, and git interprets some forms (`ext::`, a leading `-`,
//! `ssh://-oProxyCommand=…`) as commands or options.
//!
//! Which repository an address names, for comparing two addresses, is [`GitUrl`].

mod url;

pub use url::{GitUrl, authority_host};

/// Schemes Wharf lets git use; kept in step with `GIT_ALLOW_PROTOCOL` in `git.rs`.
const ALLOWED_SCHEMES: [&str; 5] = ["http", "https", "ssh", "git", "file"];

/// Characters git refuses in ref names (`git check-ref-format`).
const GIT_FORBIDDEN: [char; 8] = [' ', '~', '^', ':', '?', '*', '[', '\\'];

/// Characters git accepts but Wharf refuses, so that a branch name pasted into a shell
/// by some script further down the line cannot run anything.
const SHELL_FORBIDDEN: [char; 11] = ['$', '(', ')', '`', ';', '|', '&', '<', '>', '\'', '"'];

const MAX_BRANCH_BYTES: usize = 255;

/// Checks `name` against git's branch-name rules (`git check-ref-format --branch`) plus
/// shell metacharacters; `Err` holds the reason for a human.
pub fn validate_branch_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > MAX_BRANCH_BYTES {
        return Err(format!("it is longer than {MAX_BRANCH_BYTES} bytes"));
    }
    if name.chars().any(|c| c.is_ascii_control()) {
        return Err("it contains a control character (newline, tab, …)".into());
    }
    if let Some(c) = name.chars().find(|c| GIT_FORBIDDEN.contains(c)) {
        let shown = if c == ' ' { "a space".to_string() } else { format!("`{c}`") };
        return Err(format!("it contains {shown}, which git does not allow in branch names"));
    }
    if let Some(c) = name.chars().find(|c| SHELL_FORBIDDEN.contains(c)) {
        return Err(format!("it contains `{c}`, which Wharf does not allow in branch names"));
    }
    if name == "@" || name == "HEAD" {
        return Err(format!("`{name}` is a git keyword, not a branch name"));
    }
    if name.starts_with('-') {
        return Err("it starts with `-`".into());
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Err("it starts or ends with `/`".into());
    }
    if name.contains("//") {
        return Err("it contains `//`".into());
    }
    if name.contains("..") {
        return Err("it contains `..`".into());
    }
    if name.contains("@{") {
        return Err("it contains `@{`".into());
    }
    if name.ends_with('.') {
        return Err("it ends with `.`".into());
    }
    for component in name.split('/') {
        if component.starts_with('.') {
            return Err(format!("its part `{component}` starts with `.`"));
        }
        if component.ends_with(".lock") {
            return Err(format!("its part `{component}` ends with `.lock`"));
        }
    }
    Ok(())
}

/// Checks that `url` is a repository address git will treat as data, not as a command or
/// an option; `Err` holds the reason for a human.
///
/// Accepted: `http`, `https`, `ssh`, `git` and `file:///` URLs, scp-like
/// `[user@]host:path`, and absolute paths.
pub fn validate_repo_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("the repository address is empty".into());
    }
    if url.starts_with('-') {
        return Err("it starts with `-`, which git would read as an option".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains spaces or control characters".into());
    }
    if let Some(helper) = transport_helper(url) {
        return Err(format!(
            "the `{helper}::` transport syntax is not accepted (it can run commands); \
             use an http, https, ssh, git or file URL"
        ));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !ALLOWED_SCHEMES.contains(&scheme) {
            return Err(format!("the scheme `{scheme}` is not accepted; use one of {}", ALLOWED_SCHEMES.join(", ")));
        }
        if scheme == "file" {
            return if rest.starts_with('/') {
                Ok(())
            } else {
                Err("a file URL must name an absolute path and no host, like \
                     file:///srv/git/app.git"
                    .into())
            };
        }
        let authority = rest.split('/').next().unwrap_or_default();
        return check_host(authority);
    }
    if url.starts_with('/') {
        return Ok(());
    }
    // Git reads `host:path` as ssh when a `:` comes before any `/`.
    if let Some((user_host, path)) = url.split_once(':')
        && !user_host.contains('/')
    {
        if path.is_empty() {
            return Err("it names no path after `:`".into());
        }
        return check_host(user_host);
    }
    Err("relative paths are not accepted; use file:// with an absolute path, like \
         file:///srv/git/app.git"
        .into())
}

/// Whether git would read `url` from this machine's filesystem rather than over the
/// network: a `file://` URL, or a path (absolute or relative). Git's own rule
/// (`url_is_local_not_ssh`): without `scheme://`, an address is ssh only when a `:`
/// comes before any `/`; everything else is a path. Transport syntax (`ext::`) is not
/// local here: [`validate_repo_url`] refuses it outright.
///
/// Reading a local repository means reading the server's disk with the server's
/// rights, so the server allows it only where it allows host execution.
pub fn is_local_repo(url: &str) -> bool {
    if let Some((scheme, _)) = url.split_once("://")
        && !scheme.contains('/')
    {
        return scheme.eq_ignore_ascii_case("file");
    }
    if transport_helper(url).is_some() {
        return false;
    }
    match url.split_once(':') {
        Some((user_host, _)) => user_host.contains('/') || user_host.is_empty(),
        None => true,
    }
}

/// `[user@]host[:port]` must name a host, and neither part may look like an option,
/// since git hands it to `ssh` as an argument.
fn check_host(authority: &str) -> Result<(), String> {
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if host.is_empty() {
        return Err("it names no host".into());
    }
    if authority.starts_with('-') || host.starts_with('-') {
        return Err("its user or host starts with `-`, which ssh would read as an option".into());
    }
    Ok(())
}

/// The `<transport>` of git's `<transport>::<address>` syntax, which runs the helper
/// program `git-remote-<transport>` (`ext::` runs any command). Same scan as git's
/// `transport_get`: a letter, then letters, digits, `+`, `-` or `.`, then `::`.
fn transport_helper(url: &str) -> Option<&str> {
    let end = url
        .char_indices()
        .find(|&(i, c)| {
            let scheme_char = if i == 0 {
                c.is_ascii_alphabetic()
            } else {
                c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')
            };
            !scheme_char
        })
        .map_or(url.len(), |(i, _)| i);
    (end > 0 && url[end..].starts_with("::")).then(|| &url[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn branch_refused(name: &str, reason_contains: &str) {
        match validate_branch_name(name) {
            Ok(()) => panic!("`{name}` was accepted"),
            Err(reason) => assert!(
                reason.contains(reason_contains),
                "`{name}`: reason `{reason}` does not mention `{reason_contains}`"
            ),
        }
    }

    #[test]
    fn ordinary_branch_names_are_accepted() {
        for name in
            ["main", "feature/x", "release-1.2", "a.b", "user/fix_42", "é", "a{b}", "v1.0-rc1", "x@y", &"a".repeat(255)]
        {
            assert_eq!(validate_branch_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn each_git_rule_is_enforced() {
        branch_refused("", "empty");
        branch_refused(&"a".repeat(256), "255 bytes");
        branch_refused("a..b", "`..`");
        branch_refused("a\u{7}b", "control");
        branch_refused("a\tb", "control");
        branch_refused("a\u{7f}b", "control");
        branch_refused("a b", "a space");
        for c in ['~', '^', ':', '?', '*', '[', '\\'] {
            branch_refused(&format!("a{c}b"), &format!("`{c}`"));
        }
        branch_refused("-b", "starts with `-`");
        branch_refused("/b", "`/`");
        branch_refused("b/", "`/`");
        branch_refused("b.lock", "`.lock`");
        branch_refused("a.lock/b", "`.lock`");
        branch_refused("b.", "ends with `.`");
        branch_refused("a//b", "`//`");
        branch_refused("a@{1}", "`@{`");
        branch_refused("@", "keyword");
        branch_refused("HEAD", "keyword");
        branch_refused(".b", "starts with `.`");
        branch_refused("a/.b", "starts with `.`");
    }

    #[test]
    fn shell_metacharacters_are_refused() {
        for c in ['$', '(', ')', '`', ';', '|', '&', '<', '>', '\'', '"'] {
            branch_refused(&format!("a{c}b"), "Wharf does not allow");
        }
        branch_refused("a\nb", "control");
        branch_refused("$(touch /tmp/pwned)", "");
    }

    #[test]
    fn accepted_repository_addresses() {
        for url in [
            "https://github.com/acme/app.git",
            "http://gitlab.internal:8080/acme/app",
            "https://user:token@github.com/acme/app.git",
            "ssh://git@github.com/acme/app.git",
            "ssh://git@[::1]:2222/app.git",
            "git://example.com/app.git",
            "file:///srv/git/app.git",
            "git@github.com:acme/app.git",
            "host:app.git",
            "/srv/git/app.git",
        ] {
            assert_eq!(validate_repo_url(url), Ok(()), "{url}");
        }
    }

    #[test]
    fn local_repositories_are_told_from_remote_ones() {
        for url in
            ["/srv/git/app.git", "file:///srv/app.git", "FILE:///srv/app.git", "./app", "../app", "app.git", "a/b:c"]
        {
            assert!(is_local_repo(url), "{url} is local");
        }
        for url in [
            "https://github.com/acme/app.git",
            "ssh://git@github.com/acme/app.git",
            "git://example.com/app.git",
            "git@github.com:acme/app.git",
            "host:app.git",
            "ext::sh -c x",
        ] {
            assert!(!is_local_repo(url), "{url} is not local");
        }
    }

    #[test]
    fn refused_repository_addresses() {
        for (url, reason) in [
            ("", "empty"),
            ("-uhttps://x", "`-`"),
            ("--upload-pack=touch /tmp/x", "`-`"),
            ("ext::sh -c touch% /tmp/x", "spaces"),
            ("ext::sh", "`ext::`"),
            ("fd::17", "`fd::`"),
            ("remote-x::whatever", "`remote-x::`"),
            ("https://a/b\nc", "control"),
            ("ftp://example.com/app.git", "`ftp`"),
            ("HTTPS://example.com/app.git", "`HTTPS`"),
            ("git+ssh://example.com/app.git", "`git+ssh`"),
            ("file://host/srv/app.git", "absolute path"),
            ("file://srv/app.git", "absolute path"),
            ("ssh://-oProxyCommand=touch%20x/app", "`-`"),
            ("ssh://git@-oProxyCommand=x/app", "`-`"),
            ("https:///app.git", "no host"),
            ("git@-oProxyCommand=x:app", "`-`"),
            ("git@host:", "no path"),
            ("@:app", "no host"),
            ("app.git", "relative"),
            ("./app", "file://"),
            ("../app", "file://"),
        ] {
            match validate_repo_url(url) {
                Ok(()) => panic!("`{url}` was accepted"),
                Err(got) => assert!(got.contains(reason), "`{url}`: `{got}` lacks `{reason}`"),
            }
        }
    }
}
