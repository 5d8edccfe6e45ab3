//! What a repository binding does at its provider (GitHub, GitLab, Gitee; see
//! [`wharf_scm::provider`]): list the repositories and branches its token can see,
//! connect it through OAuth, or take a personal access token.
//!
//! The OAuth flow, with the binding's OAuth app (`client_id`, `client_secret`):
//!
//! 1. `GET /api/v1/bindings/{name}/authorize?redirect_uri=…` (bearer) answers the
//!    provider's authorize address with a fresh random `state`, stored (hashed) for
//!    [`STATE_TTL`] and usable once, across restarts too.
//! 2. The person's browser goes there, approves, and the provider sends it to
//!    `redirect_uri` — `/devops/repository/{github|gitlab|gitee}/redirect?code&state`,
//!    which needs no bearer token (a browser follows it): the state names the binding,
//!    the code is exchanged for a token with the binding's client id and secret, and
//!    the token is stored, with the refresh token and expiry when the provider issues
//!    expiring tokens (GitLab, Gitee; GitHub apps may). The answer is a small HTML page.
//!
//! An expiring token is refreshed before it is used (see [`crate::forges`]).
//!
//! A state that is unknown, expired, already used or issued for another provider is
//! `400`. No answer contains the token, the client secret or the code.
//!
//! `{repo}` in `/bindings/{name}/repos/{repo}/branches` is the repository's full name;
//! its slashes may be sent as they are (`/repos/octo/app/branches`,
//! `/repos/group/sub/project/branches`) or encoded (`/repos/octo%2Fapp/branches`).

use super::bindings::find_for;
use super::{AppStateRef, json_body};
use crate::authz::{Action, Caller};
use crate::error::{ApiResult, AppError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use std::collections::HashMap;
use std::time::Duration;
use wharf_scm::provider::{Provider, ProviderClient, ProviderError, title};
use wharf_store::bindings::{Binding, OAuthState};

/// How long an authorize address stays usable.
pub const STATE_TTL: Duration = Duration::from_secs(600);

/// Hands out a fresh random `state` for `binding`, stored (as its SHA-256, so the
/// database never holds a usable value) until [`STATE_TTL`] passes: it survives a
/// restart and works once.
async fn issue_state(
    store: &wharf_store::Store,
    binding: &str,
    provider: Provider,
    redirect_uri: &str,
) -> ApiResult<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| AppError::internal("no random source", e))?;
    let state: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let pending = OAuthState {
        binding: binding.to_owned(),
        provider: provider.as_str().to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        expires_at: wharf_store::now_ms() + STATE_TTL.as_millis() as i64,
    };
    store.put_oauth_state(&crate::auth::sha256_hex(state.as_bytes()), &pending).await?;
    Ok(state)
}

/// The provider of a binding, or `409` for a plain git binding.
fn provider_of(binding: &Binding) -> ApiResult<Provider> {
    binding.provider.parse().map_err(|_| {
        AppError::Conflict(format!(
            "binding `{}` is a `{}` binding: only github, gitlab and gitee bindings have a provider API \
             (repositories, branches, OAuth)",
            binding.name, binding.provider
        ))
    })
}

/// A client for the binding's provider and instance (`url`), without a token.
fn client_for(state: &crate::AppState, binding: &Binding, provider: Provider) -> ApiResult<ProviderClient> {
    state
        .forges
        .bare_client(binding, provider)
        .map_err(|e| AppError::Conflict(format!("binding `{}`: {e}", binding.name)))
}

/// A client with the binding's token, refreshed first when it expires.
async fn client_with_token(state: &crate::AppState, binding: &Binding) -> Result<ProviderClient, AppError> {
    state.forges.client(&state.store, binding).await.map_err(|e| provider_error(binding, e))
}

type Answer = Result<Response, AppError>;

/// How a provider failure is answered: our own input is 422, a missing token 409, a
/// repository the provider does not know 404, an address the outbound policy refuses
/// 403 (nothing was sent), anything else the provider did 502. No answer repeats what
/// the provider said (see [`wharf_scm::provider`]).
fn provider_error(binding: &Binding, e: ProviderError) -> AppError {
    let name = &binding.name;
    match e {
        ProviderError::NoToken { .. } => AppError::Conflict(format!(
            "binding `{name}` has no token yet: connect it through OAuth (GET /api/v1/bindings/{name}/authorize) \
             or set a personal access token (PUT /api/v1/bindings/{name}/token)"
        )),
        ProviderError::NotFound { provider, what } => AppError::NotFound(format!("{what} at {}", title(provider))),
        ProviderError::Invalid(message) => AppError::invalid("the request is not valid", "repo", message),
        ProviderError::Refused { message, .. } => {
            tracing::warn!(binding = %name, %message, "outbound call refused");
            AppError::Forbidden(format!("binding `{name}`: {message}"))
        }
        other => {
            tracing::warn!(binding = %name, error = %other, "provider call failed");
            AppError::BadGateway(format!("binding `{name}`: {other}"))
        }
    }
}

