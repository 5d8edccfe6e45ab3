//! Tenancy routes: departments, projects, users and their API tokens (admins; users
//! for their own tokens), `GET /me`, the audit log (admins), and the UI's login and
//! logout. What each role may do is [`crate::authz`].

use super::{AppStateRef, Page, created, json_body, rows};
use crate::AppState;
use crate::auth;
use crate::authz::{self, Action, Caller, Object, Role, TokenScope, Via};
use crate::error::{ApiResult, AppError, Detail};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use wharf_api::Listed;
use wharf_api::tenancy::{
    Department, LoggedIn, Login, Me, NewProject, NewToken, NewUser, ProjectUpdate, TokenCreated, UserUpdate,
};
use wharf_core::names::PipelineName;

fn detail(path: &str, message: impl Into<String>) -> Detail {
    Detail { path: path.to_owned(), line: None, column: None, message: message.into() }
}

/// Names of departments, projects, users and tokens follow the pipeline name rule.
fn check_name(what: &str, name: &str) -> ApiResult<()> {
    PipelineName::new(name.to_owned()).map(|_| ()).map_err(|e| {
        AppError::invalid(
            format!("the {what} is not valid"),
            "name",
            format!("`{}` is not a valid {what} name: {}", e.value, PipelineName::RULE),
        )
    })
}

fn admin_only(caller: &Caller) -> ApiResult<()> {
    Ok(authz::check(caller, Action::ManageTenancy, &Object::System)?)
}

/// `POST /departments {"name"}` (admins).
pub async fn create_department(State(state): AppStateRef, caller: Caller, body: Bytes) -> ApiResult<Response> {
    admin_only(&caller)?;
    let request: Department = json_body(&body)?;
    check_name("department", &request.name)?;
    state.store.create_department(&request.name).await?;
    Ok(created(Department { name: request.name }))
}

/// `GET /departments` (admins).
pub async fn departments(State(state): AppStateRef, caller: Caller) -> ApiResult<Response> {
    admin_only(&caller)?;
    let items = state.store.departments().await?;
    Ok(axum::Json(Listed::new(items)).into_response())
}

/// `POST /projects {"name", "department", "trusted"}` (admins; department defaults to
/// `Default`, trusted to false).
pub async fn create_project(State(state): AppStateRef, caller: Caller, body: Bytes) -> ApiResult<Response> {
    admin_only(&caller)?;
    let request: NewProject = json_body(&body)?;
    check_name("project", &request.name)?;
    let department = request.department.unwrap_or_else(|| authz::DEFAULT_DEPARTMENT.to_owned());
    let project =
        state.store.create_project(&request.name, &department, request.trusted).await.map_err(|e| match e {
            wharf_store::StoreError::NotFound(what) => {
                AppError::invalid("the project is not valid", "department", format!("{what} does not exist"))
            }
            other => other.into(),
        })?;
    Ok(created(rows::project(project)))
}

/// `PATCH /projects/{name} {"trusted"}` (admins): whether the project's tasks may run
/// on the server's machine (host executor) on a server with several users
/// ([`crate::hostexec`]). Only administrators decide it: it gives the project's code
/// the host's reach.
pub async fn update_project(
    State(state): AppStateRef,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    admin_only(&caller)?;
    let request: ProjectUpdate = json_body(&body)?;
    let project = match request.trusted {
        Some(trusted) => state.store.set_project_trusted(&name, trusted).await?,
        None => state.store.project(&name).await?,
    };
    Ok(axum::Json(rows::project(project)).into_response())
}

/// `GET /projects`: admins see all; others the projects they joined.
pub async fn projects(State(state): AppStateRef, caller: Caller) -> ApiResult<Response> {
    let all = state.store.projects().await?;
    let items: Vec<_> = if caller.role == Role::Admin {
        all
    } else {
        all.into_iter().filter(|p| caller.projects.contains(&p.name)).collect()
    };
    Ok(axum::Json(Listed::new(items.into_iter().map(rows::project).collect())).into_response())
}

