//! The code-hosting providers' REST APIs, as a repository binding uses them: the OAuth
//! authorization-code flow (authorize address, code → token exchange), listing the
//! repositories and branches the token can see, and installing a webhook on a
//! repository. One [`ProviderClient`] per binding and call; `github.rs`, `gitlab.rs`
//! and `gitee.rs` hold each provider's addresses, payload shapes and pagination.
//!
//! | | GitHub | GitLab | Gitee |
//! | --- | --- | --- | --- |
//! | API base (public) | `https://api.github.com` | `https://gitlab.com/api/v4` | `https://gitee.com/api/v5` |
//! | API base (instance URL `U`) | `U/api/v3` (Enterprise Server) | `U/api/v4` | `U/api/v5` |
//! | OAuth pages | `U/login/oauth/authorize`, `U/login/oauth/access_token` | `U/oauth/authorize`, `U/oauth/token` | `U/oauth/authorize`, `U/oauth/token` |
//! | token sent as | `Authorization: Bearer` | `Authorization: Bearer` (OAuth tokens and personal access tokens alike) | `access_token` query parameter |
//! | pagination | `Link: <…>; rel="next"` | `X-Next-Page` | `total_page` header, else a short page |
//! | repository name | `owner/name` | `group/sub/project` (URL-encoded as one segment), or the numeric id | `owner/name` |
//!
//! `U` defaults to `https://github.com`, `https://gitlab.com`, `https://gitee.com`.
//! Listing follows pages of [`DEFAULT_PER_PAGE`] items up to [`DEFAULT_MAX_PAGES`]
//! pages, and stops early at an empty page.
//!
//! Secrets: the token is never part of an error message or of `Debug` output.
//!
//! What the provider answers is never part of an error: a caller learns the status and
//! a reason Wharf wrote ("GitLab answered 401 Unauthorized: the binding's token was
//! refused"); the provider's own text goes to the server log (redacted, shortened).
//! An instance URL is a place an admin chose, and a URL a request could name: calls
//! go through the outbound policy ([`wharf_outbound::Policy`], set on [`HttpClient`]),
//! which refuses loopback, link-local and private addresses an admin did not allow.

mod error;
mod gitee;
mod github;
mod gitlab;

use std::fmt;
use std::time::Duration;

use reqwest::header::{ACCEPT, HeaderMap, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde_json::Value;
use wharf_outbound::Policy;

pub use crate::webhook::Provider;
pub use error::ProviderError;

/// Items asked for per page when listing.
pub const DEFAULT_PER_PAGE: u32 = 100;
/// Pages followed at most when listing (so 2,000 repositories or branches).
pub const DEFAULT_MAX_PAGES: u32 = 20;
/// The whole exchange with the provider, per request.
const TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers larger than this are refused (a list page of 100 repositories is ~600 KB on GitHub).
const MAX_ANSWER_BYTES: usize = 32 << 20;
/// Error text kept from a provider's answer.
const MAX_MESSAGE_CHARS: usize = 300;

/// How a provider is named in messages: `GitHub`, `GitLab`, `Gitee`.
pub fn title(provider: Provider) -> &'static str {
    match provider {
        Provider::GitHub => "GitHub",
        Provider::GitLab => "GitLab",
        Provider::Gitee => "Gitee",
    }
}

/// A repository the binding's token can see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repo {
    /// `owner/name` (GitLab: `group/sub/project`), as given to [`ProviderClient::branches`].
    pub full_name: String,
    /// The https clone address.
    pub clone_url: String,
    /// The ssh clone address (`git@host:owner/name.git`).
    pub ssh_url: String,
    /// `None` for an empty GitLab project.
    pub default_branch: Option<String>,
    /// Anything but public (GitLab's `internal` counts as private).
    pub private: bool,
}

/// What a webhook installed by [`ProviderClient::create_webhook`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    /// Commits pushed to a branch.
    Push,
    /// A tag pushed (GitHub sends these as `push` events).
    TagPush,
    /// A pull/merge request opened, updated or merged.
    MergeRequest,
}

impl HookEvent {
    pub const ALL: [HookEvent; 3] = [HookEvent::Push, HookEvent::TagPush, HookEvent::MergeRequest];
}

/// What the token endpoint granted: an access token, and for providers that issue
/// expiring tokens (GitLab, Gitee, GitHub apps with expiring user tokens) a refresh
/// token and the lifetime in seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
}

impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGrant")
            .field("access_token", &"[redacted]")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A webhook found on a repository (see [`ProviderClient::webhooks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The provider's id of the hook, as text.
    pub id: String,
    /// Where it delivers.
    pub url: String,
}

/// The HTTP client the provider clients share: connection pooling, rustls with the
/// platform's trust store (aws-lc-rs as the only crypto provider), plus extra CA
/// certificates for private instances whose certificates a private CA signed, and the
/// outbound policy (internal addresses only where an admin allowed them).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    policy: Policy,
}

impl HttpClient {
    /// `extra_ca_pem`: a PEM bundle of CA certificates trusted besides the system's;
    /// `policy`: which internal addresses may be called.
    pub fn new(extra_ca_pem: Option<&[u8]>, policy: &Policy) -> Result<HttpClient, ProviderError> {
        let builder = reqwest::Client::builder().timeout(TIMEOUT).connect_timeout(CONNECT_TIMEOUT);
        let mut builder = policy.apply(builder);
        if let Some(pem) = extra_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| ProviderError::Invalid(format!("the CA bundle is not PEM certificates: {}", chain(&e))))?;
            if certs.is_empty() {
                return Err(ProviderError::Invalid(
                    "the CA bundle holds no certificate (expected `-----BEGIN CERTIFICATE-----` blocks)".into(),
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let inner = builder
            .build()
            .map_err(|e| ProviderError::Invalid(format!("cannot set up the HTTP client: {}", chain(&e))))?;
        Ok(HttpClient { inner, policy: policy.clone() })
    }
}

/// A client for one binding: a provider, its instance and (for most calls) a token.
#[derive(Clone)]
pub struct ProviderClient {
    provider: Provider,
    /// The web origin (plus any path prefix of a private instance): OAuth pages live here.
    web: Url,
    /// The REST API base.
    api: Url,
    token: Option<String>,
    http: HttpClient,
    per_page: u32,
    max_pages: u32,
}

impl fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderClient")
            .field("provider", &self.provider)
            .field("web", &self.web.as_str())
            .field("api", &self.api.as_str())
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// The request body of one call.
enum Body {
    None,
    Json(Value),
}

/// An answer read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl ProviderClient {
    /// A client for `provider`. `instance` is the web address of a private instance
    /// (`https://gitlab.example.com`, a GitHub Enterprise Server's `https://github.corp`),
    /// `None` for the public service; the API base is derived from it (see the module
    /// table). An instance given with its API suffix (`…/api/v4`) is accepted too.
    /// `token` is an OAuth access token or a personal access token. The client calls
    /// no internal address until [`ProviderClient::with_http`] gives it a policy that
    /// allows one.
    pub fn new(provider: Provider, instance: Option<&str>, token: Option<&str>) -> Result<Self, ProviderError> {
        let (web, api) = match instance.map(str::trim).filter(|s| !s.is_empty()) {
            None => {
                let (web, api) = match provider {
                    Provider::GitHub => ("https://github.com", "https://api.github.com"),
                    Provider::GitLab => ("https://gitlab.com", "https://gitlab.com/api/v4"),
                    Provider::Gitee => ("https://gitee.com", "https://gitee.com/api/v5"),
                };
                (Url::parse(web).expect("a valid URL"), Url::parse(api).expect("a valid URL"))
            }
            Some(text) => {
                let web = instance_url(text, api_suffix(provider))?;
                let mut api = web.clone();
                extend(&mut api, api_suffix(provider).trim_start_matches('/').split('/'));
                (web, api)
            }
        };
        let http = HttpClient::new(None, &Policy::default())?;
        let token = token.map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
        Ok(ProviderClient { provider, web, api, token, http, per_page: DEFAULT_PER_PAGE, max_pages: DEFAULT_MAX_PAGES })
    }

    /// Sends through `http` (shared, with the server's extra CA certificates and
    /// outbound policy).
    pub fn with_http(mut self, http: &HttpClient) -> Self {
        self.http = http.clone();
        self
    }

    /// The same client with another token (`None`: none).
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
        self
    }

    /// Changes the page size and the number of pages followed (at least 1 each).
    pub fn with_paging(mut self, per_page: u32, max_pages: u32) -> Self {
        self.per_page = per_page.max(1);
        self.max_pages = max_pages.max(1);
        self
    }

    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// The REST API base, e.g. `https://gitlab.example.com/api/v4`.
    pub fn api_base(&self) -> &str {
        self.api.as_str().trim_end_matches('/')
    }

    /// The web base, where the OAuth pages are.
    pub fn web_base(&self) -> &str {
        self.web.as_str().trim_end_matches('/')
    }

    /// Where to send the person's browser to authorize the OAuth app. The provider
    /// sends the browser back to `redirect_uri` with `?code=…&state=…`.
    pub fn authorize_url(&self, client_id: &str, redirect_uri: &str, state: &str) -> String {
        match self.provider {
            Provider::GitHub => github::authorize_url(&self.web, client_id, redirect_uri, state),
            Provider::GitLab => gitlab::authorize_url(&self.web, client_id, redirect_uri, state),
            Provider::Gitee => gitee::authorize_url(&self.web, client_id, redirect_uri, state),
        }
        .to_string()
    }

    /// Exchanges an authorization code for an access token (the OAuth app's client id
    /// and secret, and the `redirect_uri` the authorization was asked with).
    pub async fn exchange_code(
        &self,
        client_id: &str,
        client_secret: &str,
        code: &str,
        redirect_uri: &str,
    ) -> Result<TokenGrant, ProviderError> {
        let (url, form): (Url, Vec<(&str, &str)>) = match self.provider {
            Provider::GitHub => github::token_request(&self.web, client_id, client_secret, code, redirect_uri),
            Provider::GitLab => gitlab::token_request(&self.web, client_id, client_secret, code, redirect_uri),
            Provider::Gitee => gitee::token_request(&self.web, client_id, client_secret, code, redirect_uri),
        };
        self.token_call(url, &form, &[client_secret, code]).await
    }

    /// Trades a refresh token for a new access token (and, as GitLab and Gitee do, a
    /// new refresh token: the old one stops working). GitLab wants the `redirect_uri`
    /// of the authorization again; Gitee wants only the refresh token.
    pub async fn refresh(
        &self,
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
        redirect_uri: &str,
    ) -> Result<TokenGrant, ProviderError> {
        let (url, form): (Url, Vec<(&str, &str)>) = match self.provider {
            Provider::GitHub => github::refresh_request(&self.web, client_id, client_secret, refresh_token),
            Provider::GitLab => {
                gitlab::refresh_request(&self.web, client_id, client_secret, refresh_token, redirect_uri)
            }
            Provider::Gitee => gitee::refresh_request(&self.web, refresh_token),
        };
        self.token_call(url, &form, &[client_secret, refresh_token]).await
    }

    /// POSTs a form to a token endpoint and reads the grant (RFC 6749 §5).
    async fn token_call(&self, url: Url, form: &[(&str, &str)], secrets: &[&str]) -> Result<TokenGrant, ProviderError> {
        let request = self.http.inner.post(url).form(form).header(ACCEPT, "application/json");
        let answer = self.send(request.header(USER_AGENT, user_agent()), secrets).await?;
        let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
        // OAuth errors (RFC 6749 §5.2): GitHub answers them with 200, the others with 400/401.
        // Only a code Wharf knows is named; the provider's description goes to the log.
        if let Some(error) = json.as_ref().and_then(|j| j.get("error")).filter(|e| !e.is_null()) {
            self.log_answer("the token endpoint refused", &answer, secrets);
            return Err(ProviderError::OAuth { provider: self.provider, message: oauth_reason(error.as_str()) });
        }
        if !answer.status.is_success() {
            self.log_answer("the token endpoint refused", &answer, secrets);
            let message = format!("its token endpoint answered {}", status_text(answer.status));
            return Err(ProviderError::OAuth { provider: self.provider, message });
        }
        let Some(json) = json else {
            return Err(self.unexpected("the token endpoint's answer is not JSON", &answer, secrets));
        };
        let text = |key: &str| json.get(key).and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty());
        let Some(access_token) = text("access_token") else {
            return Err(ProviderError::Unexpected {
                provider: self.provider,
                message: "the token endpoint answered without an `access_token`".into(),
            });
        };
        // `expires_in` is a number of seconds; some servers send it as text.
        let expires_in = match json.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        };
        Ok(TokenGrant {
            access_token: access_token.to_owned(),
            refresh_token: text("refresh_token").map(str::to_owned),
            expires_in: expires_in.filter(|&s| s > 0),
        })
    }

    /// Every repository the token can see (following pages, see the module docs).
    pub async fn repositories(&self) -> Result<Vec<Repo>, ProviderError> {
        let (url, what) = match self.provider {
            Provider::GitHub => (github::repos_url(&self.api), "the repository list"),
            Provider::GitLab => (gitlab::repos_url(&self.api), "the project list"),
            Provider::Gitee => (gitee::repos_url(&self.api), "the repository list"),
        };
        let pages = self.pages(url, what).await?;
        pages
            .into_iter()
            .map(|item| match self.provider {
                Provider::GitHub => github::repo(item),
                Provider::GitLab => gitlab::repo(item),
                Provider::Gitee => gitee::repo(item),
            })
            .collect::<Result<Vec<_>, serde_json::Error>>()
            .map_err(|e| ProviderError::Unexpected {
                provider: self.provider,
                message: self.clean(&format!("a repository in the list is not in the documented shape: {e}"), &[]),
            })
    }

    /// The names of a repository's branches. `repo` is `owner/name` (GitLab: the
    /// project's full path, or its numeric id).
    pub async fn branches(&self, repo: &str) -> Result<Vec<String>, ProviderError> {
        let url = match self.provider {
            Provider::GitHub => github::branches_url(&self.api, repo)?,
            Provider::GitLab => gitlab::branches_url(&self.api, repo)?,
            Provider::Gitee => gitee::branches_url(&self.api, repo)?,
        };
        #[derive(serde::Deserialize)]
        struct Branch {
            name: String,
        }
        let pages = self.pages(url, &format!("repository `{repo}`")).await?;
        pages
            .into_iter()
            .map(|item| serde_json::from_value::<Branch>(item).map(|b| b.name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ProviderError::Unexpected {
                provider: self.provider,
                message: self.clean(&format!("a branch in the list is not in the documented shape: {e}"), &[]),
            })
    }

    /// Installs a webhook on `repo` that posts `events` as JSON to `url`, signed or
    /// authenticated with `secret` as the provider does (GitHub: `X-Hub-Signature-256`;
    /// GitLab: `X-Gitlab-Token`; Gitee: signature mode, `X-Gitee-Token` + timestamp).
    pub async fn create_webhook(
        &self,
        repo: &str,
        url: &str,
        secret: &str,
        events: &[HookEvent],
    ) -> Result<Option<String>, ProviderError> {
        if events.is_empty() {
            return Err(ProviderError::Invalid("a webhook needs at least one event".into()));
        }
        match Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(ProviderError::Invalid(format!("the webhook address `{url}` is not an http(s) URL"))),
        }
        if secret.is_empty() {
            return Err(ProviderError::Invalid("a webhook needs a secret (the binding's webhook secret)".into()));
        }
        let (hooks, body) = match self.provider {
            Provider::GitHub => (github::hooks_url(&self.api, repo)?, github::hook_body(url, secret, events)),
            Provider::GitLab => (gitlab::hooks_url(&self.api, repo)?, gitlab::hook_body(url, secret, events)),
            Provider::Gitee => (gitee::hooks_url(&self.api, repo)?, gitee::hook_body(url, secret, events)),
        };
        let answer =
            self.call(Method::POST, hooks, Body::Json(body), &format!("repository `{repo}`"), &[secret]).await?;
        Ok(serde_json::from_slice::<Value>(&answer.body).ok().and_then(|j| id_text(&j["id"])))
    }

    /// The webhooks installed on `repo` (all pages), with where each delivers.
    pub async fn webhooks(&self, repo: &str) -> Result<Vec<Hook>, ProviderError> {
        let url = match self.provider {
            Provider::GitHub => github::hooks_url(&self.api, repo)?,
            Provider::GitLab => gitlab::hooks_url(&self.api, repo)?,
            Provider::Gitee => gitee::hooks_url(&self.api, repo)?,
        };
        let items = self.pages(url, &format!("the webhooks of repository `{repo}`")).await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                // GitHub keeps the address in `config.url`; GitLab and Gitee in `url`.
                let url = item["config"]["url"].as_str().or_else(|| item["url"].as_str())?;
                Some(Hook { id: id_text(&item["id"]).unwrap_or_default(), url: url.to_owned() })
            })
            .collect())
    }

    // -----------------------------------------------------------------------------
    // Plumbing

    /// GETs `first` and the pages after it; each page must be a JSON array.
    async fn pages(&self, first: Url, what: &str) -> Result<Vec<Value>, ProviderError> {
        let mut url = first;
        set_query(&mut url, &[("per_page", &self.per_page.to_string()), ("page", "1")]);
        let mut out = Vec::new();
        let mut previous_first: Option<Value> = None;
        for number in 1..=self.max_pages {
            let answer = self.call(Method::GET, url.clone(), Body::None, what, &[]).await?;
            let items: Vec<Value> = match serde_json::from_slice(&answer.body) {
                Ok(Value::Array(items)) => items,
                _ => return Err(self.unexpected(&format!("{what} is not a JSON array"), &answer, &[])),
            };
            // An empty page ends the list; so does a page that repeats the previous one
            // (an endpoint that ignores `page`).
            if items.is_empty() || previous_first.as_ref() == items.first() {
                break;
            }
            previous_first = items.first().cloned();
            let count = items.len();
            out.extend(items);
            let next = match self.provider {
                Provider::GitHub => github::next_page(&self.api, &answer.headers)?,
                Provider::GitLab => gitlab::next_page(&answer.headers, number, count, self.per_page),
                Provider::Gitee => gitee::next_page(&answer.headers, number, count, self.per_page),
            };
            match next {
                None => break,
                Some(Next::Url(next)) => url = next,
                Some(Next::Page(page)) => set_query(&mut url, &[("page", &page.to_string())]),
            }
        }
        Ok(out)
    }

    /// One authenticated API call; any answer but 2xx is an error.
    async fn call(
        &self,
        method: Method,
        mut url: Url,
        body: Body,
        what: &str,
        secrets: &[&str],
    ) -> Result<Answer, ProviderError> {
        let token = self.token.as_deref().ok_or(ProviderError::NoToken { provider: self.provider })?;
        if self.provider == Provider::Gitee {
            set_query(&mut url, &[("access_token", token)]);
        }
        let mut request = self.http.inner.request(method, url).header(USER_AGENT, user_agent());
        request = match self.provider {
            Provider::GitHub => request
                .bearer_auth(token)
                .header(ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", github::API_VERSION),
            Provider::GitLab => request.bearer_auth(token).header(ACCEPT, "application/json"),
            Provider::Gitee => request.header(ACCEPT, "application/json"),
        };
        request = match body {
            Body::None => request,
            Body::Json(json) => request.json(&json),
        };
        let answer = self.send(request, secrets).await?;
        if answer.status.is_success() {
            return Ok(answer);
        }
        Err(self.status_error(&answer, what, secrets))
    }

    /// Sends and reads the whole answer, whatever its status. The address is checked
    /// against the outbound policy first (an IP literal meets no resolver).
    async fn send(&self, request: reqwest::RequestBuilder, secrets: &[&str]) -> Result<Answer, ProviderError> {
        let request = request.build().map_err(|e| self.network(e, secrets))?;
        if let Err(refused) = self.http.policy.check_url(request.url()) {
            return Err(ProviderError::Refused { provider: self.provider, message: refused.to_string() });
        }
        let mut response = self.http.inner.execute(request).await.map_err(|e| self.network(e, secrets))?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.network(e, secrets))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ProviderError::Unexpected {
                    provider: self.provider,
                    message: format!("the answer is larger than {} MiB", MAX_ANSWER_BYTES >> 20),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer { status, headers, body })
    }

    /// The error for an answer that is not a success: the status and Wharf's words
    /// for it; what the provider said is logged, never answered.
    fn status_error(&self, answer: &Answer, what: &str, secrets: &[&str]) -> ProviderError {
        self.log_answer(what, answer, secrets);
        let provider = self.provider;
        let message = status_text(answer.status);
        let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let retry_after_secs = || {
            header("retry-after").and_then(|v| v.parse::<u64>().ok()).or_else(|| {
                // GitHub: x-ratelimit-reset is the epoch second the window resets.
                let reset = header("x-ratelimit-reset")?.parse::<u64>().ok()?;
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
                Some(reset.saturating_sub(now))
            })
        };
        // GitHub's secondary rate limits are 403s that say so only in the body.
        let says_rate_limit = || String::from_utf8_lossy(&answer.body).to_ascii_lowercase().contains("rate limit");
        match answer.status.as_u16() {
            401 => ProviderError::Unauthorized { provider, message },
            429 => ProviderError::RateLimited { provider, retry_after_secs: retry_after_secs(), message },
            403 if header("x-ratelimit-remaining") == Some("0") || says_rate_limit() => {
                ProviderError::RateLimited { provider, retry_after_secs: retry_after_secs(), message }
            }
            403 => ProviderError::Forbidden { provider, message },
            404 => ProviderError::NotFound { provider, what: what.to_owned() },
            status => ProviderError::Status {
                provider,
                status,
                message: answer.status.canonical_reason().unwrap_or("(no reason)").to_owned(),
            },
        }
    }

    /// Logs what the provider answered (redacted, shortened): the only place it goes.
    fn log_answer(&self, what: &str, answer: &Answer, secrets: &[&str]) {
        let body = self.clean(&String::from_utf8_lossy(&answer.body), secrets);
        tracing::warn!(provider = %self.provider, api = %self.api_base(), status = answer.status.as_u16(), %what, %body, "provider answer");
    }

    fn unexpected(&self, what: &str, answer: &Answer, secrets: &[&str]) -> ProviderError {
        self.log_answer(what, answer, secrets);
        ProviderError::Unexpected {
            provider: self.provider,
            message: format!("{what} (the server log has the answer)"),
        }
    }

    fn network(&self, e: reqwest::Error, secrets: &[&str]) -> ProviderError {
        if let Some(refused) = wharf_outbound::refusal(&e) {
            return ProviderError::Refused { provider: self.provider, message: refused.to_string() };
        }
        let mut message =
            if e.is_timeout() { format!("no answer within {} s", TIMEOUT.as_secs()) } else { chain(&e.without_url()) };
        // Without a TLS feature, reqwest's connector refuses https before connecting.
        if self.api.scheme() == "https" && message.contains("scheme is not http") {
            message =
                "https is not available: this build has no TLS support (reqwest's `rustls` feature is off)".into();
        }
        ProviderError::Network {
            provider: self.provider,
            host: self.api.host_str().unwrap_or("?").to_owned(),
            message: self.clean(&message, secrets),
        }
    }

    /// Redacts the token and `secrets`, drops control characters, shortens.
    fn clean(&self, text: &str, secrets: &[&str]) -> String {
        let mut text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        for secret in self.token.as_deref().into_iter().chain(secrets.iter().copied()) {
            if secret.len() >= 4 {
                text = text.replace(secret, "[redacted]");
            }
        }
        if text.chars().count() > MAX_MESSAGE_CHARS {
            text = text.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
        }
        text
    }
}

