//! Image references: `[host[:port]/]path[:tag][@digest]`, checked against the grammar
//! of the OCI distribution spec and Docker's `distribution/reference`:
//!
//! ```text
//! path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag            := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest         := algorithm ":" hex          (sha256: 64 lowercase hex digits)
//! ```
//!
//! The first component is a registry host when it has a `.` or a `:` or is
//! `localhost`, as Docker decides; a name is at most 255 characters.

use std::fmt;

/// Longest repository name (host included) Docker accepts.
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 128;

/// A bad image name, tag or digest; the message says which part and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {what}: {problem}")]
pub struct ReferenceError {
    pub input: String,
    /// "image reference", "repository name", "tag", …
    pub what: &'static str,
    pub problem: String,
}

fn bad(input: &str, what: &'static str, problem: impl Into<String>) -> ReferenceError {
    ReferenceError { input: input.to_owned(), what, problem: problem.into() }
}

/// An error about a part, said of the whole.
fn nest(input: &str, what: &'static str, part: ReferenceError) -> ReferenceError {
    if part.input == input {
        return bad(input, what, part.problem);
    }
    bad(input, what, format!("{} `{}`: {}", part.what, part.input, part.problem))
}

/// A parsed reference. `registry` is `host[:port]` when one was named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub registry: Option<String>,
    /// Path components joined by `/`, e.g. `devops/jack-2048`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        const WHAT: &str = "image reference";
        if input.is_empty() {
            return Err(bad(input, WHAT, "it is empty"));
        }
        if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                input,
                WHAT,
                format!("it contains {c:?}; references have no spaces or control characters"),
            ));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(|e| nest(input, WHAT, e))?;
                (rest, Some(digest.to_owned()))
            }
            None => (input, None),
        };
        // A `:` after the last `/` starts the tag; one before it belongs to host:port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                check_tag(tag).map_err(|e| nest(input, WHAT, e))?;
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.len() > MAX_NAME_LEN {
            return Err(bad(
                input,
                WHAT,
                format!("the name is {} characters long; at most {MAX_NAME_LEN}", name.len()),
            ));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                check_host(first).map_err(|e| nest(input, WHAT, e))?;
                (Some(first.to_owned()), path)
            }
            _ => (None, name),
        };
        check_repository(path).map_err(|e| nest(input, WHAT, e))?;
        Ok(Reference { registry, repository: path.to_owned(), tag, digest })
    }

    /// The last path component (`jack-2048` of `devops/jack-2048`).
    pub fn name(&self) -> &str {
        self.repository.rsplit('/').next().unwrap_or(&self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(registry) = &self.registry {
            write!(f, "{registry}/")?;
        }
        f.write_str(&self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// A repository path without a host: `devops/jack-2048`.
pub fn check_repository(path: &str) -> Result<(), ReferenceError> {
    const WHAT: &str = "repository name";
    if path.is_empty() {
        return Err(bad(path, WHAT, "it is empty"));
    }
    if path.len() > MAX_NAME_LEN {
        return Err(bad(path, WHAT, format!("it is {} characters long; at most {MAX_NAME_LEN}", path.len())));
    }
    for component in path.split('/') {
        check_component(component).map_err(|e| nest(path, WHAT, e))?;
    }
    Ok(())
}

/// One path component (a workspace, an image name): lowercase letters and digits,
/// separated by `.`, `_`, `__` or dashes.
pub fn check_component(component: &str) -> Result<(), ReferenceError> {
    const WHAT: &str = "path component";
    if component.is_empty() {
        return Err(bad(component, WHAT, "a path component is empty (`//`, or a `/` at an end)"));
    }
    if let Some(c) = component.chars().find(|c| c.is_ascii_uppercase()) {
        return Err(bad(component, WHAT, format!("`{c}`: repository names must be lowercase")));
    }
    if let Some(c) = component.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(*c))) {
        return Err(bad(
            component,
            WHAT,
            format!("{c:?} is not allowed; use lowercase letters, digits and the separators `.`, `_`, `__`, `-`"),
        ));
    }
    if !component.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err(bad(component, WHAT, format!("`{component}` is not a path component (it has no letter or digit)")));
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err(bad(component, WHAT, "it must start and end with a lowercase letter or a digit"));
    }
    // Separators between alphanumeric runs: one `.`, one or two `_`, any number of `-`.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err(bad(component, WHAT, format!("`{sep}` is not a separator (allowed: `.`, `_`, `__`, dashes)")));
        }
    }
    Ok(())
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), ReferenceError> {
    const WHAT: &str = "tag";
    if tag.is_empty() {
        return Err(bad(tag, WHAT, "it is empty"));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(bad(tag, WHAT, format!("it is {} characters long; at most {MAX_TAG_LEN}", tag.len())));
    }
    if let Some(c) = tag.chars().find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        return Err(bad(tag, WHAT, format!("{c:?} is not allowed; tags use letters, digits, `_`, `.` and `-`")));
    }
    if tag.starts_with(['.', '-']) {
        return Err(bad(tag, WHAT, "it must not start with `.` or `-`"));
    }
    Ok(())
}

/// `algorithm:hex`; sha256 and sha512 digests must have the right length.
pub fn check_digest(digest: &str) -> Result<(), ReferenceError> {
    const WHAT: &str = "digest";
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(bad(digest, WHAT, "expected `sha256:<64 hex digits>`"));
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.starts_with(|c: char| c.is_ascii_lowercase())
        && algorithm.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
    if !algorithm_ok {
        return Err(bad(digest, WHAT, format!("`{algorithm}` is not a digest algorithm")));
    }
    let want = match algorithm {
        "sha256" => Some(64),
        "sha512" => Some(128),
        _ => None,
    };
    let hex_ok = hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    if !hex_ok || want.is_some_and(|n| n != hex.len()) {
        return Err(bad(
            digest,
            WHAT,
            format!("`{algorithm}` digests are {} lowercase hex digits", want.unwrap_or(32)),
        ));
    }
    Ok(())
}