/// `POST /users {"name", "password", "role", "projects"}` (admins).
pub async fn create_user(State(state): AppStateRef, caller: Caller, body: Bytes) -> ApiResult<Response> {
    admin_only(&caller)?;
    let request: NewUser = json_body(&body)?;
    let mut problems = Vec::new();
    if let Err(AppError::Invalid { details, .. }) = check_name("user", &request.name) {
        problems.extend(details);
    }
    let Some(role) = Role::parse(&request.role) else {
        problems.push(detail("role", format!("`{}` is not a role; use admin, manager or user", request.role)));
        return Err(AppError::Invalid { message: "the user is not valid".into(), details: problems });
    };
    if let Some(p) = &request.password
        && (p.chars().count() < 8 || p.len() > 1024)
    {
        problems.push(detail("password", "from 8 to 1024 characters"));
    }
    for (i, project) in request.projects.iter().enumerate() {
        if !state.store.project_exists(project).await? {
            problems.push(detail(&format!("projects[{i}]"), format!("project `{project}` does not exist")));
        }
    }
    if !problems.is_empty() {
        return Err(AppError::Invalid { message: "the user is not valid".into(), details: problems });
    }
    let hash = match request.password {
        Some(p) => Some(
            tokio::task::spawn_blocking(move || auth::hash_password(&p))
                .await
                .map_err(|e| AppError::internal("hashing the password failed", e))?,
        ),
        None => None,
    };
    let user = state.store.create_user(&request.name, role.as_str(), hash.as_deref(), &request.projects).await?;
    Ok(created(rows::user(user)))
}

/// Why `caller` may not disable or delete user `name` (`what`: "disable", "delete"):
/// themselves, the built-in `admin`, or the last enabled admin, so that someone can
/// always administer the server.
async fn refuse_removal(state: &AppState, caller: &Caller, name: &str, what: &str) -> ApiResult<()> {
    if name == caller.name {
        return Err(AppError::Conflict(format!("you cannot {what} yourself (`{name}`); ask another admin")));
    }
    if name == auth::ADMIN_USER {
        return Err(AppError::Conflict(format!("the built-in user `{name}` cannot be {what}d")));
    }
    if state.store.enabled_admins().await? == [name] {
        return Err(AppError::Conflict(format!("`{name}` is the last enabled admin and cannot be {what}d")));
    }
    Ok(())
}

/// Ends the sessions of `name` but the caller's own (when the caller is `name` on a
/// session: who just changed their own password stays logged in), with an audit line.
async fn end_other_sessions(state: &AppState, caller: &Caller, name: &str, why: &str) -> ApiResult<()> {
    let keep = match &caller.via {
        Via::Session { id_sha256 } if caller.name == name => Some(id_sha256.as_str()),
        _ => None,
    };
    let ended = state.store.end_sessions(name, keep).await?;
    let action = format!("end sessions ({why}): {ended}");
    super::audit(state, &caller.name, &action, &format!("/users/{name}"), 200, caller.client_ip.clone()).await;
    Ok(())
}