/// An id as text, whether the provider sent a number or a string.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// What comes after a page.
enum Next {
    Url(Url),
    Page(u32),
}

fn user_agent() -> String {
    format!("wharf/{}", env!("CARGO_PKG_VERSION"))
}

/// The API path below an instance's web address.
fn api_suffix(provider: Provider) -> &'static str {
    match provider {
        Provider::GitHub => "/api/v3",
        Provider::GitLab => "/api/v4",
        Provider::Gitee => "/api/v5",
    }
}

/// Reads an instance's web address: http(s), a host, no credentials, query or
/// fragment; a trailing slash and a trailing API suffix are dropped.
fn instance_url(text: &str, suffix: &str) -> Result<Url, ProviderError> {
    let bad = |why: &str| ProviderError::Invalid(format!("the instance URL `{text}` is not usable: {why}"));
    let mut url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("expected http:// or https://"));
    }
    if url.host().is_none() {
        return Err(bad("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials belong in the binding's token, not in the URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query or fragment"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    let path = path.strip_suffix(suffix).unwrap_or(&path).to_owned();
    url.set_path(if path.is_empty() { "/" } else { &path });
    Ok(url)
}

/// Appends path segments (each percent-encoded, `/` included).
fn extend<'a>(url: &mut Url, segments: impl IntoIterator<Item = &'a str>) {
    url.path_segments_mut().expect("http(s) URLs have a path").pop_if_empty().extend(segments);
}

/// A copy of `base` with `segments` appended.
/// The authorize page of a standard OAuth 2 code flow (`/oauth/authorize` with
/// `response_type=code`), as GitLab and Gitee serve it.
fn standard_authorize_url(web: &Url, client_id: &str, redirect_uri: &str, state: &str, scope: &str) -> Url {
    let mut url = join(web, &["oauth", "authorize"]);
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("state", state)
        .append_pair("scope", scope);
    url
}

fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    extend(&mut url, segments.iter().copied());
    url
}

