//! Repository bindings: an account on GitHub, GitLab, Gitee (or plain git) with the
//! credentials Wharf uses to list repositories, clone and install webhooks. The secret
//! fields are stored sealed ([`crate::secretbox`]) and never part of [`Binding`]'s
//! serialised form.

use crate::{Result, Store, StoreError, now_ms};
use serde::Serialize;
use sqlx::Row;

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
     updated_at, created_by FROM bindings";

fn binding(store: &Store, row: &sqlx::sqlite::SqliteRow) -> Result<Binding> {
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
    })
}

impl Store {
    /// Creates a binding; a name in use is a `Conflict`.
    pub async fn create_binding(&self, new: &NewBinding) -> Result<Binding> {
        let _write = self.writer.lock().await;
        let now = now_ms();
        let done = sqlx::query(
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
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE name = ?")))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("binding `{name}`")))?;
        binding(self, &row)
    }

    pub async fn bindings(&self) -> Result<Vec<Binding>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY name"))).fetch_all(&self.pool).await?;
        rows.iter().map(|r| binding(self, r)).collect()
    }

    /// Replaces a binding's token (after an OAuth code exchange, or a new PAT).
    pub async fn set_binding_token(&self, name: &str, token: Option<&str>) -> Result<Binding> {
        let _write = self.writer.lock().await;
        let done = sqlx::query("UPDATE bindings SET token = ?, updated_at = ? WHERE name = ?")
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

    /// Deletes a binding. The caller checks first that no pipeline uses it.
    pub async fn delete_binding(&self, name: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        let done = sqlx::query("DELETE FROM bindings WHERE name = ?").bind(name).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("binding `{name}`")));
        }
        Ok(())
    }
}