/// `PUT /users/{name} {"role", "projects", "password", "disabled"}` (admins): each
/// field given replaces what the user had (`projects`: the whole list). The built-in
/// `admin` stays an admin. A new password or role ends the user's sessions (but the
/// caller's own); `disabled: true` ends them all and refuses the user's tokens until
/// `disabled: false` (see [`refuse_removal`] for who cannot be disabled).
pub async fn update_user(
    State(state): AppStateRef,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    admin_only(&caller)?;
    let request: UserUpdate = json_body(&body)?;
    let current = state.store.user(&name).await?;
    let mut problems = Vec::new();
    let role = match request.role.as_deref() {
        None => None,
        Some(text) => match Role::parse(text) {
            Some(role) if name == auth::ADMIN_USER && role != Role::Admin => {
                problems.push(detail("role", "the built-in user `admin` stays an admin"));
                None
            }
            Some(role) => Some(role),
            None => {
                problems.push(detail("role", format!("`{text}` is not a role; use admin, manager or user")));
                None
            }
        },
    };
    for (i, project) in request.projects.iter().flatten().enumerate() {
        if !state.store.project_exists(project).await? {
            problems.push(detail(&format!("projects[{i}]"), format!("project `{project}` does not exist")));
        }
    }
    if let Some(p) = &request.password
        && (p.chars().count() < 8 || p.len() > 1024)
    {
        problems.push(detail("password", "from 8 to 1024 characters"));
    }
    if !problems.is_empty() {
        return Err(AppError::Invalid { message: "the change is not valid".into(), details: problems });
    }
    let role_changes = role.is_some_and(|r| r.as_str() != current.role);
    if role_changes && current.role == Role::Admin.as_str() && state.store.enabled_admins().await? == [name.as_str()] {
        return Err(AppError::Conflict(format!("`{name}` is the last enabled admin and stays an admin")));
    }
    if request.disabled == Some(true) {
        refuse_removal(&state, &caller, &name, "disable").await?;
    }
    if let Some(password) = request.password {
        let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
            .await
            .map_err(|e| AppError::internal("hashing the password failed", e))?;
        state.store.set_password_hash(&name, &hash).await?;
        end_other_sessions(&state, &caller, &name, "password changed").await?;
    }
    let mut user = state.store.update_user(&name, role.map(Role::as_str), request.projects.as_deref()).await?;
    if role_changes {
        end_other_sessions(&state, &caller, &name, "role changed").await?;
    }
    if let Some(disabled) = request.disabled
        && disabled != current.disabled_at.is_some()
    {
        user = state.store.set_user_disabled(&name, disabled).await?;
        let action = if disabled { "disable user (sessions ended, tokens refused)" } else { "enable user" };
        super::audit(&state, &caller.name, action, &format!("/users/{name}"), 200, caller.client_ip.clone()).await;
    }
    Ok(axum::Json(rows::user(user)).into_response())
}

