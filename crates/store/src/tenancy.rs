//! Who may do what (issue 6): departments, projects, users with their role and the
//! projects they joined, API tokens (only their SHA-256 is stored), UI sessions (only
//! the SHA-256 of the cookie), the audit log, and project secrets (sealed by the
//! store's [`SecretBox`](crate::secretbox::SecretBox)). What a role may do is the
//! server's business (`wharf_server::authz`); this module only keeps the facts.

use crate::db::{self, DbRow};
use crate::{Result, Store, StoreError, now_ms};
use serde::Serialize;
use std::collections::BTreeMap;

/// The built-in administrator, made at first start.
pub const ADMIN_USER: &str = "admin";

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectRow {
    pub name: String,
    pub department: String,
    pub created_at: i64,
    /// An administrator lets its tasks run on the server's machine (host executor) on
    /// a server with several users.
    pub trusted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserRow {
    pub name: String,
    /// `admin`, `manager` or `user`.
    pub role: String,
    #[serde(skip)]
    pub password_hash: Option<String>,
    /// The projects the user joined, by name.
    pub projects: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When the user was disabled (no login; tokens and sessions refused); `None`: enabled.
    pub disabled_at: Option<i64>,
}

/// An API token as listed (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRow {
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub user: String,
    pub csrf: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The longest text an audit field keeps, in characters (the mark included).
pub const AUDIT_FIELD_MAX: usize = 256;
/// Ends a field that was cut.
pub const CUT_MARK: &str = "…[cut]";

/// `text`, or its start with [`CUT_MARK`] when it is longer than [`AUDIT_FIELD_MAX`].
pub fn cut(text: &str) -> String {
    if text.chars().count() <= AUDIT_FIELD_MAX {
        return text.to_owned();
    }
    let keep = AUDIT_FIELD_MAX - CUT_MARK.chars().count();
    text.chars().take(keep).chain(CUT_MARK.chars()).collect()
}

/// One line of the audit log: who did what to which object, when, from where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub object: String,
    /// The HTTP status answered.
    pub outcome: i64,
    pub client_ip: Option<String>,
}

/// A project secret as listed: its name, never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretName {
    pub project: String,
    pub name: String,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn unique<T>(done: std::result::Result<T, sqlx::Error>, what: impl FnOnce() -> String) -> Result<T> {
    match done {
        Ok(v) => Ok(v),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(what())),
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => Err(StoreError::NotFound(what())),
        Err(e) => Err(e.into()),
    }
}

const TOKEN_SELECT: &str =
    "SELECT id, user_name, name, scope, expires_at, revoked_at, last_used_at, created_at FROM api_tokens";

fn project_row(row: &DbRow) -> ProjectRow {
    ProjectRow { name: row.get(0), department: row.get(1), created_at: row.get(2), trusted: row.get(3) }
}

fn token_row(row: &DbRow) -> TokenRow {
    TokenRow {
        id: row.get(0),
        user: row.get(1),
        name: row.get(2),
        scope: row.get(3),
        expires_at: row.get(4),
        revoked_at: row.get(5),
        last_used_at: row.get(6),
        created_at: row.get(7),
    }
}

impl Store {
    // ---- departments and projects ----

    pub async fn create_department(&self, name: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        let done = db::query("INSERT INTO departments (name, created_at) VALUES (?, ?)")
            .bind(name)
            .bind(now_ms())
            .execute(&self.pool)
            .await;
        unique(done, || format!("a department named `{name}` already exists"))?;
        Ok(())
    }