/// `GET /bindings/{name}/repos` → `{"items": [{"full_name", "clone_url", "ssh_url",
/// "default_branch", "private"}], "total"}`.
pub async fn repos(State(state): AppStateRef, caller: Caller, Path(name): Path<String>) -> Answer {
    let binding = find_for(&state, &caller, &name, Action::ViewRepository).await?;
    provider_of(&binding)?;
    let client = client_with_token(&state, &binding).await?;
    let repos = client.repositories().await.map_err(|e| provider_error(&binding, e))?;
    let items = repos.into_iter().map(super::rows::repository).collect();
    Ok(axum::Json(wharf_api::Listed::new(items)).into_response())
}

/// `GET /bindings/{name}/repos/{repo}/branches` → `{"repository", "items": ["main", …],
/// "total"}`. Routed as `/bindings/{name}/repos/{*rest}` so that `{repo}` may hold
/// slashes.
pub async fn branches(State(state): AppStateRef, caller: Caller, Path((name, rest)): Path<(String, String)>) -> Answer {
    let Some(repo) = rest.strip_suffix("/branches") else {
        return Err(AppError::NotFound(format!(
            "no such route; branches are at /api/v1/bindings/{name}/repos/{{owner}}/{{repo}}/branches"
        )));
    };
    let binding = find_for(&state, &caller, &name, Action::ViewRepository).await?;
    provider_of(&binding)?;
    let client = client_with_token(&state, &binding).await?;
    let branches = client.branches(repo).await.map_err(|e| provider_error(&binding, e))?;
    let answer = wharf_api::bindings::Branches { repository: repo.to_owned(), total: branches.len(), items: branches };
    Ok(axum::Json(answer).into_response())
}

/// `GET /bindings/{name}/authorize?redirect_uri=…` → `{"url", "redirect_uri",
/// "expires_in"}`. Without `redirect_uri`, this server's own callback for the
/// provider, at the address the request came to (`X-Forwarded-Proto`/`-Host` when a
/// proxy sets them).
pub async fn authorize(
    State(state): AppStateRef,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let binding = find_for(&state, &caller, &name, Action::SetRepository).await?;
    let provider = provider_of(&binding)?;
    let client_id = binding.client_id.as_deref().filter(|id| !id.trim().is_empty());
    let (Some(client_id), true) = (client_id, binding.client_secret.is_some()) else {
        return Err(AppError::Conflict(format!(
            "binding `{name}` has no OAuth app: create it with the `client_id` and `client_secret` of an OAuth \
             application registered at {}, or set a personal access token (PUT /api/v1/bindings/{name}/token)",
            title(provider)
        )));
    };
    let redirect_uri = match query.get("redirect_uri").map(|u| u.trim()).filter(|u| !u.is_empty()) {
        Some(uri) => check_redirect_uri(uri)?,
        None => own_callback(&headers, provider)?,
    };
    let client = client_for(&state, &binding, provider)?;
    let oauth_state = issue_state(&state.store, &binding.name, provider, &redirect_uri).await?;
    let url = client.authorize_url(client_id.trim(), &redirect_uri, &oauth_state);
    let answer = wharf_api::bindings::Authorization { url, redirect_uri, expires_in: STATE_TTL.as_secs() };
    Ok(axum::Json(answer).into_response())
}

fn check_redirect_uri(uri: &str) -> ApiResult<String> {
    let rest = uri.strip_prefix("https://").or_else(|| uri.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && uri.len() <= 2048
        && !uri.contains('#')
        && !uri.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(uri.to_owned())
    } else {
        Err(AppError::invalid(
            "bad redirect_uri",
            "redirect_uri",
            format!(
                "`{uri}` is not an http(s) address; give the callback registered with the OAuth app, \
                 like https://wharf.example.com/devops/repository/github/redirect"
            ),
        ))
    }
}

/// `http(s)://<host>/devops/repository/<provider>/redirect` for the address the
/// request came to.
fn own_callback(headers: &HeaderMap, provider: Provider) -> ApiResult<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let proto = get("x-forwarded-proto").filter(|p| p == "https" || p == "http").unwrap_or_else(|| "http".into());
    let host = get("x-forwarded-host").or_else(|| get(header::HOST.as_str()));
    match host {
        Some(host) if host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)) => {
            Ok(format!("{proto}://{host}/devops/repository/{}/redirect", provider.as_str()))
        }
        _ => Err(AppError::invalid(
            "bad redirect_uri",
            "redirect_uri",
            "the request names no usable host; give ?redirect_uri= (the callback registered with the OAuth app)",
        )),
    }
}

/// `PUT /bindings/{name}/token {"token"}`: a personal access token (GitHub: `repo`
/// scope; GitLab: `api`; Gitee: `projects`, `hook`) replaces the binding's token.
/// Answers the binding, without its secrets.
pub async fn set_token(
    State(state): AppStateRef,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let binding = find_for(&state, &caller, &name, Action::SetRepository).await?;
    let request: wharf_api::bindings::SetToken = json_body(&body)?;
    let token = request.token.as_deref().map(str::trim).unwrap_or("");
    if token.is_empty() {
        return Err(AppError::invalid("the token is missing", "token", "give the personal access token as `token`"));
    }
    if token.len() > 4096 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AppError::invalid(
            "the token is not valid",
            "token",
            "at most 4096 characters, without spaces or control characters",
        ));
    }
    let binding = state.store.set_binding_token(&binding.name, Some(token)).await?;
    Ok(axum::Json(super::rows::binding(binding, wharf_api::bindings::WebhookPath::Absent)).into_response())
}

