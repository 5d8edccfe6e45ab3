//! The code hosts' APIs as the server uses them: one shared HTTP client (rustls, the
//! system's trust store plus `ca_file`), OAuth tokens refreshed before use when they
//! expire, and installing the webhook of a pipeline's repository when a pipeline with
//! an `events` trigger is saved.
//!
//! Webhook installation ([`Forges::install_webhook`]), per pipeline save:
//!
//! 1. The pipeline needs an `events` trigger and a `source.repo` on a host.
//! 2. The binding is `source.binding`, or else the one GitHub/GitLab/Gitee binding
//!    whose instance serves the repository's host (none: nothing to do; several: the
//!    answer asks for `source.binding`). Either way only bindings the pipeline's
//!    creator may view count ([`creator_sees`]): another user's binding is never used
//!    for, nor named to, a pipeline that is not theirs.
//! 3. Without `public_url`, without a token or a webhook secret, or for Gitee without
//!    an `https` `public_url` (Gitee's signature does not cover the body, so it must
//!    not travel in clear), the answer says `manual`, with the address and secret to
//!    give the provider by hand.
//! 4. Otherwise the repository's hooks are listed; one that already delivers to the
//!    binding's address is `present` (so saving again creates no duplicate), else one
//!    is created with every event Wharf handles: `installed`. A provider error is
//!    `failed`, with the provider's reason. The pipeline is saved whatever happens.
//!
//! Installs of the same binding and repository run one at a time, so two saves at
//! once still create one hook.

use crate::{AppState, ServerConfig, ServerError};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wharf_core::git::GitUrl;
use wharf_core::model::{Pipeline, TriggerKind};
use wharf_scm::provider::{HookEvent, HttpClient, Provider, ProviderClient, ProviderError, TokenGrant, title};
use wharf_store::bindings::{Binding, StoredGrant};
use wharf_store::{Store, now_ms};

/// A token this close to its expiry is refreshed before use.
const REFRESH_MARGIN_MS: i64 = 60_000;

pub struct Forges {
    /// Built at the first call to a forge (or at start when `ca_file` is set, so a bad
    /// bundle is refused there): loading the platform's trust store takes tens of
    /// milliseconds and some memory that a server without bindings never needs.
    http: std::sync::OnceLock<HttpClient>,
    /// The outbound policy (`outbound_allow`), for the other clients the server builds.
    pub policy: wharf_outbound::Policy,
    public_url: Option<String>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while a webhook delivery decides which pipelines to start and starts
    /// them, so two events for one commit (a merge and its push) cannot both start a
    /// pipeline (see [`crate::hooks`]).
    pub(crate) event_gate: tokio::sync::Mutex<()>,
}