    pub async fn departments(&self) -> Result<Vec<String>> {
        let rows = db::query("SELECT name FROM departments ORDER BY name").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Creates a project in a department; an unknown department is `NotFound`.
    pub async fn create_project(&self, name: &str, department: &str, trusted: bool) -> Result<ProjectRow> {
        let _write = self.writer.lock().await;
        let known =
            db::query("SELECT 1 FROM departments WHERE name = ?").bind(department).fetch_optional(&self.pool).await?;
        if known.is_none() {
            return Err(StoreError::NotFound(format!("department `{department}`")));
        }
        let now = now_ms();
        let done = db::query("INSERT INTO projects (name, department, created_at, trusted) VALUES (?, ?, ?, ?)")
            .bind(name)
            .bind(department)
            .bind(now)
            .bind(trusted)
            .execute(&self.pool)
            .await;
        unique(done, || format!("a project named `{name}` already exists"))?;
        Ok(ProjectRow { name: name.to_owned(), department: department.to_owned(), created_at: now, trusted })
    }

    pub async fn projects(&self) -> Result<Vec<ProjectRow>> {
        let rows = db::query("SELECT name, department, created_at, trusted FROM projects ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(project_row).collect())
    }

    /// One project; an unknown name is `NotFound`.
    pub async fn project(&self, name: &str) -> Result<ProjectRow> {
        let row = db::query("SELECT name, department, created_at, trusted FROM projects WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(project_row).ok_or_else(|| StoreError::NotFound(format!("project `{name}`")))
    }

    /// Marks a project trusted or not; an unknown name is `NotFound`.
    pub async fn set_project_trusted(&self, name: &str, trusted: bool) -> Result<ProjectRow> {
        {
            let _write = self.writer.lock().await;
            let done = db::query("UPDATE projects SET trusted = ? WHERE name = ?")
                .bind(trusted)
                .bind(name)
                .execute(&self.pool)
                .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("project `{name}`")));
            }
        }
        self.project(name).await
    }

