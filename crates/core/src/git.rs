//! The grammar of what a pipeline may name in git: branch names and repository URLs.
//! Pure checks, shared by validation (before a run) and checkout (at run time, on
//! the resolved values). Anything refused here never reaches a `git` command line.

/// A branch name as `git check-ref-format --branch` accepts it, minus the characters
/// a shell would treat specially (defence in depth: we never use a shell, but a
/// branch name is also shown in logs, paths and other people's scripts).
pub fn validate_branch_name(name: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("`{}` is not a valid branch name: {why}", name.escape_debug()));
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.len() > 255 {
        return refuse("it is longer than 255 bytes");
    }
    if name == "@" {
        return refuse("`@` alone is reserved");
    }
    if name.starts_with('-') {
        return refuse("it starts with `-`");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return refuse("it has an empty path component (leading, trailing or double `/`)");
    }
    if name.ends_with('.') || name.ends_with(".lock") {
        return refuse("it ends with `.` or `.lock`");
    }
    if name.contains("..") {
        return refuse("it contains `..`");
    }
    if name.contains("@{") {
        return refuse("it contains `@{`");
    }
    if name.split('/').any(|part| part.starts_with('.')) {
        return refuse("a component starts with `.`");
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_control()
            || matches!(
                c,
                ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\' | '$' | '(' | ')' | '`' | ';' | '|' | '&' | '<' | '>'
                    | '\'' | '"'
            )
    }) {
        return refuse(&format!("it contains `{}`", c.escape_debug()));
    }
    Ok(())
}

/// A repository location git may be pointed at: `https://`, `http://`, `ssh://`,
/// `git://`, `file://`, scp-like `user@host:path`, or an absolute path. Transports that
/// run commands (`ext::`, `fd::`) and anything git could read as an option are refused.
pub fn validate_repo_url(url: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("`{}` is not a usable repository URL: {why}", url.escape_debug()));
    if url.is_empty() {
        return refuse("it is empty");
    }
    if url.starts_with('-') {
        return refuse("it starts with `-`");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return refuse("it contains whitespace or control characters");
    }
    if url.contains("::") {
        return refuse("`<transport>::` addresses are not allowed (they can run commands)");
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        return match scheme {
            "http" | "https" | "ssh" | "git" => {
                if rest.is_empty() || rest.starts_with('/') {
                    refuse("it has no host")
                } else {
                    Ok(())
                }
            }
            "file" => {
                if rest.starts_with('/') {
                    Ok(())
                } else {
                    refuse("a file:// URL needs an absolute path (file:///srv/git/app.git)")
                }
            }
            _ => refuse("the scheme must be https, http, ssh, git or file"),
        };
    }
    if url.starts_with('/') {
        return Ok(());
    }
    // scp-like: [user@]host:path, where host has no slash before the colon.
    if let Some((host, path)) = url.split_once(':')
        && !host.is_empty()
        && !host.contains('/')
        && !path.is_empty()
    {
        return Ok(());
    }
    refuse("a relative path is ambiguous; use file:// with an absolute path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_names_follow_git_and_refuse_shell_syntax() {
        for ok in ["main", "release/1.2", "feature-x", "v1.0.0", "user@x", "a.b/c_d"] {
            assert_eq!(validate_branch_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("-rf", "starts with `-`"),
            ("a..b", "`..`"),
            ("a b", "` `"),
            ("$(touch /tmp/pwned)", "`$`"),
            ("`id`", "`` ` ``"),
            ("a;b", "`;`"),
            ("x.lock", ".lock"),
            ("x/", "empty path component"),
            ("/x", "empty path component"),
            ("a//b", "empty path component"),
            (".hidden", "starts with `.`"),
            ("a/.b", "starts with `.`"),
            ("a@{1}", "`@{`"),
            ("@", "reserved"),
            ("a~1", "`~`"),
            ("a^", "`^`"),
            ("a:b", "`:`"),
            ("a?", "`?`"),
            ("a*", "`*`"),
            ("a[b", "`[`"),
            ("a\\b", "`\\\\`"),
            ("a\nb", "`\\n`"),
            ("end.", "ends with `.`"),
        ] {
            let err = validate_branch_name(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(validate_branch_name(&"a".repeat(256)).is_err());
    }

    #[test]
    fn repo_urls() {
        for ok in [
            "https://gitlab.example.com/qa/jack-2048.git",
            "http://127.0.0.1:8080/x.git",
            "ssh://git@host/x.git",
            "git@github.com:org/repo.git",
            "file:///srv/git/app.git",
            "/srv/git/app.git",
            "git://host/x",
        ] {
            assert_eq!(validate_repo_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-uhelp",
            "ext::sh -c touch% /tmp/x",
            "ext::sh",
            "fd::3",
            "ftp://x/y",
            "file://relative",
            "relative/path",
            "https://x/ y",
            "https://",
        ] {
            assert!(validate_repo_url(bad).is_err(), "{bad}");
        }
    }
}