impl Forges {
    pub fn new(config: &ServerConfig) -> Result<Forges, ServerError> {
        let pem = match &config.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|source| ServerError::Io {
                context: format!("cannot read the CA bundle (ca_file) {}", path.display()),
                source,
            })?),
            None => None,
        };
        let policy =
            wharf_outbound::Policy::new(&config.outbound_allow).map_err(|e| ServerError::Config(e.to_string()))?;
        let http = std::sync::OnceLock::new();
        if let (Some(pem), Some(path)) = (&pem, &config.ca_file) {
            let client = HttpClient::new(Some(pem), &policy)
                .map_err(|e| ServerError::Config(format!("ca_file {}: {e}", path.display())))?;
            let _ = http.set(client);
        }
        let public_url = match config.public_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => Some(check_public_url(url).map_err(ServerError::Config)?),
            None => None,
        };
        Ok(Forges { http, policy, public_url, locks: Mutex::default(), event_gate: tokio::sync::Mutex::new(()) })
    }

    /// One lock per `key`, held until the guard drops.
    async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            // Keys are bindings and repositories: a handful, but never let them pile up.
            if locks.len() > 10_000 {
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// A client for the binding's provider, with a token that is not about to expire
    /// (refreshed first when it is; see [`Forges::fresh_token`]).
    pub async fn client(&self, store: &Store, binding: &Binding) -> Result<ProviderClient, ProviderError> {
        let provider = provider_of(binding)?;
        let token = self.fresh_token(store, provider, binding).await?;
        Ok(self.bare_client(binding, provider)?.with_token(token.as_deref()))
    }

    /// A client without a token (OAuth pages and the code exchange).
    pub fn bare_client(&self, binding: &Binding, provider: Provider) -> Result<ProviderClient, ProviderError> {
        let client = ProviderClient::new(provider, binding.url.as_deref(), None)?;
        Ok(client.with_http(self.http()?))
    }

    /// The shared HTTP client, built on first use (see [`Forges::http`]).
    fn http(&self) -> Result<&HttpClient, ProviderError> {
        if let Some(http) = self.http.get() {
            return Ok(http);
        }
        let built = HttpClient::new(None, &self.policy)?;
        Ok(self.http.get_or_init(|| built))
    }

    /// The binding's token; when it expires within a minute and a refresh token is
    /// stored, a new one from the provider (stored, with its refresh token and expiry,
    /// before it is used). One refresh per binding at a time: a refresh token works
    /// once at GitLab and Gitee.
    pub async fn fresh_token(
        &self,
        store: &Store,
        provider: Provider,
        binding: &Binding,
    ) -> Result<Option<String>, ProviderError> {
        if !expiring(binding) {
            return Ok(binding.token.clone());
        }
        let _one_at_a_time = self.lock(format!("refresh/{}", binding.name)).await;
        let unstored = |e: wharf_store::StoreError| {
            ProviderError::Invalid(format!("binding `{}`: cannot read or store its token: {e}", binding.name))
        };
        // Another request may have refreshed it while this one waited.
        let binding = store.binding(&binding.name).await.map_err(unstored)?;
        if !expiring(&binding) {
            return Ok(binding.token);
        }
        let expired = |why: &str| ProviderError::Unauthorized {
            provider,
            message: format!("the OAuth token of binding `{}` expired and {why}", binding.name),
        };
        let Some(refresh_token) = binding.refresh_token.as_deref() else {
            return Err(expired("no refresh token is stored"));
        };
        let (Some(client_id), Some(client_secret)) = (binding.client_id.as_deref(), binding.client_secret.as_deref())
        else {
            return Err(expired("the binding has no OAuth app (client id and secret) to refresh it with"));
        };
        let redirect_uri = binding.oauth_redirect_uri.as_deref().unwrap_or("");
        let grant = self
            .bare_client(&binding, provider)?
            .refresh(client_id.trim(), client_secret, refresh_token, redirect_uri)
            .await?;
        let stored = store.set_binding_grant(&binding.name, &stored_grant(&grant, None)).await.map_err(unstored)?;
        tracing::info!(binding = %binding.name, %provider, "OAuth token refreshed");
        Ok(stored.token)
    }

    /// Installs (or finds) the webhook of `pipeline`'s repository, as the module
    /// docs say. `None` when there is nothing to install: no `events` trigger, no
    /// repository on a host, no binding for its host. `request_host` (the `Host` the
    /// save came to) is used to suggest an address when `public_url` is not set.
    pub async fn install_webhook(
        &self,
        state: &AppState,
        pipeline: &Pipeline,
        creator: &str,
        request_host: Option<&str>,
    ) -> Option<HookInstall> {
        if !pipeline.triggers.iter().any(|t| matches!(t.kind, TriggerKind::Events { .. })) {
            return None;
        }
        let source = pipeline.source.as_ref()?;
        let repo = GitUrl::parse(&source.repo)?;
        if repo.is_local() {
            // Saved all the same (a git hook could post to Wharf), but said now, not
            // discovered when nothing ever fires.
            return Some(HookInstall {
                binding: String::new(),
                repository: source.repo.clone(),
                status: HookStatus::Manual,
                url: String::new(),
                hook_id: None,
                message: format!(
                    "source.repo `{}` is a repository on this server's disk: no code host sends its push or \
                     merge request events, so the `events` trigger never fires by itself (start runs by hand, \
                     with a timer, or from the repository's own git hook)",
                    source.repo
                ),
            });
        }
        let (host, path) = (repo.host().to_owned(), repo.path().to_owned());
        let binding = match self.binding_for(state, source.binding.as_deref(), &host, creator).await {
            Ok(Some(binding)) => binding,
            Ok(None) => return None,
            Err(report) => return Some(*report),
        };
        let provider = provider_of(&binding).ok()?;
        let repository = match instance_prefix(&binding, provider) {
            Some(prefix) if !prefix.is_empty() => path.strip_prefix(&format!("{prefix}/"))?.to_owned(),
            _ => path,
        };
        let hook_path = format!("/hooks/{}/{}", provider.as_str(), binding.name);
        let report = |status: HookStatus, url: String, hook_id: Option<String>, message: String| {
            match status {
                HookStatus::Installed | HookStatus::Present => {
                    tracing::info!(binding = %binding.name, repository = %repository, %status, "{message}")
                }
                HookStatus::Manual | HookStatus::Failed => {
                    tracing::warn!(binding = %binding.name, repository = %repository, %status, "{message}")
                }
            }
            Some(HookInstall {
                binding: binding.name.clone(),
                repository: repository.clone(),
                status,
                url,
                hook_id,
                message,
            })
        };
        let by_hand = |url: &str| {
            format!(
                "add it by hand at {}: repository `{repository}` → webhooks, URL {url}, content type JSON, the \
                 binding's webhook secret{}, events push, tag push and merge/pull requests",
                title(provider),
                if provider == Provider::Gitee { " in signature mode" } else { "" }
            )
        };
        let Some(public_url) = &self.public_url else {
            let url = match request_host {
                Some(host) => format!("http://{host}{hook_path}"),
                None => format!("<this server's public address>{hook_path}"),
            };
            let message = format!(
                "the webhook was not installed: the server's `public_url` is not set, so Wharf cannot tell {} where \
                 to send events; set public_url (WHARF_PUBLIC_URL) and save again, or {}",
                title(provider),
                by_hand(&url)
            );
            return report(HookStatus::Manual, url, None, message);
        };
        let url = format!("{public_url}{hook_path}");
        if provider == Provider::Gitee && !public_url.starts_with("https://") {
            let message = format!(
                "the webhook was not installed: Gitee's signature covers a timestamp, not the body, so over plain \
                 http anyone on the path could replay a signature with a body of their own; give public_url an \
                 https:// address, or, accepting that risk, {}",
                by_hand(&url)
            );
            return report(HookStatus::Manual, url, None, message);
        }
        let Some(secret) = binding.webhook_secret.as_deref().filter(|s| !s.is_empty()) else {
            let message = format!(
                "the webhook was not installed: binding `{}` has no webhook secret (set `webhook_secret`), and Wharf \
                 refuses unsigned deliveries",
                binding.name
            );
            return report(HookStatus::Manual, url, None, message);
        };
        if binding.token.is_none() {
            let message = format!(
                "the webhook was not installed: binding `{}` has no token (connect it through OAuth or set a \
                 personal access token and save again), or {}",
                binding.name,
                by_hand(&url)
            );
            return report(HookStatus::Manual, url, None, message);
        }
        let _one_at_a_time = self.lock(format!("hook/{}/{repository}", binding.name)).await;
        let client = match self.client(&state.store, &binding).await {
            Ok(client) => client,
            Err(e) => return report(HookStatus::Failed, url, None, format!("the webhook was not installed: {e}")),
        };
        let same = |a: &str| a.trim_end_matches('/') == url.trim_end_matches('/');
        match client.webhooks(&repository).await {
            Ok(hooks) => {
                if let Some(hook) = hooks.iter().find(|h| same(&h.url)) {
                    let message = format!("the webhook is already installed on `{repository}` (hook {})", hook.id);
                    return report(HookStatus::Present, url, Some(hook.id.clone()), message);
                }
            }
            Err(e) => return report(HookStatus::Failed, url, None, format!("the webhook was not installed: {e}")),
        }
        match client.create_webhook(&repository, &url, secret, &HookEvent::ALL).await {
            Ok(id) => {
                let message = format!("the webhook was installed on `{repository}`");
                report(HookStatus::Installed, url, id, message)
            }
            Err(e) => report(HookStatus::Failed, url, None, format!("the webhook was not installed: {e}")),
        }
    }

    /// The binding whose webhook serves a repository on `host`: `named` when given,
    /// else the one provider binding for that host, among the bindings `creator` may
    /// view. `Err` is a report to answer.
    async fn binding_for(
        &self,
        state: &AppState,
        named: Option<&str>,
        host: &str,
        creator: &str,
    ) -> Result<Option<Binding>, Box<HookInstall>> {
        let failed = |binding: &str, message: String| {
            Box::new(HookInstall {
                binding: binding.to_owned(),
                repository: String::new(),
                status: HookStatus::Failed,
                url: String::new(),
                hook_id: None,
                message,
            })
        };
        if let Some(name) = named {
            let found = match state.store.binding(name).await {
                Ok(binding) => match crate::authz::creator_sees(&state.store, creator, &binding).await {
                    Ok(true) => Ok(binding),
                    Ok(false) => Err(wharf_store::StoreError::NotFound(format!("binding `{name}`"))),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            return match found {
                Ok(binding) if binding.provider.parse::<Provider>().is_ok() => Ok(Some(binding)),
                // A plain git binding has no API and no webhook endpoint.
                Ok(_) => Ok(None),
                Err(wharf_store::StoreError::NotFound(_)) => Err(failed(
                    name,
                    format!("the webhook was not installed: there is no binding named `{name}` (source.binding)"),
                )),
                Err(e) => Err(failed(name, format!("the webhook was not installed: {e}"))),
            };
        }
        let bindings = match state.store.bindings().await {
            Ok(bindings) => bindings,
            Err(e) => return Err(failed("", format!("the webhook was not installed: {e}"))),
        };
        let mut serving: Vec<Binding> = Vec::new();
        for binding in bindings {
            if !binding.provider.parse::<Provider>().is_ok_and(|p| instance_host(&binding, p).as_deref() == Some(host))
            {
                continue;
            }
            match crate::authz::creator_sees(&state.store, creator, &binding).await {
                Ok(true) => serving.push(binding),
                Ok(false) => {}
                Err(e) => return Err(failed("", format!("the webhook was not installed: {e}"))),
            }
        }
        match serving.len() {
            0 => Ok(None),
            1 => Ok(serving.pop()),
            _ => {
                let names: Vec<String> = serving.iter().map(|b| format!("`{}`", b.name)).collect();
                Err(failed(
                    "",
                    format!(
                        "the webhook was not installed: bindings {} all serve {host}; name one as source.binding",
                        names.join(", ")
                    ),
                ))
            }
        }
    }
}

/// What became of a pipeline's webhook when it was saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HookStatus {
    /// Wharf created the hook now.
    Installed,
    /// A hook delivering to this server's address was already there.
    Present,
    /// Wharf cannot install it (no public_url, token or secret; Gitee over http): a
    /// person must, as the message says.
    Manual,
    /// The provider refused or failed; the message says why.
    Failed,
}

impl std::fmt::Display for HookStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookStatus::Installed => "installed",
            HookStatus::Present => "present",
            HookStatus::Manual => "manual",
            HookStatus::Failed => "failed",
        })
    }
}