    pub async fn project_exists(&self, name: &str) -> Result<bool> {
        let row = db::query("SELECT 1 FROM projects WHERE name = ?").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    // ---- users ----

    /// Whether any user besides the built-in [`ADMIN_USER`] exists (a multi-user server).
    pub async fn is_multi_user(&self) -> Result<bool> {
        self.has_users_besides(ADMIN_USER).await
    }

    /// Whether any user besides `builtin` exists (a multi-user server).
    pub async fn has_users_besides(&self, builtin: &str) -> Result<bool> {
        let row =
            db::query("SELECT 1 FROM users WHERE name != ? LIMIT 1").bind(builtin).fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// Creates a user who joins `projects` (each must exist).
    pub async fn create_user(
        &self,
        name: &str,
        role: &str,
        password_hash: Option<&str>,
        projects: &[String],
    ) -> Result<UserRow> {
        let _write = self.writer.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done =
            db::query("INSERT INTO users (name, role, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?)")
                .bind(name)
                .bind(role)
                .bind(password_hash)
                .bind(now)
                .bind(now)
                .execute(&mut tx)
                .await;
        unique(done, || format!("a user named `{name}` already exists"))?;
        for project in projects {
            let done = db::query("INSERT INTO memberships (user_name, project) VALUES (?, ?) ON CONFLICT DO NOTHING")
                .bind(name)
                .bind(project)
                .execute(&mut tx)
                .await;
            unique(done, || format!("project `{project}`"))?;
        }
        tx.commit().await?;
        drop(_write);
        self.user(name).await
    }

    pub async fn user(&self, name: &str) -> Result<UserRow> {
        self.find_user(name).await?.ok_or_else(|| StoreError::NotFound(format!("user `{name}`")))
    }

    pub async fn find_user(&self, name: &str) -> Result<Option<UserRow>> {
        let Some(row) = db::query(
            "SELECT name, role, password_hash, created_at, updated_at, disabled_at FROM users WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let projects = db::query("SELECT project FROM memberships WHERE user_name = ? ORDER BY project")
            .bind(name)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(Some(UserRow {
            name: row.get(0),
            role: row.get(1),
            password_hash: row.get(2),
            projects,
            created_at: row.get(3),
            updated_at: row.get(4),
            disabled_at: row.get(5),
        }))
    }

    pub async fn users(&self) -> Result<Vec<UserRow>> {
        let names: Vec<String> = db::query("SELECT name FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.extend(self.find_user(&name).await?);
        }
        Ok(out)
    }

    /// Changes a user's role and/or the projects they joined (each must exist).
    pub async fn update_user(&self, name: &str, role: Option<&str>, projects: Option<&[String]>) -> Result<UserRow> {
        let _write = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let done = db::query("UPDATE users SET role = COALESCE(?, role), updated_at = ? WHERE name = ?")
            .bind(role)
            .bind(now_ms())
            .bind(name)
            .execute(&mut tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user `{name}`")));
        }
        if let Some(projects) = projects {
            db::query("DELETE FROM memberships WHERE user_name = ?").bind(name).execute(&mut tx).await?;
            for project in projects {
                let done =
                    db::query("INSERT INTO memberships (user_name, project) VALUES (?, ?) ON CONFLICT DO NOTHING")
                        .bind(name)
                        .bind(project)
                        .execute(&mut tx)
                        .await;
                unique(done, || format!("project `{project}`"))?;
            }
        }
        tx.commit().await?;
        drop(_write);
        self.user(name).await
    }

    pub async fn set_password_hash(&self, name: &str, hash: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        let done = db::query("UPDATE users SET password_hash = ?, updated_at = ? WHERE name = ?")
            .bind(hash)
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user `{name}`")));
        }
        Ok(())
    }

    /// Disables a user (and ends their sessions, in the same transaction) or enables
    /// them again. Their tokens are kept but refused while disabled
    /// ([`token_with_user`](Self::token_with_user)).
    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<UserRow> {
        let _write = self.writer.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = db::query(
            "UPDATE users SET disabled_at = CASE WHEN ?1 THEN COALESCE(disabled_at, ?2) END, updated_at = ?2 \
             WHERE name = ?3",
        )
        .bind(disabled)
        .bind(now)
        .bind(name)
        .execute(&mut tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user `{name}`")));
        }
        if disabled {
            db::query("DELETE FROM sessions WHERE user_name = ?").bind(name).execute(&mut tx).await?;
        }
        tx.commit().await?;
        drop(_write);
        self.user(name).await
    }

    /// Deletes a user with their tokens, sessions and memberships. What they created
    /// (pipelines, bindings, secrets) stays, still naming them as its creator.
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        // Said out loud rather than left to ON DELETE CASCADE alone.
        for table in ["api_tokens", "sessions", "memberships"] {
            db::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE user_name = ?")))
                .bind(name)
                .execute(&mut tx)
                .await?;
        }
        let done = db::query("DELETE FROM users WHERE name = ?").bind(name).execute(&mut tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user `{name}`")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The names of the enabled administrators.
    pub async fn enabled_admins(&self) -> Result<Vec<String>> {
        let rows = db::query("SELECT name FROM users WHERE role = 'admin' AND disabled_at IS NULL ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    // ---- API tokens ----

    /// Stores a token's hash under a name unique per user.
    pub async fn create_token(
        &self,
        user: &str,
        name: &str,
        token_sha256: &str,
        scope: &str,
        expires_at: Option<i64>,
    ) -> Result<TokenRow> {
        let _write = self.writer.lock().await;
        let done = db::query(
            "INSERT INTO api_tokens (user_name, name, token_sha256, scope, expires_at, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(user)
        .bind(name)
        .bind(token_sha256)
        .bind(scope)
        .bind(expires_at)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await;
        let id: i64 = unique(done, || format!("user `{user}` already has a token named `{name}`"))?.get(0);
        let row = db::query(sqlx::AssertSqlSafe(format!("{TOKEN_SELECT} WHERE id = ?")))
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(token_row(&row))
    }

    /// Replaces the hash of a user's named token (the bootstrap admin token follows
    /// `WHARF_ADMIN_TOKEN` at every start), creating the token when missing.
    pub async fn put_token(&self, user: &str, name: &str, token_sha256: &str, scope: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query(
            "INSERT INTO api_tokens (user_name, name, token_sha256, scope, expires_at, created_at) \
             VALUES (?, ?, ?, ?, NULL, ?) ON CONFLICT (user_name, name) DO UPDATE SET \
             token_sha256 = excluded.token_sha256, scope = excluded.scope, revoked_at = NULL, expires_at = NULL",
        )
        .bind(user)
        .bind(name)
        .bind(token_sha256)
        .bind(scope)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The token with this hash, whatever its state (the caller checks expiry and revocation).
    pub async fn token_by_hash(&self, token_sha256: &str) -> Result<Option<TokenRow>> {
        let row = db::query(sqlx::AssertSqlSafe(format!("{TOKEN_SELECT} WHERE token_sha256 = ?")))
            .bind(token_sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(token_row))
    }

    /// The token with this hash with its user's role and projects, in one query (every
    /// API call asks this). A disabled user's tokens are not found.
    pub async fn token_with_user(&self, token_sha256: &str) -> Result<Option<(TokenRow, String, Vec<String>)>> {
        let projects = if self.pool.is_postgres() {
            "COALESCE((SELECT json_agg(m.project) FROM memberships m WHERE m.user_name = u.name)::text, '[]')"
        } else {
            "(SELECT json_group_array(m.project) FROM memberships m WHERE m.user_name = u.name)"
        };
        let row = db::query(sqlx::AssertSqlSafe(format!(
            "SELECT t.id, t.user_name, t.name, t.scope, t.expires_at, t.revoked_at, t.last_used_at, t.created_at, \
                    u.role, {projects} \
             FROM api_tokens t JOIN users u ON u.name = t.user_name \
             WHERE t.token_sha256 = ? AND u.disabled_at IS NULL"
        )))
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let projects: String = row.get(9);
        let mut projects: Vec<String> =
            serde_json::from_str(&projects).map_err(|e| StoreError::Corrupt(format!("memberships: {e}")))?;
        projects.sort();
        Ok(Some((token_row(&row), row.get(8), projects)))
    }

    pub async fn tokens(&self, user: &str) -> Result<Vec<TokenRow>> {
        let rows = db::query(sqlx::AssertSqlSafe(format!("{TOKEN_SELECT} WHERE user_name = ? ORDER BY name")))
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(token_row).collect())
    }

    /// Revokes a user's named token (it stays listed, marked revoked).
    pub async fn revoke_token(&self, user: &str, name: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        let done =
            db::query("UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE user_name = ? AND name = ?")
                .bind(now_ms())
                .bind(user)
                .bind(name)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("token `{name}` of user `{user}`")));
        }
        Ok(())
    }

    /// Notes a token's use (at most once a minute per token, to keep writes rare).
    pub async fn touch_token(&self, id: i64, now: i64) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query("UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)")
            .bind(now)
            .bind(id)
            .bind(now - 60_000)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- sessions ----

    pub async fn create_session(
        &self,
        id_sha256: &str,
        user: &str,
        csrf: &str,
        client_ip: Option<&str>,
        expires_at: i64,
    ) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query(
            "INSERT INTO sessions (id_sha256, user_name, csrf, client_ip, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id_sha256)
        .bind(user)
        .bind(csrf)
        .bind(client_ip)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A session that has not expired.
    pub async fn session(&self, id_sha256: &str, now: i64) -> Result<Option<SessionRow>> {
        let row = db::query(
            "SELECT user_name, csrf, created_at, expires_at FROM sessions WHERE id_sha256 = ? AND expires_at > ?",
        )
        .bind(id_sha256)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| SessionRow { user: r.get(0), csrf: r.get(1), created_at: r.get(2), expires_at: r.get(3) }))
    }

    /// Ends a session (logout, or a new login replacing it); also drops expired ones.
    pub async fn delete_session(&self, id_sha256: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query("DELETE FROM sessions WHERE id_sha256 = ? OR expires_at <= ?")
            .bind(id_sha256)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends every session of `user` but the one whose hash is `keep`; answers how many.
    pub async fn end_sessions(&self, user: &str, keep: Option<&str>) -> Result<u64> {
        let _write = self.writer.lock().await;
        let done = db::query("DELETE FROM sessions WHERE user_name = ? AND (? IS NULL OR id_sha256 != ?)")
            .bind(user)
            .bind(keep)
            .bind(keep)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    // ---- audit ----

    /// Writes one line; each text field is cut to [`AUDIT_FIELD_MAX`] characters (with
    /// [`CUT_MARK`] at the end), whatever a client sent.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query("INSERT INTO audit_log (at, actor, action, object, outcome, client_ip) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(entry.at)
            .bind(cut(&entry.actor))
            .bind(cut(&entry.action))
            .bind(cut(&entry.object))
            .bind(entry.outcome)
            .bind(entry.client_ip.as_deref().map(cut))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A page of the audit log, newest first, optionally of one actor, with the total.
    pub async fn audit_log(&self, actor: Option<&str>, limit: i64, offset: i64) -> Result<(Vec<AuditEntry>, i64)> {
        let rows = db::query(
            "SELECT id, at, actor, action, object, outcome, client_ip FROM audit_log \
             WHERE (?1 IS NULL OR actor = ?1) ORDER BY id DESC LIMIT ?2 OFFSET ?3",
        )
        .bind(actor)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = db::query("SELECT COUNT(*) FROM audit_log WHERE (?1 IS NULL OR actor = ?1)")
            .bind(actor)
            .fetch_one(&self.pool)
            .await?
            .get(0);
        let items = rows
            .iter()
            .map(|r| AuditEntry {
                id: r.get(0),
                at: r.get(1),
                actor: r.get(2),
                action: r.get(3),
                object: r.get(4),
                outcome: r.get(5),
                client_ip: r.get(6),
            })
            .collect();
        Ok((items, total))
    }

    // ---- project secrets ----

    /// Sets (creates or replaces) a project secret; the value is sealed.
    pub async fn put_secret(&self, project: &str, name: &str, value: &str, by: &str) -> Result<bool> {
        let _write = self.writer.lock().await;
        let now = now_ms();
        let existed = db::query("SELECT 1 FROM secrets WHERE project = ? AND name = ?")
            .bind(project)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        let done = db::query(
            "INSERT INTO secrets (project, name, value, created_by, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (project, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(project)
        .bind(name)
        .bind(self.secret_box.seal(value))
        .bind(by)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await;
        unique(done, || format!("project `{project}`"))?;
        Ok(!existed)
    }

    /// The names of a project's secrets (`None`: of every project).
    pub async fn secret_names(&self, project: Option<&str>) -> Result<Vec<SecretName>> {
        let rows = db::query(
            "SELECT project, name, created_by, created_at, updated_at FROM secrets \
             WHERE (?1 IS NULL OR project = ?1) ORDER BY project, name",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| SecretName {
                project: r.get(0),
                name: r.get(1),
                created_by: r.get(2),
                created_at: r.get(3),
                updated_at: r.get(4),
            })
            .collect())
    }

    pub async fn delete_secret(&self, project: &str, name: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        let done = db::query("DELETE FROM secrets WHERE project = ? AND name = ?")
            .bind(project)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("secret `{name}` in project `{project}`")));
        }
        Ok(())
    }

    /// Every secret of a project with its value opened: what a run of one of its
    /// pipelines gets (and masks).
    pub async fn secret_values(&self, project: &str) -> Result<BTreeMap<String, String>> {
        let rows =
            db::query("SELECT name, value FROM secrets WHERE project = ?").bind(project).fetch_all(&self.pool).await?;
        let mut out = BTreeMap::new();
        for row in rows {
            let stored: String = row.get(1);
            out.insert(row.get(0), self.secret_box.open(&stored)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn the_default_department_and_project_exist_and_names_are_unique(s: Store) {
        assert_eq!(s.departments().await.unwrap(), vec!["Default"]);
        assert!(s.project_exists("admin").await.unwrap());
        assert!(matches!(s.create_project("web", "Nope", false).await, Err(StoreError::NotFound(_))));
        s.create_department("Eng").await.unwrap();
        s.create_project("web", "Eng", false).await.unwrap();
        assert!(matches!(s.create_project("web", "Eng", false).await, Err(StoreError::Conflict(_))));
        let u = s.create_user("ann", "manager", None, &["web".into()]).await.unwrap();
        assert_eq!(u.projects, vec!["web"]);
        assert!(matches!(s.create_user("bob", "user", None, &["ghost".into()]).await, Err(StoreError::NotFound(_))));
        assert!(s.find_user("bob").await.unwrap().is_none(), "a failed create leaves nothing");
    }

    async fn only_the_admin_project_starts_trusted_and_trust_can_change(s: Store) {
        assert!(s.project("admin").await.unwrap().trusted);
        assert!(!s.has_users_besides("admin").await.unwrap());
        s.create_project("web", "Default", false).await.unwrap();
        assert!(!s.project("web").await.unwrap().trusted);
        assert!(s.set_project_trusted("web", true).await.unwrap().trusted);
        assert!(s.projects().await.unwrap().iter().all(|p| p.trusted));
        assert!(matches!(s.set_project_trusted("ghost", true).await, Err(StoreError::NotFound(_))));
        s.create_user("ann", "user", None, &[]).await.unwrap();
        assert!(s.has_users_besides("admin").await.unwrap());
    }

    async fn secrets_are_sealed_in_the_database_and_open_for_runs(s: Store) {
        s.put_secret("admin", "API_KEY", "plain-value-123", "admin").await.unwrap();
        let raw: String = db::query("SELECT value FROM secrets").fetch_one(s.pool()).await.unwrap().get(0);
        assert!(!raw.contains("plain-value-123"));
        assert_eq!(s.secret_values("admin").await.unwrap()["API_KEY"], "plain-value-123");
    }

    async fn reseal_all_seals_legacy_plain_binding_secrets(s: Store) {
        db::query(
            "INSERT INTO bindings (name, provider, token, webhook_secret, created_at, updated_at) \
             VALUES ('gh', 'github', 'ghp_plain', 'hook-plain', 0, 0)",
        )
        .execute(s.pool())
        .await
        .unwrap();
        db::query(
            "INSERT INTO secrets (project, name, value, created_by, created_at, updated_at) \
                   VALUES ('admin', 'OLD', 'old-plain', 'admin', 0, 0)",
        )
        .execute(s.pool())
        .await
        .unwrap();
        assert_eq!(s.reseal_all().await.unwrap(), 3);
        let raw: String = db::query("SELECT token FROM bindings").fetch_one(s.pool()).await.unwrap().get(0);
        assert!(crate::secretbox::SecretBox::is_sealed(&raw));
        assert_eq!(s.binding("gh").await.unwrap().token.as_deref(), Some("ghp_plain"));
        assert_eq!(s.secret_values("admin").await.unwrap()["OLD"], "old-plain", "a secret row, keyed by two columns");
        assert_eq!(s.reseal_all().await.unwrap(), 0, "nothing left to seal");
    }

    on_both!(
        the_default_department_and_project_exist_and_names_are_unique,
        only_the_admin_project_starts_trusted_and_trust_can_change,
        secrets_are_sealed_in_the_database_and_open_for_runs,
        reseal_all_seals_legacy_plain_binding_secrets,
    );
}
