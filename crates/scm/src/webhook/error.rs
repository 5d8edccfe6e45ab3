use std::time::Duration;

/// Why a delivery's signature or token was refused. The server answers 401 to every
/// variant and starts nothing. No message contains the secret, the received token or
/// the received signature: they name the header and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The binding has no webhook secret, so nothing can be verified. Refused rather
    /// than accepted: an empty secret would make every delivery "valid".
    #[error("no webhook secret is configured for this binding, so its deliveries cannot be verified")]
    NoSecret,

    /// The provider's signature or token header is absent: the webhook was saved
    /// without a secret, or the request does not come from the provider.
    #[error("header `{header}` is missing (set the webhook's secret at the provider to the binding's webhook secret)")]
    MissingHeader { header: &'static str },

    /// The header is present but cannot be a signature of this provider's scheme
    /// (e.g. not `sha256=` followed by 64 hex digits), or is sent more than once.
    #[error("header `{header}` is malformed: {reason}")]
    Malformed { header: &'static str, reason: &'static str },

    /// Well-formed, but it does not match the secret (a wrong secret at the provider,
    /// or a body changed on the way).
    #[error("header `{header}` does not match the binding's webhook secret (or the body was altered)")]
    Mismatch { header: &'static str },

    /// The signature is authentic but its timestamp lies outside the accepted window:
    /// a replayed delivery, or a server clock far off. Only Gitee signs a timestamp.
    #[error(
        "the signed timestamp in `{header}` is {} {} the server's clock; signatures more than {} \
         away are refused (a replayed delivery, or check the server's clock)",
        human(Duration::from_millis(skew.unsigned_abs())),
        if *skew < 0 { "ahead of" } else { "behind" },
        human(*window)
    )]
    Stale {
        header: &'static str,
        /// `now - timestamp` in milliseconds: positive when the signature is old,
        /// negative when it claims to come from the future.
        skew: i64,
        window: Duration,
    },
}

/// Why a verified delivery could not be read. The server answers 400 and starts
/// nothing; the messages name the header or the payload field at fault. Values taken
/// from the payload are shown escaped (`{:?}`) and cut to 80 characters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is larger than the limit given to [`parse`](super::parse); it was not
    /// read any further.
    #[error("the body has {size} bytes; at most {limit} are accepted")]
    TooLarge { size: usize, limit: usize },

    /// The header naming the event (`X-GitHub-Event`, `X-Gitlab-Event`,
    /// `X-Gitee-Event`) is absent, so the request is not a webhook delivery.
    #[error("header `{header}` is missing, so this is not a webhook delivery")]
    MissingEventHeader { header: &'static str },

    /// A header Wharf reads (event name, delivery id) is empty, repeated, too long or
    /// contains characters other than printable ASCII.
    #[error("header `{header}` is not valid: {reason}")]
    InvalidHeader { header: &'static str, reason: &'static str },

    /// The body is not UTF-8 (JSON must be).
    #[error("the body is not valid UTF-8 (invalid byte at offset {valid_up_to})")]
    NotUtf8 { valid_up_to: usize },

    /// The body is not JSON of the event's shape: truncated, not JSON at all, or a
    /// required field missing or of the wrong type. `source` names line and column.
    #[error("the `{event}` payload is not valid: {source}")]
    InvalidJson {
        event: String,
        #[source]
        source: serde_json::Error,
    },

    /// A payload field has a value Wharf refuses: a ref name with shell metacharacters
    /// or `..`, a commit that is not 40 hex digits, a repository address git could
    /// mistake for a command. `field` is the field's path in the provider's payload.
    #[error("field `{field}` is not valid ({value}): {reason}")]
    InvalidField { field: &'static str, value: String, reason: String },
}

impl ParseError {
    pub(crate) fn field(field: &'static str, value: &str, reason: impl Into<String>) -> Self {
        ParseError::InvalidField { field, value: shown(value), reason: reason.into() }
    }
}

/// `value` quoted and escaped, cut to 80 characters, for an error message.
fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 80;
    if value.chars().count() <= MAX_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX_CHARS).collect();
        format!("{head:?}…")
    }
}

/// `1 h 5 min`, `3 min 2 s`, `250 ms`: a duration for people.
fn human(d: Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match (h, m, s) {
        (0, 0, 0) => format!("{} ms", d.as_millis()),
        (0, 0, s) => format!("{s} s"),
        (0, m, 0) => format!("{m} min"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, 0, _) => format!("{h} h"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
        assert_eq!(human(Duration::from_secs(42)), "42 s");
        assert_eq!(human(Duration::from_secs(180)), "3 min");
        assert_eq!(human(Duration::from_secs(182)), "3 min 2 s");
        assert_eq!(human(Duration::from_secs(3600)), "1 h");
        assert_eq!(human(Duration::from_secs(3600 + 300 + 7)), "1 h 5 min");
    }

    #[test]
    fn stale_message_says_which_way_the_clock_is_off() {
        let old =
            VerifyError::Stale { header: "x-gitee-timestamp", skew: 7_200_000, window: Duration::from_secs(3600) };
        assert!(old.to_string().contains("2 h behind"), "{old}");
        let future =
            VerifyError::Stale { header: "x-gitee-timestamp", skew: -5_400_000, window: Duration::from_secs(3600) };
        assert!(future.to_string().contains("1 h 30 min ahead of"), "{future}");
    }

    #[test]
    fn long_values_are_cut_and_escaped() {
        let err = ParseError::field("ref", &format!("a\n{}", "b".repeat(200)), "bad");
        let text = err.to_string();
        assert!(text.contains(r#""a\nbbb"#), "{text}");
        assert!(text.contains('…'), "{text}");
        assert!(text.len() < 200, "{text}");
    }
}