/// `host[:port]`: DNS labels or an IPv4 address, or `[v6]`, and an optional port.
pub fn check_host(host: &str) -> Result<(), ReferenceError> {
    const WHAT: &str = "registry host";
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(bad(host, WHAT, "an IPv6 address needs a closing `]`"));
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad(host, WHAT, format!("`{v6}` is not an IPv6 address")));
        }
        match after.strip_prefix(':') {
            Some(port) => (None, Some(port)),
            None if after.is_empty() => (None, None),
            None => return Err(bad(host, WHAT, "unexpected text after `]`")),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(port) = port
        && !(port.parse::<u16>().is_ok_and(|p| p > 0) && port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad(host, WHAT, format!("`{port}` is not a port number")));
    }
    if let Some(name) = name {
        if name.is_empty() {
            return Err(bad(host, WHAT, "the host name is empty"));
        }
        for label in name.split('.') {
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad(
                    host,
                    WHAT,
                    format!("`{label}` is not a host name label (letters, digits and inner dashes)"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_references_parse_into_their_parts() {
        let digest = format!("sha256:{}", "a".repeat(64));
        // input, registry, repository, tag, digest
        type Case<'a> = (&'a str, Option<&'a str>, &'a str, Option<&'a str>, Option<&'a str>);
        let cases: &[Case] = &[
            ("busybox", None, "busybox", None, None),
            ("busybox:1.35", None, "busybox", Some("1.35"), None),
            ("wharf-test/busybox:1.35", None, "wharf-test/busybox", Some("1.35"), None),
            (
                "127.0.0.1:5055/devops/jack-2048:alpha-7",
                Some("127.0.0.1:5055"),
                "devops/jack-2048",
                Some("alpha-7"),
                None,
            ),
            ("localhost/a/b", Some("localhost"), "a/b", None, None),
            (
                "hub.ecns.io/devops/nginx:6.0.1-alpha.3",
                Some("hub.ecns.io"),
                "devops/nginx",
                Some("6.0.1-alpha.3"),
                None,
            ),
            ("a__b/c---d/e.f_g", None, "a__b/c---d/e.f_g", None, None),
            ("[::1]:5000/x:Latest_1", Some("[::1]:5000"), "x", Some("Latest_1"), None),
            ("x:_tag", None, "x", Some("_tag"), None),
        ];
        for (input, registry, repository, tag, digest_part) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.registry.as_deref(), *registry, "{input}");
            assert_eq!(r.repository, *repository, "{input}");
            assert_eq!(r.tag.as_deref(), *tag, "{input}");
            assert_eq!(r.digest.as_deref(), *digest_part, "{input}");
            assert_eq!(r.to_string(), *input, "round trip");
        }
        let with_digest = format!("example.com:443/app@{digest}");
        let r = Reference::parse(&with_digest).unwrap();
        assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(r.name(), "app");
        assert_eq!(r.to_string(), with_digest);
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let long_tag = format!("x:{}", "t".repeat(129));
        let long_name = format!("{}:1", "n".repeat(256));
        let cases: &[(&str, &str)] = &[
            ("", "it is empty"),
            ("Devops/app", "must be lowercase"),
            ("devops/App:1", "must be lowercase"),
            ("devops/../etc", "`..` is not a path component"),
            ("devops//app", "a path component is empty"),
            ("/app", "a path component is empty"),
            ("app/", "a path component is empty"),
            ("-app", "must start and end"),
            ("app-", "must start and end"),
            ("a._b", "`._` is not a separator"),
            ("a___b", "`___` is not a separator"),
            ("my app:1", "it contains ' '"),
            ("app:1 2", "it contains ' '"),
            ("app;rm -rf /:1", "it contains ' '"),
            ("app;id", "';' is not allowed"),
            ("app$(id)", "'$' is not allowed"),
            ("app`id`", "'`' is not allowed"),
            ("app:", "tag ``: it is empty"),
            ("app:.x", "must not start with `.` or `-`"),
            ("app:-x", "must not start with `.` or `-`"),
            ("app:a/b", "`a` is not a port number"),
            ("app:a$b", "'$' is not allowed"),
            (&long_tag, "129 characters long; at most 128"),
            (&long_name, "256 characters long; at most 255"),
            ("app@sha256:abc", "64 lowercase hex digits"),
            ("app@md5", "expected `sha256:"),
            ("exa_mple.com/app", "is not a host name label"),
            ("example.com:99999/app", "is not a port number"),
            ("example.com:/app", "is not a port number"),
            ("x\n", "it contains '\\n'"),
        ];
        for (input, expected) in cases {
            let err = Reference::parse(input).expect_err(input).to_string();
            assert!(err.contains(expected), "{input:?}: {err}\n  expected: {expected}");
        }
    }

    #[test]
    fn tags_are_checked_alone() {
        assert!(check_tag("alpha-7").is_ok());
        assert!(check_tag(&"t".repeat(128)).is_ok());
        assert!(check_tag(&"t".repeat(129)).is_err());
        assert!(check_tag("a b").is_err());
        assert!(check_component("devops").is_ok());
        assert!(check_component("dev/ops").is_err());
        assert!(check_component("..").is_err());
    }
}
