//! Departments, projects, users, API tokens, the audit log, `GET /me`, and login.

use serde::{Deserialize, Serialize};

/// `GET /departments`: names.
pub type Departments = crate::Listed<String>;

/// `POST /departments` and its answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Department {
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = ProjectInfo))]
pub struct Project {
    pub name: String,
    pub department: String,
    pub created_at: i64,
    /// Its tasks may run on the server's machine (host executor) on a server with
    /// several users.
    pub trusted: bool,
}

/// `POST /projects` (admins).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Project))]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    #[serde(default)]
    pub name: String,
    /// Default `Default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Whether its tasks may run on the host on a multi-user server (default false).
    #[serde(default)]
    pub trusted: bool,
}

/// `PATCH /projects/{name}` (admins).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = UserInfo))]
pub struct User {
    pub name: String,
    /// `admin`, `manager` or `user`.
    pub role: String,
    /// The projects the user joined.
    pub projects: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the user was disabled; `null`: enabled.
    pub disabled_at: Option<i64>,
}

/// `POST /users` (admins).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = User))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub password: Option<String>,
    /// `admin`, `manager` or `user`.
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub projects: Vec<String>,
}

/// `PUT /users/{name}` (admins): each field given replaces what the user had.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The whole list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// An API token as listed: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = TokenInfo))]
pub struct Token {
    pub id: i64,
    pub user: String,
    pub name: String,
    /// `read` (GET only) or `write`.
    pub scope: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
}

/// `POST /users/{name}/tokens`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    #[serde(default)]
    pub name: String,
    /// `read` or `write` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Days until it stops working (1 to 3650); none: it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
}

/// A new token: the token itself, in this answer only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    #[serde(flatten)]
    pub info: Token,
    pub token: String,
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub object: String,
    /// The HTTP status answered.
    pub outcome: i64,
    pub client_ip: Option<String>,
}

/// `GET /me`: who the caller is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    pub name: String,
    pub role: String,
    pub projects: Vec<String>,
    /// `token` or `session`.
    pub via: String,
    /// A token's scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// A session's CSRF token, for `X-CSRF-Token` on changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// `POST /login` as JSON (a form with `name`/`username` and `password` works too).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Login {
    #[serde(default, alias = "username")]
    pub name: String,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub password: String,
}

/// What a login answers (with the session cookie).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoggedIn {
    pub name: String,
    pub role: String,
    pub csrf_token: String,
    pub expires_at: i64,
}