/// `GET /devops/repository/{provider}/redirect?code&state` (no bearer token): where
/// the provider sends the browser back. Exchanges the code and stores the token.
pub async fn callback(
    State(state): AppStateRef,
    Path(provider): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Ok(provider) = provider.parse::<Provider>() else {
        return page(StatusCode::NOT_FOUND, "Not found", "There is no such provider callback.");
    };
    let name = title(provider);
    let again = "Start again from Wharf: an authorization link works once, for 10 minutes.";
    let taken = match query.get("state").filter(|s| !s.is_empty() && s.len() <= 200) {
        Some(s) => state.store.take_oauth_state(&crate::auth::sha256_hex(s.as_bytes())).await,
        None => Ok(None),
    };
    let pending = match taken {
        Ok(Some(pending)) => pending,
        Ok(None) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Not connected",
                &format!("This {name} authorization is unknown, expired or already used. {again}"),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the OAuth state");
            return page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not connected",
                "Internal error; the server log has the details.",
            );
        }
    };
    if pending.provider != provider.as_str() {
        return page(
            StatusCode::BAD_REQUEST,
            "Not connected",
            &format!(
                "This authorization was started for {}, not {name}. {again}",
                pending.provider.parse::<Provider>().map(title).unwrap_or(pending.provider.as_str())
            ),
        );
    }
    if let Some(error) = query.get("error") {
        let description = query.get("error_description").map(|d| format!(": {d}")).unwrap_or_default();
        return page(
            StatusCode::BAD_REQUEST,
            "Not connected",
            &format!("{name} did not authorize binding `{}` ({error}{description}).", pending.binding),
        );
    }
    let Some(code) = query.get("code").filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return page(StatusCode::BAD_REQUEST, "Not connected", &format!("{name} sent no authorization code. {again}"));
    };
    match connect(&state, provider, &pending, code).await {
        Ok(()) => page(
            StatusCode::OK,
            "Connected",
            &format!("Binding `{}` is connected to {name}. You can close this window.", pending.binding),
        ),
        Err((status, message)) => page(status, "Not connected", &message),
    }
}

/// Exchanges the code with the binding's OAuth app and stores the token.
async fn connect(
    state: &crate::AppState,
    provider: Provider,
    pending: &OAuthState,
    code: &str,
) -> Result<(), (StatusCode, String)> {
    let name = &pending.binding;
    let binding = match state.store.binding(name).await {
        Ok(b) => b,
        Err(wharf_store::StoreError::NotFound(_)) => {
            return Err((StatusCode::NOT_FOUND, format!("Binding `{name}` no longer exists.")));
        }
        Err(e) => {
            tracing::error!(binding = %name, error = %e, "cannot read the binding");
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "Internal error; the server log has the details.".into()));
        }
    };
    let conflict = |why: String| (StatusCode::CONFLICT, why);
    if binding.provider != provider.as_str() {
        return Err(conflict(format!("Binding `{name}` is no longer a {} binding.", title(provider))));
    }
    let (Some(client_id), Some(client_secret)) = (binding.client_id.as_deref(), binding.client_secret.as_deref())
    else {
        return Err(conflict(format!("Binding `{name}` no longer has an OAuth app (client id and secret).")));
    };
    let client = client_for(state, &binding, provider)
        .map_err(|_| conflict(format!("Binding `{name}` has an instance URL that is not usable; fix the binding.")))?;
    let grant =
        client.exchange_code(client_id.trim(), client_secret, code, &pending.redirect_uri).await.map_err(|e| {
            tracing::warn!(binding = %name, error = %e, "OAuth code exchange failed");
            let status = if matches!(e, ProviderError::Refused { .. }) {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_GATEWAY
            };
            (status, format!("Binding `{name}` is not connected: {e}"))
        })?;
    let stored = crate::forges::stored_grant(&grant, Some(&pending.redirect_uri));
    state.store.set_binding_grant(name, &stored).await.map_err(|e| {
        tracing::error!(binding = %name, error = %e, "cannot store the binding's token");
        (StatusCode::INTERNAL_SERVER_ERROR, "Internal error; the server log has the details.".to_owned())
    })?;
    tracing::info!(binding = %name, %provider, expires = ?stored.expires_at, "binding connected through OAuth");
    Ok(())
}

/// A small HTML page for the person's browser.
fn page(status: StatusCode, heading: &str, message: &str) -> Response {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;")
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Wharf: {h}</title></head>\n\
         <body><h1>{h}</h1><p>{m}</p></body></html>\n",
        h = escape(heading),
        m = escape(message)
    );
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_page_escapes_what_it_shows() {
        let response = page(StatusCode::OK, "Connected", "Binding `<b>&\"x'` is connected.");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("Binding `&lt;b&gt;&amp;&quot;x&#39;` is connected."), "{text}");
    }
}