/// `DELETE /users/{name}` (admins): the user goes with their tokens, sessions and
/// memberships. What they created (pipelines, bindings, secrets) stays, still naming
/// them as its creator. See [`refuse_removal`] for who cannot be deleted.
pub async fn delete_user(State(state): AppStateRef, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    admin_only(&caller)?;
    state.store.user(&name).await?;
    refuse_removal(&state, &caller, &name, "delete").await?;
    state.store.delete_user(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /users` (admins).
pub async fn users(State(state): AppStateRef, caller: Caller) -> ApiResult<Response> {
    admin_only(&caller)?;
    let items = state.store.users().await?;
    Ok(axum::Json(Listed::new(items.into_iter().map(rows::user).collect())).into_response())
}

/// `GET /me`: who the caller is, and (on a session) the CSRF token to send back.
pub async fn me(caller: Caller, State(state): AppStateRef, headers: HeaderMap) -> ApiResult<Response> {
    let mut body = Me {
        name: caller.name.clone(),
        role: caller.role.as_str().to_owned(),
        projects: caller.projects.iter().cloned().collect(),
        via: match &caller.via {
            Via::Token { .. } => "token",
            Via::Session { .. } => "session",
        }
        .to_owned(),
        scope: None,
        csrf_token: None,
    };
    if let Via::Token { scope } = caller.via {
        body.scope = Some(scope.as_str().to_owned());
    }
    if let Via::Session { .. } = caller.via {
        let cookie = headers.get(header::COOKIE).and_then(|c| c.to_str().ok());
        if let Some(id) = cookie.and_then(|c| auth::cookie(c, auth::SESSION_COOKIE))
            && let Some((_, csrf)) = auth::caller_from_session(&state.store, id, None).await?
        {
            body.csrf_token = Some(csrf);
        }
    }
    Ok(axum::Json(body).into_response())
}

/// `POST /users/{name}/tokens {"name", "scope", "expires_in_days"}` → `201 {"token", …}`:
/// the token is in this answer only. Admins for anyone, others for themselves.
pub async fn create_token(
    State(state): AppStateRef,
    caller: Caller,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    authz::check(&caller, Action::ManageTokens, &Object::User(&user))?;
    let request: NewToken = json_body(&body)?;
    check_name("token", &request.name)?;
    let scope = match request.scope.as_deref() {
        None => TokenScope::Write,
        Some(s) => TokenScope::parse(s).ok_or_else(|| {
            AppError::invalid("the token is not valid", "scope", format!("`{s}` is not a scope; use read or write"))
        })?,
    };
    let expires_at = match request.expires_in_days {
        None => None,
        Some(days @ 1..=3650) => Some(wharf_store::now_ms() + i64::from(days) * 86_400_000),
        Some(days) => {
            return Err(AppError::invalid(
                "the token is not valid",
                "expires_in_days",
                format!("{days}: expected 1 to 3650 days (or leave it out for a token that does not expire)"),
            ));
        }
    };
    state.store.user(&user).await?;
    let token = auth::new_token();
    let row = state
        .store
        .create_token(&user, &request.name, &auth::sha256_hex(token.as_bytes()), scope.as_str(), expires_at)
        .await?;
    Ok(created(TokenCreated { info: rows::token(row), token }))
}

/// `GET /users/{name}/tokens`: names, scopes and dates, never the tokens.
pub async fn tokens(State(state): AppStateRef, caller: Caller, Path(user): Path<String>) -> ApiResult<Response> {
    authz::check(&caller, Action::ManageTokens, &Object::User(&user))?;
    state.store.user(&user).await?;
    let items = state.store.tokens(&user).await?;
    Ok(axum::Json(Listed::new(items.into_iter().map(rows::token).collect())).into_response())
}

/// `DELETE /users/{name}/tokens/{token}`: revokes it at once (it stays listed, revoked).
pub async fn revoke_token(
    State(state): AppStateRef,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    authz::check(&caller, Action::ManageTokens, &Object::User(&user))?;
    state.store.revoke_token(&user, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /audit?actor=&limit=&page=` (admins): newest first.
pub async fn audit(
    State(state): AppStateRef,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    authz::check(&caller, Action::ViewAudit, &Object::System)?;
    let page = Page::from_query(&query)?;
    let actor = query.get("actor").map(String::as_str);
    let (items, total) = state.store.audit_log(actor, page.limit, page.offset()).await?;
    Ok(axum::Json(page.of(items.into_iter().map(rows::audit).collect(), total)).into_response())
}

/// Decodes `application/x-www-form-urlencoded`.
fn form(body: &[u8]) -> HashMap<String, String> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
                (b'+', _) => out.push(b' '),
                (b'%', Some(b)) => {
                    out.push(b);
                    i += 2;
                }
                (b, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// A login body is a name and a password.
const LOGIN_BODY_MAX: usize = 16 * 1024;

/// `POST /login` (JSON `{"name", "password"}` or a form with `name`/`username` and
/// `password`): a new session in a `Secure; HttpOnly; SameSite=Strict` cookie, and
/// `{"name", "role", "csrf_token", "expires_at"}`. Any session the browser presented is
/// ended first (a fresh id every time: no fixation). Wrong name or password: 401 (the
/// same answer for both); too many failures for this name from this address, or too
/// many logins from this address (for IPv6, its /64): 429; no hashing slot free within
/// a few seconds: 503; a body slower than the server's `header_timeout`: 408.
pub async fn login(State(state): AppStateRef, request: axum::extract::Request) -> ApiResult<Response> {
    let ip = crate::http::client_ip(request.extensions());
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, LOGIN_BODY_MAX).await.map_err(|e| {
        if crate::http::BodyTimedOut::caused(&e) {
            AppError::Timeout(e.to_string())
        } else {
            AppError::TooLarge(format!("a login body has at most {LOGIN_BODY_MAX} bytes"))
        }
    })?;
    let headers = &parts.headers;
    super::cross_site_check(headers)?;
    let credentials: Login = if super::content_type(headers).starts_with("application/x-www-form-urlencoded") {
        let mut fields = form(&body);
        Login {
            name: fields.remove("name").or_else(|| fields.remove("username")).unwrap_or_default(),
            password: fields.remove("password").unwrap_or_default(),
        }
    } else {
        json_body(&body)?
    };
    let ip_key = crate::http::client_key(ip.as_deref());
    if let Err(wait) = state.login_rate.take(&ip_key) {
        return Err(AppError::TooManyRequests {
            message: format!("too many logins from this address: try again in {wait} s"),
            retry_after_secs: wait,
        });
    }
    let name = credentials.name.trim().to_owned();
    // A name no user can have is refused before anything is looked up, hashed or
    // written down whole (the audit line has it cut, and is rate-limited).
    if PipelineName::new(name.clone()).is_err() {
        super::audit_refusal(&state, &name, "login refused (not a valid user name)", "/login", 401, ip).await;
        return Err(AppError::LoginFailed("wrong user name or password".to_owned()));
    }
    // The attempt counts before the password is checked, so parallel attempts cannot
    // get past the lock.
    let tries_left = match state.logins.begin(&name, &ip_key) {
        Ok(left) => left,
        Err(wait) => {
            super::audit_refusal(&state, &name, "login (locked out)", &format!("/users/{name}"), 429, ip).await;
            return Err(AppError::TooManyRequests {
                message: format!(
                    "too many failed logins for `{name}` from this address: try again in {wait} s (at most {} \
                     failures in {} minutes)",
                    auth::LoginLimiter::MAX_FAILURES,
                    auth::LoginLimiter::WINDOW.as_secs() / 60
                ),
                retry_after_secs: wait,
            });
        }
    };
    // Right after start the admin's configured password may still be being hashed.
    let mut ready = state.passwords_ready.clone();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), ready.wait_for(|ready| *ready)).await;
    let user = state.store.find_user(&name).await?;
    let phc = user.as_ref().and_then(|u| u.password_hash.clone());
    let password = credentials.password;
    let checked = state.hash_slots.run(move || match phc {
        Some(phc) => auth::verify_password(&password, &phc),
        None => {
            // Spend the same time for an unknown user, so timing does not tell.
            let _ = auth::verify_password(&password, dummy_hash());
            false
        }
    });
    let Some(ok) = checked.await else {
        state.logins.unchecked(&name, &ip_key);
        return Err(AppError::Unavailable {
            message: "too many logins are being checked right now: try again in a second".into(),
            retry_after_secs: 1,
        });
    };
    let Some(user) = user.filter(|_| ok) else {
        let outcome = if tries_left == 0 { "login failed (now locked out)" } else { "login failed" };
        super::audit(&state, &name, outcome, &format!("/users/{name}"), 401, ip).await;
        let minutes = auth::LoginLimiter::LOCKOUT.as_secs() / 60;
        return Err(AppError::LoginFailed(match tries_left {
            0 => format!(
                "wrong user name or password; that was the last try: logins as `{name}` from this address wait \
                 {minutes} minutes"
            ),
            1 => format!("wrong user name or password (1 more try from this address before a {minutes}-minute wait)"),
            n => {
                format!("wrong user name or password ({n} more tries from this address before a {minutes}-minute wait)")
            }
        }));
    };
    state.logins.succeeded(&name, &ip_key);
    if user.disabled_at.is_some() {
        super::audit(&state, &name, "login refused (user disabled)", &format!("/users/{name}"), 403, ip).await;
        return Err(AppError::Forbidden(format!("the user `{name}` is disabled; ask an admin to enable it")));
    }
    // No fixation: whatever session the browser brought ends here; a new id is made.
    if let Some(old) =
        headers.get(header::COOKIE).and_then(|c| c.to_str().ok()).and_then(|c| auth::cookie(c, auth::SESSION_COOKIE))
    {
        state.store.delete_session(&auth::sha256_hex(old.as_bytes())).await?;
    }
    let ttl = state.config.session_ttl;
    let session = auth::create_session(&state.store, &user.name, ip.as_deref(), ttl).await?;
    super::audit(&state, &user.name, "login", &format!("/users/{}", user.name), 200, ip).await;
    let cookie = auth::session_cookie(Some(&session), ttl, state.config.cookie_secure);
    let body = LoggedIn { name: user.name, role: user.role, csrf_token: session.csrf, expires_at: session.expires_at };
    Ok(([(header::SET_COOKIE, cookie)], axum::Json(body)).into_response())
}

/// An Argon2id hash of a random string, verified against for unknown users.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| auth::hash_password(&auth::new_password()))
}

/// `POST /logout`: ends the session (and clears the cookie); with a token, nothing to end.
pub async fn logout(State(state): AppStateRef, caller: Caller) -> ApiResult<Response> {
    if let Via::Session { id_sha256 } = &caller.via {
        state.store.delete_session(id_sha256).await?;
    }
    let cookie = auth::session_cookie(None, state.config.session_ttl, state.config.cookie_secure);
    Ok(([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response())
}
