//! Registries: OCI registries that `image` tasks push to and that uploads go to, with
//! their registered workspaces (repository namespaces such as `devops`). The password
//! is stored but never part of [`Registry`]'s serialised form.
//!
//! The password is written only by [`Store::create_registry`], sealed, and opened only
//! by `registry_row` ([`crate::secretbox`]).

use crate::db::{self, DbRow};
use crate::{Result, Store, StoreError, now_ms};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Registry {
    pub id: i64,
    pub name: String,
    /// `host[:port]`, as image references name the registry.
    pub host: String,
    pub username: Option<String>,
    #[serde(skip)]
    pub password: Option<String>,
    /// Whether a password is set, without its value.
    pub has_password: bool,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// Registered workspaces, sorted.
    pub workspaces: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What registering a registry stores.
#[derive(Clone, Debug, Default)]
pub struct NewRegistry {
    pub name: String,
    pub host: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub insecure: bool,
    pub workspaces: Vec<String>,
}

const SELECT: &str = "SELECT id, name, host, username, password, insecure, created_at, updated_at FROM registries";

fn registry_row(store: &Store, row: &DbRow) -> Result<Registry> {
    let password = store.open_secret(row.get(4))?;
    Ok(Registry {
        id: row.get(0),
        name: row.get(1),
        host: row.get(2),
        username: row.get(3),
        has_password: password.is_some(),
        password,
        insecure: row.get(5),
        workspaces: Vec::new(),
        created_at: row.get(6),
        updated_at: row.get(7),
    })
}

impl Store {
    /// Registers a registry with its workspaces; a name in use is a `Conflict`.
    pub async fn create_registry(&self, new: &NewRegistry) -> Result<Registry> {
        let write = self.writer.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = db::query(
            "INSERT INTO registries (name, host, username, password, insecure, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&new.name)
        .bind(&new.host)
        .bind(&new.username)
        .bind(self.seal_secret(new.password.as_deref()))
        .bind(new.insecure)
        .bind(now)
        .bind(now)
        .fetch_one(&mut tx)
        .await;
        let id: i64 = match done {
            Ok(row) => row.get(0),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("a registry named `{}` already exists", new.name)));
            }
            Err(e) => return Err(e.into()),
        };
        for workspace in &new.workspaces {
            db::query(
                "INSERT INTO registry_workspaces (registry_id, name, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(workspace)
            .bind(now)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        drop(write);
        self.registry(&new.name).await
    }

    pub async fn registry(&self, name: &str) -> Result<Registry> {
        let row = db::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE name = ?")))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("registry `{name}`")))?;
        let mut registry = registry_row(self, &row)?;
        registry.workspaces = self.workspaces_of(registry.id).await?;
        Ok(registry)
    }

    pub async fn registries(&self) -> Result<Vec<Registry>> {
        let rows = db::query(sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY name"))).fetch_all(&self.pool).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut registry = registry_row(self, row)?;
            registry.workspaces = self.workspaces_of(registry.id).await?;
            out.push(registry);
        }
        Ok(out)
    }

    async fn workspaces_of(&self, id: i64) -> Result<Vec<String>> {
        let rows = db::query("SELECT name FROM registry_workspaces WHERE registry_id = ? ORDER BY name")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Registers a workspace; one already registered is a `Conflict`.
    pub async fn add_workspace(&self, registry: &str, workspace: &str) -> Result<Registry> {
        let id = self.registry(registry).await?.id;
        let write = self.writer.lock().await;
        let done = db::query("INSERT INTO registry_workspaces (registry_id, name, created_at) VALUES (?, ?, ?)")
            .bind(id)
            .bind(workspace)
            .bind(now_ms())
            .execute(&self.pool)
            .await;
        match done {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "the workspace `{workspace}` is already registered in registry `{registry}`"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        drop(write);
        self.registry(registry).await
    }

    /// Forgets a workspace (the images in the registry stay).
    pub async fn delete_workspace(&self, registry: &str, workspace: &str) -> Result<()> {
        let id = self.registry(registry).await?.id;
        let _write = self.writer.lock().await;
        let done = db::query("DELETE FROM registry_workspaces WHERE registry_id = ? AND name = ?")
            .bind(id)
            .bind(workspace)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("workspace `{workspace}` of registry `{registry}`")));
        }
        Ok(())
    }

    /// Deletes a registry and its workspaces. The caller checks first that no
    /// pipeline uses it.
    pub async fn delete_registry(&self, name: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        let done = db::query("DELETE FROM registries WHERE name = ?").bind(name).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("registry `{name}`")));
        }
        Ok(())
    }
}
