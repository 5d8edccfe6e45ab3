//! `/bindings`: repository bindings (an account at GitHub, GitLab, Gitee or a plain
//! git host), their repositories and branches, and OAuth. Secrets go in, never out:
//! `has_*` says which are set.

use serde::{Deserialize, Serialize};

/// A binding as answered, without its secrets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = BindingInfo))]
pub struct Binding {
    pub id: i64,
    pub name: String,
    /// `github`, `gitlab`, `gitee` or `git`.
    pub provider: String,
    /// A self-hosted instance's address (set by admins only).
    pub url: Option<String>,
    pub client_id: Option<String>,
    /// When the token expires (epoch ms); `null` when it does not.
    pub token_expires_at: Option<i64>,
    pub has_token: bool,
    pub has_webhook_secret: bool,
    pub has_client_secret: bool,
    /// The user who set it up; only they see and change it.
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// Where its provider sends webhooks (`/hooks/{provider}/{name}`); `null` for `git`.
    /// Absent from the answer of `PUT /bindings/{name}/token`.
    #[serde(default, skip_serializing_if = "WebhookPath::is_absent")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub webhook_path: WebhookPath,
}

/// A binding's webhook path: absent (not told), `null` (none), or the path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Option<String>", into = "Option<String>")]
pub enum WebhookPath {
    #[default]
    Absent,
    Some(Option<String>),
}

impl WebhookPath {
    pub fn is_absent(&self) -> bool {
        matches!(self, WebhookPath::Absent)
    }

    pub fn as_deref(&self) -> Option<&str> {
        match self {
            WebhookPath::Some(Some(path)) => Some(path),
            _ => None,
        }
    }
}

impl From<Option<String>> for WebhookPath {
    fn from(path: Option<String>) -> Self {
        WebhookPath::Some(path)
    }
}

impl From<WebhookPath> for Option<String> {
    fn from(path: WebhookPath) -> Self {
        match path {
            WebhookPath::Absent => None,
            WebhookPath::Some(path) => path,
        }
    }
}

/// `POST /bindings`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Binding))]
#[serde(deny_unknown_fields)]
pub struct NewBinding {
    #[serde(default)]
    pub name: String,
    /// `github`, `gitlab`, `gitee` or `git`.
    #[serde(default)]
    pub provider: String,
    /// A self-hosted instance (admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub client_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub webhook_secret: Option<String>,
}

/// `PUT /bindings/{name}/token`: a personal access token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Token))]
#[serde(deny_unknown_fields)]
pub struct SetToken {
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub token: Option<String>,
}

/// A repository the binding's account sees (`GET /bindings/{name}/repos`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Repository {
    /// `owner/name` (GitLab: `group/sub/project`).
    pub full_name: String,
    pub clone_url: String,
    pub ssh_url: String,
    /// `null` for an empty GitLab project.
    pub default_branch: Option<String>,
    pub private: bool,
}

/// `GET /bindings/{name}/repos/{repo}/branches`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Branches {
    pub repository: String,
    pub items: Vec<String>,
    pub total: usize,
}

/// `GET /bindings/{name}/authorize`: where to send the person's browser.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Authorization {
    pub url: String,
    pub redirect_uri: String,
    /// Seconds the link works.
    pub expires_in: u64,
}
