//! Which repository a clone address names, so that two addresses of one repository
//! compare equal: what a webhook's repository is matched against a pipeline's
//! `source.repo` by, and what finds the code host of a pipeline's repository.

/// A repository as its clone addresses name it: the host (lower-case, without user,
/// password or port; empty for a local repository) and the path (without a trailing
/// `/` or `.git`, any number of them; case kept, as hosts' paths are case-sensitive),
/// whatever the scheme. So `https://GitHub.com/acme/app.git`, `git@github.com:acme/app`
/// and `ssh://git@github.com:22/acme/app/` are one repository, and `file://` URLs and
/// absolute paths compare as paths.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GitUrl {
    host: String,
    path: String,
}

impl GitUrl {
    /// The repository `url` names, or `None` when it names none that can be compared:
    /// empty, still holding `${…}` (not resolved yet), a relative path, or no path
    /// after the host.
    pub fn parse(url: &str) -> Option<GitUrl> {
        let url = url.trim();
        if url.is_empty() || url.contains("${") {
            return None;
        }
        let (host, path) = if let Some((scheme, rest)) = url.split_once("://") {
            if scheme.eq_ignore_ascii_case("file") {
                (String::new(), rest)
            } else {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                (authority_host(authority), path)
            }
        } else if url.starts_with('/') {
            (String::new(), url)
        } else if let Some((authority, path)) = url.split_once(':')
            && !authority.contains('/')
        {
            // scp-like `[user@]host:path`
            (authority_host(authority), path)
        } else {
            return None;
        };
        let mut path = path;
        loop {
            let trimmed = path.trim_end_matches('/');
            let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
            if trimmed == path {
                break;
            }
            path = trimmed;
        }
        // A host's paths are relative to it (`ssh://h/a/b` is `h:a/b`); a local path is not.
        let path = if host.is_empty() { path } else { path.trim_start_matches('/') };
        if path.is_empty() {
            return None;
        }
        Some(GitUrl { host, path: path.to_owned() })
    }

    /// Whether two clone addresses name the same repository (see [`GitUrl`]). An
    /// address that names none ([`GitUrl::parse`]) is the same as nothing, itself
    /// included.
    pub fn same_repo(a: &str, b: &str) -> bool {
        match (GitUrl::parse(a), GitUrl::parse(b)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    /// One string per repository, equal exactly when the repositories are
    /// (`github.com/acme/app`; a local repository's absolute path): what the store
    /// finds the pipelines of a repository's events by.
    pub fn key(&self) -> String {
        // A host has no `/` and a host's path does not start with one, so the two
        // forms cannot meet.
        if self.host.is_empty() { self.path.clone() } else { format!("{}/{}", self.host, self.path) }
    }

    /// The host, lower-case (IPv6 brackets kept); empty for a local repository.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path on the host (`acme/app`), or the absolute path of a local repository.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A repository on this machine's disk (`file://` or an absolute path), not on a host.
    pub fn is_local(&self) -> bool {
        self.host.is_empty()
    }
}

/// `[user[:password]@]host[:port]` → `host`, lower-case (IPv6 brackets kept).
pub fn authority_host(authority: &str) -> String {
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if host.starts_with('[') {
        host.split_once(']').map_or(host.to_owned(), |(h, _)| format!("{h}]"))
    } else {
        host.split(':').next().unwrap_or(host).to_owned()
    };
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> Option<(String, String)> {
        GitUrl::parse(url).map(|u| (u.host().to_owned(), u.path().to_owned()))
    }

    #[test]
    fn clone_addresses_compare_by_host_and_path() {
        let same = [
            ("https://github.com/acme/app.git", "https://github.com/acme/app"),
            ("https://github.com/acme/app.git", "git@github.com:acme/app.git"),
            ("https://GitHub.COM/acme/app/", "ssh://git@github.com/acme/app.git"),
            ("ssh://git@gitlab.example.com:2222/qa/jack-2048.git", "https://gitlab.example.com/qa/jack-2048"),
            ("https://user:pw@gitee.com/a/b.git", "git@gitee.com:a/b"),
            ("file:///srv/git/app.git", "/srv/git/app"),
            ("file:///srv/git/app/", "file:///srv/git/app.git"),
            ("http://[::1]:8080/a/b.git", "ssh://git@[::1]/a/b"),
        ];
        // The key (what the store finds a repository's pipelines by) agrees.
        let key = |url| GitUrl::parse(url).map(|u| u.key());
        for (a, b) in same {
            assert!(GitUrl::same_repo(a, b), "{a} vs {b}");
            assert!(GitUrl::same_repo(b, a), "{b} vs {a}");
            assert_eq!(key(a), key(b), "{a} vs {b}");
        }
        let different = [
            ("https://github.com/acme/app", "https://github.com/acme/app2"),
            ("https://github.com/acme/app", "https://github.com/Acme/app"),
            ("https://github.com/acme/app", "https://gitlab.com/acme/app"),
            ("https://github.com/acme/app", "https://github.com/other/acme/app"),
            ("file:///srv/git/app", "https://srv/git/app"),
            ("https://example.com/${repo}.git", "https://example.com/${repo}.git"),
            ("https://github.com/", "https://github.com"),
            ("relative/path", "relative/path"),
        ];
        for (a, b) in different {
            assert!(!GitUrl::same_repo(a, b), "{a} vs {b}");
            if let (Some(a_key), Some(b_key)) = (key(a), key(b)) {
                assert_ne!(a_key, b_key, "{a} vs {b}");
            }
        }
        assert_eq!(key("git@GitHub.com:acme/app.git").as_deref(), Some("github.com/acme/app"));
        assert_eq!(key("file:///srv/git/app.git").as_deref(), Some("/srv/git/app"));
    }

    #[test]
    fn host_and_path_are_normalised_by_their_own_rules() {
        // Hosts are case-insensitive, paths are not; every trailing `.git` and `/` goes.
        assert_eq!(parts("git@github.com:acme/app.git.git"), Some(("github.com".into(), "acme/app".into())));
        assert_eq!(
            parts(" HTTPS://Git.Example.COM/Team/App/.git/ "),
            Some(("git.example.com".into(), "Team/App".into()))
        );
        assert_eq!(parts("ssh://git@host:22//srv/repo"), Some(("host".into(), "srv/repo".into())));
        assert_eq!(parts("FILE:///srv/git/app.git"), Some(("".into(), "/srv/git/app".into())));
        assert_eq!(parts("/srv/git/app/"), Some(("".into(), "/srv/git/app".into())));
        // Nothing comparable: empty, unresolved, relative, no path.
        for url in
            ["", "  ", "${REPO}", "relative/path", "./app", "https://github.com", "git@github.com:", "git@h:.git/"]
        {
            assert_eq!(parts(url), None, "{url:?}");
        }
    }

    #[test]
    fn local_repositories_have_no_host() {
        assert!(GitUrl::parse("file:///srv/git/app").unwrap().is_local());
        assert!(GitUrl::parse("/srv/git/app").unwrap().is_local());
        assert!(!GitUrl::parse("git@github.com:acme/app").unwrap().is_local());
    }

    #[test]
    fn the_host_of_an_authority() {
        assert_eq!(authority_host("user:pw@Git.Example.com:8443"), "git.example.com");
        assert_eq!(authority_host("git@[::1]:22"), "[::1]");
        assert_eq!(authority_host("[FE80::1]"), "[fe80::1]");
        assert_eq!(authority_host("gitee.com"), "gitee.com");
        assert_eq!(authority_host(""), "");
    }
}