/// The `webhook` member of a pipeline save's answer.
#[derive(Clone, Debug, Serialize)]
pub struct HookInstall {
    pub binding: String,
    pub repository: String,
    pub status: HookStatus,
    /// The address the hook delivers to (or should).
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_id: Option<String>,
    pub message: String,
}

/// What to store of a grant; `redirect_uri` is the authorization's (kept for GitLab's refresh).
pub fn stored_grant(grant: &TokenGrant, redirect_uri: Option<&str>) -> StoredGrant {
    StoredGrant {
        token: grant.access_token.clone(),
        refresh_token: grant.refresh_token.clone(),
        expires_at: grant.expires_in.map(|secs| now_ms().saturating_add((secs as i64).saturating_mul(1000))),
        redirect_uri: redirect_uri.map(str::to_owned),
    }
}

fn expiring(binding: &Binding) -> bool {
    binding.token.is_some() && binding.token_expires_at.is_some_and(|at| at - REFRESH_MARGIN_MS <= now_ms())
}

fn provider_of(binding: &Binding) -> Result<Provider, ProviderError> {
    binding.provider.parse().map_err(|_| {
        ProviderError::Invalid(format!(
            "binding `{}` is a `{}` binding: only github, gitlab and gitee bindings have a provider API",
            binding.name, binding.provider
        ))
    })
}