/// Sets query parameters, replacing any of the same name.
fn set_query(url: &mut Url, pairs: &[(&str, &str)]) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !pairs.iter().any(|(name, _)| name == k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut query = url.query_pairs_mut();
    query.clear();
    for (k, v) in &kept {
        query.append_pair(k, v);
    }
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
}

/// `owner/name` for GitHub and Gitee: two segments of letters, digits, `.`, `_`, `-`.
fn owner_and_name(repo: &str) -> Result<(&str, &str), ProviderError> {
    match repo.split_once('/') {
        Some((owner, name)) if path_segment_ok(owner) && path_segment_ok(name) => Ok((owner, name)),
        _ => Err(ProviderError::Invalid(format!(
            "`{repo}` is not a repository name: expected `owner/name` (letters, digits, `.`, `_`, `-`)"
        ))),
    }
}

fn path_segment_ok(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 255
        && segment != "."
        && segment != ".."
        && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `401 Unauthorized`: a status as Wharf names it.
fn status_text(status: StatusCode) -> String {
    format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("(no reason)"))
}

/// An OAuth error code (RFC 6749 §5.2, and GitHub's own) in Wharf's words; a code
/// Wharf does not know is not repeated (it is the far side's text).
fn oauth_reason(code: Option<&str>) -> String {
    let code = code.unwrap_or("");
    match code {
        "invalid_grant" | "bad_verification_code" => {
            format!("{code}: the authorization code or refresh token is invalid, expired or already used")
        }
        "invalid_client" | "incorrect_client_credentials" | "unauthorized_client" => {
            format!("{code}: the OAuth app's client id or secret was refused")
        }
        "redirect_uri_mismatch" => format!("{code}: the redirect_uri is not the one registered with the OAuth app"),
        "invalid_request" | "unsupported_grant_type" | "invalid_scope" | "access_denied" => code.to_owned(),
        _ => "an OAuth error Wharf does not know (the server log has the answer)".to_owned(),
    }
}

