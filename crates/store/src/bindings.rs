//! Repository bindings: an account on GitHub, GitLab, Gitee (or plain git) with the
//! credentials Wharf uses to list repositories, clone and install webhooks. The secret
//! fields are stored sealed ([`crate::secretbox`]) and never part of [`Binding`]'s
//! serialised form.

use crate::db::{self, DbRow};
use crate::{Result, Store, StoreError, now_ms};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Binding {
    pub id: i64,
    pub name: String,
    pub provider: String,
    pub url: Option<String>,
    pub client_id: Option<String>,
    #[serde(skip)]
    pub client_secret: Option<String>,
    #[serde(skip)]
    pub token: Option<String>,
    #[serde(skip)]
    pub webhook_secret: Option<String>,
    /// From an OAuth grant of a provider with expiring tokens; traded for a new token.
    #[serde(skip)]
    pub refresh_token: Option<String>,
    /// When the token expires (epoch ms); `None` when it does not (personal access
    /// tokens, GitHub OAuth apps).
    pub token_expires_at: Option<i64>,
    /// The `redirect_uri` of the authorization that gave the token (GitLab wants it on refresh).
    #[serde(skip)]
    pub oauth_redirect_uri: Option<String>,
    /// Which secrets are set, without their values.
    pub has_token: bool,
    pub has_webhook_secret: bool,
    pub has_client_secret: bool,
    /// The user who set it up; only they see and change it (seed 002 §2.5).
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What creating or updating a binding stores.
#[derive(Clone, Debug, Default)]
pub struct NewBinding {
    pub name: String,
    pub provider: String,
    pub url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub token: Option<String>,
    pub webhook_secret: Option<String>,
    /// The user setting it up.
    pub created_by: String,
}

const SELECT: &str = "SELECT id, name, provider, url, client_id, client_secret, token, webhook_secret, created_at, \
     updated_at, created_by, refresh_token, token_expires_at, oauth_redirect_uri FROM bindings";

/// What an OAuth code exchange or refresh gave, as stored on the binding.
#[derive(Clone, Default)]
pub struct StoredGrant {
    pub token: String,
    pub refresh_token: Option<String>,
    /// Epoch ms.
    pub expires_at: Option<i64>,
    pub redirect_uri: Option<String>,
}

impl std::fmt::Debug for StoredGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredGrant").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// An OAuth authorization in progress: what its `state` stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthState {
    pub binding: String,
    pub provider: String,
    pub redirect_uri: String,
    pub expires_at: i64,
}

fn binding(store: &Store, row: &DbRow) -> Result<Binding> {
    let client_secret = store.open_secret(row.get(5))?;
    let token = store.open_secret(row.get(6))?;
    let webhook_secret = store.open_secret(row.get(7))?;
    Ok(Binding {
        id: row.get(0),
        name: row.get(1),
        provider: row.get(2),
        url: row.get(3),
        client_id: row.get(4),
        has_client_secret: client_secret.is_some(),
        has_token: token.is_some(),
        has_webhook_secret: webhook_secret.is_some(),
        client_secret,
        token,
        webhook_secret,
        created_at: row.get(8),
        updated_at: row.get(9),
        created_by: row.get(10),
        refresh_token: store.open_secret(row.get(11))?,
        token_expires_at: row.get(12),
        oauth_redirect_uri: row.get(13),
    })
}

impl Store {
    /// Creates a binding; a name in use is a `Conflict`.
    pub async fn create_binding(&self, new: &NewBinding) -> Result<Binding> {
        let _write = self.writer.lock().await;
        let now = now_ms();
        let done = db::query(
            "INSERT INTO bindings (name, provider, url, client_id, client_secret, token, webhook_secret, created_at, \
             updated_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&new.name)
        .bind(&new.provider)
        .bind(&new.url)
        .bind(&new.client_id)
        .bind(self.seal_secret(new.client_secret.as_deref()))
        .bind(self.seal_secret(new.token.as_deref()))
        .bind(self.seal_secret(new.webhook_secret.as_deref()))
        .bind(now)
        .bind(now)
        .bind(if new.created_by.is_empty() { "admin" } else { new.created_by.as_str() })
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("a binding named `{}` already exists", new.name)));
            }
            Err(e) => return Err(e.into()),
        }
        drop(_write);
        self.binding(&new.name).await
    }

    pub async fn binding(&self, name: &str) -> Result<Binding> {
        let row = db::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE name = ?")))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("binding `{name}`")))?;
        binding(self, &row)
    }

    pub async fn bindings(&self) -> Result<Vec<Binding>> {
        let rows = db::query(sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY name"))).fetch_all(&self.pool).await?;
        rows.iter().map(|r| binding(self, r)).collect()
    }

    /// Replaces a binding's token with one that does not expire (a personal access
    /// token); any refresh token goes.
    pub async fn set_binding_token(&self, name: &str, token: Option<&str>) -> Result<Binding> {
        let _write = self.writer.lock().await;
        let done = db::query(
            "UPDATE bindings SET token = ?, refresh_token = NULL, token_expires_at = NULL, \
             oauth_redirect_uri = NULL, updated_at = ? WHERE name = ?",
        )
        .bind(self.seal_secret(token))
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("binding `{name}`")));
        }
        drop(_write);
        self.binding(name).await
    }

    /// Stores what an OAuth code exchange or a refresh granted. A grant without a
    /// refresh token keeps the one stored (GitHub may not send a new one).
    pub async fn set_binding_grant(&self, name: &str, grant: &StoredGrant) -> Result<Binding> {
        let _write = self.writer.lock().await;
        let done = db::query(
            "UPDATE bindings SET token = ?, refresh_token = COALESCE(?, refresh_token), token_expires_at = ?, \
             oauth_redirect_uri = COALESCE(?, oauth_redirect_uri), updated_at = ? WHERE name = ?",
        )
        .bind(self.seal_secret(Some(&grant.token)))
        .bind(self.seal_secret(grant.refresh_token.as_deref()))
        .bind(grant.expires_at)
        .bind(&grant.redirect_uri)
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("binding `{name}`")));
        }
        drop(_write);
        self.binding(name).await
    }

    /// Remembers an OAuth `state` (by its SHA-256) until `expires_at`; expired ones go.
    pub async fn put_oauth_state(&self, state_sha256: &str, pending: &OAuthState) -> Result<()> {
        let _write = self.writer.lock().await;
        let now = now_ms();
        db::query("DELETE FROM oauth_states WHERE expires_at <= ?").bind(now).execute(&self.pool).await?;
        db::query(
            "INSERT INTO oauth_states (state_sha256, binding, provider, redirect_uri, expires_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(state_sha256)
        .bind(&pending.binding)
        .bind(&pending.provider)
        .bind(&pending.redirect_uri)
        .bind(pending.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes an OAuth `state` out: it works once. `None` when unknown, used or expired.
    pub async fn take_oauth_state(&self, state_sha256: &str) -> Result<Option<OAuthState>> {
        let _write = self.writer.lock().await;
        let row = db::query(
            "DELETE FROM oauth_states WHERE state_sha256 = ? RETURNING binding, provider, redirect_uri, expires_at",
        )
        .bind(state_sha256)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| OAuthState { binding: r.get(0), provider: r.get(1), redirect_uri: r.get(2), expires_at: r.get(3) })
            .filter(|s| s.expires_at > now_ms()))
    }

    /// Deletes a binding. The caller checks first that no pipeline uses it.
    pub async fn delete_binding(&self, name: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        let done = db::query("DELETE FROM bindings WHERE name = ?").bind(name).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("binding `{name}`")));
        }
        Ok(())
    }
}