/// `(host, path prefix)` of the binding's instance, e.g. `("git.example.com", "gitlab")`.
fn instance(binding: &Binding, provider: Provider) -> Option<(String, String)> {
    let client = ProviderClient::new(provider, binding.url.as_deref(), None).ok()?;
    let rest = client.web_base().split_once("://")?.1.to_owned();
    let (authority, prefix) = rest.split_once('/').unwrap_or((&rest, ""));
    Some((wharf_core::git::authority_host(authority), prefix.trim_matches('/').to_owned()))
}

fn instance_host(binding: &Binding, provider: Provider) -> Option<String> {
    instance(binding, provider).map(|(host, _)| host)
}

fn instance_prefix(binding: &Binding, provider: Provider) -> Option<String> {
    instance(binding, provider).map(|(_, prefix)| prefix)
}

/// `public_url`: `http(s)://host[:port][/prefix]`, without query, fragment or
/// credentials; answered without a trailing slash.
pub fn check_public_url(url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("public_url `{url}` is not usable: {why} (expected like https://ci.example.com)");
    let rest =
        url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or_else(|| bad("not http(s)"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(bad("it has no host"));
    }
    if authority.contains('@') {
        return Err(bad("it must not hold credentials"));
    }
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it must not have a query, a fragment or spaces"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_checked() {
        assert_eq!(check_public_url("https://ci.example.com/").unwrap(), "https://ci.example.com");
        assert_eq!(check_public_url("http://10.0.0.5:8080/wharf").unwrap(), "http://10.0.0.5:8080/wharf");
        for bad in ["ci.example.com", "ftp://x", "https://", "https://u:p@x", "https://x/?a", "https://x y"] {
            assert!(check_public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instances_give_host_and_prefix() {
        let binding = |provider: &str, url: Option<&str>| Binding {
            id: 1,
            name: "b".into(),
            provider: provider.into(),
            url: url.map(str::to_owned),
            client_id: None,
            client_secret: None,
            token: None,
            webhook_secret: None,
            refresh_token: None,
            token_expires_at: None,
            oauth_redirect_uri: None,
            has_token: false,
            has_webhook_secret: false,
            has_client_secret: false,
            created_by: "admin".into(),
            created_at: 0,
            updated_at: 0,
        };
        assert_eq!(instance(&binding("github", None), Provider::GitHub), Some(("github.com".into(), String::new())));
        assert_eq!(
            instance(&binding("gitlab", Some("https://Git.Example.com:8443/gl/")), Provider::GitLab),
            Some(("git.example.com".into(), "gl".into()))
        );
    }
}