/// An error and its sources, joined by `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// A JSON object with the three event flags GitLab and Gitee name alike.
fn event_flags(events: &[HookEvent]) -> serde_json::Map<String, Value> {
    let mut flags = serde_json::Map::new();
    flags.insert("push_events".into(), Value::Bool(events.contains(&HookEvent::Push)));
    flags.insert("tag_push_events".into(), Value::Bool(events.contains(&HookEvent::TagPush)));
    flags.insert("merge_requests_events".into(), Value::Bool(events.contains(&HookEvent::MergeRequest)));
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_urls_give_the_api_base() {
        let c = ProviderClient::new(Provider::GitLab, Some("https://git.example.com/"), None).unwrap();
        assert_eq!(c.api_base(), "https://git.example.com/api/v4");
        assert_eq!(c.web_base(), "https://git.example.com");
        let c = ProviderClient::new(Provider::GitLab, Some("https://git.example.com/gl/api/v4/"), None).unwrap();
        assert_eq!(c.api_base(), "https://git.example.com/gl/api/v4");
        assert_eq!(c.web_base(), "https://git.example.com/gl");
        let c = ProviderClient::new(Provider::GitHub, Some("http://127.0.0.1:9000"), None).unwrap();
        assert_eq!(c.api_base(), "http://127.0.0.1:9000/api/v3");
        let c = ProviderClient::new(Provider::GitHub, None, None).unwrap();
        assert_eq!((c.api_base(), c.web_base()), ("https://api.github.com", "https://github.com"));
        let c = ProviderClient::new(Provider::Gitee, None, None).unwrap();
        assert_eq!((c.api_base(), c.web_base()), ("https://gitee.com/api/v5", "https://gitee.com"));
        for bad in ["ftp://x", "https://user:pw@x", "https://x/?a=b", "not a url"] {
            assert!(ProviderClient::new(Provider::GitLab, Some(bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn repository_names_are_checked_before_any_call() {
        assert_eq!(owner_and_name("o/r").unwrap(), ("o", "r"));
        for bad in ["o", "o/r/x", "../r", "o/..", "o/r?x", "o/r#", "/r", "o/", "o/r x"] {
            assert!(owner_and_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let c = ProviderClient::new(Provider::GitHub, None, Some("ghp_secret")).unwrap();
        assert!(!format!("{c:?}").contains("ghp_secret"));
    }
}
