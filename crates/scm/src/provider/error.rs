use super::title;
use crate::webhook::Provider;

/// Why a call to a provider's API failed. No message contains the binding's token,
/// the OAuth client secret or an authorization code, nor anything the provider
/// answered: messages are Wharf's words for a status (the answer itself goes to the
/// server log), and addresses (which carry Gitee's `access_token`) are never part of
/// a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The call needs the binding's token and the binding has none.
    #[error(
        "the binding has no token for {}: connect it through OAuth or set a personal access token",
        title(*provider)
    )]
    NoToken { provider: Provider },

    /// 401: the token is wrong, expired or revoked.
    #[error(
        "the binding's token was refused by {} ({message}); connect the binding again or set a new token",
        title(*provider)
    )]
    Unauthorized { provider: Provider, message: String },

    /// 403 that is not a rate limit: the token lacks a scope or the user a role.
    #[error(
        "{} refused the request ({message}); the token may lack a scope or the user the rights \
         (GitHub: repo; GitLab: api and Maintainer for webhooks; Gitee: projects, hook)",
        title(*provider)
    )]
    Forbidden { provider: Provider, message: String },

    /// 429, or GitHub's 403 with `x-ratelimit-remaining: 0`.
    #[error(
        "{}'s rate limit is exhausted{}: {message}",
        title(*provider),
        retry_after_secs.map(|s| format!(" (try again in {s} s)")).unwrap_or_default()
    )]
    RateLimited { provider: Provider, retry_after_secs: Option<u64>, message: String },

    /// 404: the repository does not exist, or the token cannot see it.
    #[error("{what} was not found at {} (or the binding's token cannot see it)", title(*provider))]
    NotFound { provider: Provider, what: String },

    /// Any other answer that is not a success (`message`: the status's reason).
    #[error("{} answered {status} {message} (the server log has its answer)", title(*provider))]
    Status { provider: Provider, status: u16, message: String },

    /// The OAuth token endpoint refused the code or the client credentials.
    #[error("{} refused the authorization: {message}", title(*provider))]
    OAuth { provider: Provider, message: String },

    /// The address is internal (loopback, link-local, private…) and the outbound
    /// policy does not allow it; nothing was sent. The message says which address
    /// and how an admin allows it.
    #[error("{message}")]
    Refused { provider: Provider, message: String },

    /// No answer: connection refused, DNS, TLS, timeout.
    #[error("cannot reach {} at {host}: {message}", title(*provider))]
    Network { provider: Provider, host: String, message: String },

    /// An answer that is not the documented shape (not JSON, missing fields).
    #[error("{} answered something its API does not document: {message}", title(*provider))]
    Unexpected { provider: Provider, message: String },

    /// Our own input is unusable (a repository name, an instance URL, a webhook URL).
    #[error("{0}")]
    Invalid(String),
}

impl ProviderError {
    /// The provider's HTTP status, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::Unauthorized { .. } => Some(401),
            ProviderError::Forbidden { .. } => Some(403),
            ProviderError::NotFound { .. } => Some(404),
            ProviderError::RateLimited { .. } => Some(429),
            ProviderError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
