//! Clusters: Kubernetes clusters a project deploys to. The kubeconfig is a secret:
//! written sealed by [`Store::create_cluster`] ([`crate::secretbox`]) and opened only for
//! a connection ([`Store::cluster_access`], [`Store::clusters_of_project`]), never part
//! of [`Cluster`].
//!
//! **The short id** names the cluster's pipeline namespace `ecp-devops-<short id>`: 8
//! random lowercase hex digits ([`Store::unused_cluster_short_id`]), made once at
//! registration and never changed, unique among this server's clusters. Random rather
//! than derived from the name, so that two Wharf servers registering the same cluster
//! under the same name, or a cluster removed and registered again, never share a
//! namespace by accident.

use std::fmt;

use wharf_core::pod::ClusterSettings;

use crate::db::{self, DbRow};
use crate::{Result, Store, StoreError, now_ms};

/// A cluster's last check, as stored. A closed set: the API answers its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// No connection, or no answer in time.
    Unreachable,
    /// The API server refused the credentials (401).
    Unauthorized,
    /// The credentials may not do what the check needs (403).
    Forbidden,
    /// The server's outbound policy refused the address (an admin's `outbound_allow`).
    Refused,
    /// Anything else (TLS, an unexpected answer).
    Error,
    /// Registered with `?verify=false` and not checked since.
    Unchecked,
}

impl Health {
    pub const ALL: [Health; 7] = [
        Health::Healthy,
        Health::Unreachable,
        Health::Unauthorized,
        Health::Forbidden,
        Health::Refused,
        Health::Error,
        Health::Unchecked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unreachable => "unreachable",
            Health::Unauthorized => "unauthorized",
            Health::Forbidden => "forbidden",
            Health::Refused => "refused",
            Health::Error => "error",
            Health::Unchecked => "unchecked",
        }
    }

    pub fn parse(text: &str) -> Option<Health> {
        Health::ALL.into_iter().find(|h| h.as_str() == text)
    }
}

/// What a check found: stored with the cluster and replaced by each new check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub health: Health,
    /// What went wrong, in the API server's words; `None` when healthy or unchecked.
    pub error: Option<String>,
    /// `None`: never checked.
    pub checked_at: Option<i64>,
    /// From the last successful check (kept when a later check fails).
    pub version: Option<String>,
    /// Ready and total nodes, when the credentials may list them.
    pub nodes: Option<(u32, u32)>,
}

impl Check {
    /// Never checked (`?verify=false`).
    pub fn unchecked() -> Check {
        Check { health: Health::Unchecked, error: None, checked_at: None, version: None, nodes: None }
    }
}

/// A registered cluster, without its kubeconfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    pub id: i64,
    pub name: String,
    pub project: String,
    /// The API server URL of the chosen context.
    pub server: String,
    pub context: String,
    /// See the module docs.
    pub short_id: String,
    pub check: Check,
    /// The kubernetes executor's settings for this cluster (pod defaults, pending limit,
    /// workspace).
    pub settings: ClusterSettings,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What registering a cluster stores. `Debug` hides the kubeconfig.
#[derive(Clone)]
pub struct NewCluster {
    pub name: String,
    pub project: String,
    pub server: String,
    pub context: String,
    /// The kubeconfig text; sealed before it is written.
    pub kubeconfig: String,
    /// From [`Store::unused_cluster_short_id`].
    pub short_id: String,
    pub check: Check,
    pub settings: ClusterSettings,
    pub created_by: String,
}

impl fmt::Debug for NewCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCluster")
            .field("name", &self.name)
            .field("project", &self.project)
            .field("server", &self.server)
            .field("context", &self.context)
            .field("kubeconfig", &"***")
            .field("short_id", &self.short_id)
            .field("check", &self.check)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a run needs to reach a cluster: its name, the unsealed kubeconfig and the context
/// (the fields of `wharf_executor::deploy::ClusterLogin`), and the short id of its pipeline
/// namespace. `Debug` hides the kubeconfig.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterAccess {
    pub name: String,
    pub kubeconfig: String,
    pub context: String,
    pub short_id: String,
    pub settings: ClusterSettings,
}

impl fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterAccess")
            .field("name", &self.name)
            .field("kubeconfig", &"***")
            .field("context", &self.context)
            .field("short_id", &self.short_id)
            .field("settings", &self.settings)
            .finish()
    }
}

const SELECT: &str = "SELECT id, name, project, server, context, short_id, version, nodes_ready, nodes_total, \
                      health, health_error, checked_at, created_by, created_at, updated_at, settings FROM clusters";

fn cluster_row(row: &DbRow) -> Result<Cluster> {
    let name: String = row.get(1);
    let health: String = row.get(9);
    let health = Health::parse(&health)
        .ok_or_else(|| StoreError::Corrupt(format!("cluster `{name}` has the unknown health `{health}`")))?;
    let nodes = match (row.get::<Option<i64>>(7), row.get::<Option<i64>>(8)) {
        (Some(ready), Some(total)) => Some((ready as u32, total as u32)),
        _ => None,
    };
    Ok(Cluster {
        id: row.get(0),
        name,
        project: row.get(2),
        server: row.get(3),
        context: row.get(4),
        short_id: row.get(5),
        check: Check { health, error: row.get(10), checked_at: row.get(11), version: row.get(6), nodes },
        settings: settings_of(&row.get::<String>(15))
            .map_err(|why| StoreError::Corrupt(format!("cluster `{}`: {why}", row.get::<String>(1))))?,
        created_by: row.get(12),
        created_at: row.get(13),
        updated_at: row.get(14),
    })
}

fn settings_of(text: &str) -> std::result::Result<ClusterSettings, String> {
    serde_json::from_str(text).map_err(|e| format!("its stored settings are not readable: {e}"))
}

fn settings_text(settings: &ClusterSettings) -> String {
    serde_json::to_string(settings).expect("cluster settings serialize")
}

/// 8 random lowercase hex digits.
fn random_short_id() -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// A short id no cluster has (see the module docs). Registration asks for it first, so
    /// the pipeline namespace can be made before the cluster is stored.
    pub async fn unused_cluster_short_id(&self) -> Result<String> {
        // 2^32 ids: a clash is rare, eight in a row means something else is wrong.
        for _ in 0..8 {
            let id = random_short_id();
            let taken = db::query("SELECT 1 FROM clusters WHERE short_id = ?")
                .bind(&id)
                .fetch_optional(&self.pool)
                .await?
                .is_some();
            if !taken {
                return Ok(id);
            }
        }
        Err(StoreError::Corrupt("no unused cluster short id after 8 tries".into()))
    }

    /// Registers a cluster; a name in use is a `Conflict`, an unknown project `NotFound`.
    pub async fn create_cluster(&self, new: &NewCluster) -> Result<Cluster> {
        let write = self.writer.lock().await;
        if !self.project_exists(&new.project).await? {
            return Err(StoreError::NotFound(format!("project `{}`", new.project)));
        }
        let exists = db::query("SELECT 1 FROM clusters WHERE name = ?").bind(&new.name).fetch_optional(&self.pool);
        if exists.await?.is_some() {
            return Err(StoreError::Conflict(format!("a cluster named `{}` already exists", new.name)));
        }
        let now = now_ms();
        let c = &new.check;
        let done = db::query(
            "INSERT INTO clusters (name, project, server, context, kubeconfig, short_id, version, nodes_ready, \
             nodes_total, health, health_error, checked_at, created_by, created_at, updated_at, settings) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&new.name)
        .bind(&new.project)
        .bind(&new.server)
        .bind(&new.context)
        .bind(self.seal_secret(Some(&new.kubeconfig)))
        .bind(&new.short_id)
        .bind(&c.version)
        .bind(c.nodes.map(|n| n.0 as i64))
        .bind(c.nodes.map(|n| n.1 as i64))
        .bind(c.health.as_str())
        .bind(&c.error)
        .bind(c.checked_at)
        .bind(&new.created_by)
        .bind(now)
        .bind(now)
        .bind(settings_text(&new.settings))
        .execute(&self.pool)
        .await;
        match done {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "the short id `{}` was taken meanwhile; register the cluster again",
                    new.short_id
                )));
            }
            Err(e) => return Err(e.into()),
        }
        drop(write);
        self.cluster(&new.name).await
    }

    pub async fn cluster(&self, name: &str) -> Result<Cluster> {
        let row = db::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE name = ?")))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("cluster `{name}`")))?;
        cluster_row(&row)
    }

    /// Every cluster, by name (the caller filters by what the user may view).
    pub async fn clusters(&self) -> Result<Vec<Cluster>> {
        let rows = db::query(sqlx::AssertSqlSafe(format!("{SELECT} ORDER BY name"))).fetch_all(&self.pool).await?;
        rows.iter().map(cluster_row).collect()
    }

    /// Stores a new check's outcome. A failed check keeps the version and nodes the
    /// last successful one found (`check.version`/`nodes` `None` keep them).
    pub async fn record_cluster_check(&self, name: &str, check: &Check) -> Result<Cluster> {
        let write = self.writer.lock().await;
        let done = db::query(
            "UPDATE clusters SET health = ?, health_error = ?, checked_at = ?, version = COALESCE(?, version), \
             nodes_ready = CASE WHEN ? IS NULL THEN nodes_ready ELSE ? END, \
             nodes_total = CASE WHEN ? IS NULL THEN nodes_total ELSE ? END, updated_at = ? WHERE name = ?",
        )
        .bind(check.health.as_str())
        .bind(&check.error)
        .bind(check.checked_at)
        .bind(&check.version)
        .bind(check.nodes.map(|n| n.0 as i64))
        .bind(check.nodes.map(|n| n.0 as i64))
        .bind(check.nodes.map(|n| n.1 as i64))
        .bind(check.nodes.map(|n| n.1 as i64))
        .bind(now_ms())
        .bind(name)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("cluster `{name}`")));
        }
        drop(write);
        self.cluster(name).await
    }

    /// Replaces the cluster's settings (the caller checked them).
    pub async fn set_cluster_settings(&self, name: &str, settings: &ClusterSettings) -> Result<Cluster> {
        let write = self.writer.lock().await;
        let done = db::query("UPDATE clusters SET settings = ?, updated_at = ? WHERE name = ?")
            .bind(settings_text(settings))
            .bind(now_ms())
            .bind(name)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("cluster `{name}`")));
        }
        drop(write);
        self.cluster(name).await
    }

    /// The cluster `name` with its kubeconfig unsealed, to connect to it.
    pub async fn cluster_access(&self, name: &str) -> Result<ClusterAccess> {
        let row = db::query("SELECT name, kubeconfig, context, short_id, settings FROM clusters WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("cluster `{name}`")))?;
        self.access_row(&row)
    }

    /// Every cluster of `project` with its kubeconfig unsealed, by name: what a run of the
    /// project's pipelines may deploy to (a task's `cluster:` names one of them).
    pub async fn clusters_of_project(&self, project: &str) -> Result<Vec<ClusterAccess>> {
        let rows = db::query(
            "SELECT name, kubeconfig, context, short_id, settings FROM clusters WHERE project = ? ORDER BY name",
        )
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| self.access_row(row)).collect()
    }

    fn access_row(&self, row: &DbRow) -> Result<ClusterAccess> {
        let name: String = row.get(0);
        let kubeconfig = self
            .open_secret(row.get(1))?
            .ok_or_else(|| StoreError::Corrupt(format!("cluster `{name}` has no kubeconfig")))?;
        let settings = settings_of(&row.get::<String>(4))
            .map_err(|why| StoreError::Corrupt(format!("cluster `{name}`: {why}")))?;
        Ok(ClusterAccess { name, kubeconfig, context: row.get(2), short_id: row.get(3), settings })
    }

    /// Forgets a cluster (nothing in the cluster is deleted). The caller checks first that
    /// no pipeline uses it.
    pub async fn delete_cluster(&self, name: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        let done = db::query("DELETE FROM clusters WHERE name = ?").bind(name).execute(&self.pool).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("cluster `{name}`")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = "apiVersion: v1\nusers:\n- name: u\n  user:\n    token: sup3r-s3cret-t0ken\n";

    async fn new(s: &Store, name: &str, project: &str) -> NewCluster {
        NewCluster {
            name: name.into(),
            project: project.into(),
            server: "https://k8s.example:6443".into(),
            context: "prod".into(),
            kubeconfig: KUBECONFIG.into(),
            short_id: s.unused_cluster_short_id().await.unwrap(),
            check: Check {
                health: Health::Healthy,
                error: None,
                checked_at: Some(5),
                version: Some("v1.33.2".into()),
                nodes: Some((2, 3)),
            },
            settings: ClusterSettings::default(),
            created_by: "ann".into(),
        }
    }

    #[test]
    fn health_text_round_trips() {
        for h in Health::ALL {
            assert_eq!(Health::parse(h.as_str()), Some(h));
        }
        assert_eq!(Health::parse("fine"), None);
    }

    async fn the_kubeconfig_is_sealed_and_only_access_opens_it(s: Store) {
        let n = new(&s, "prod", "admin").await;
        assert!(!format!("{n:?}").contains("sup3r"));
        let c = s.create_cluster(&n).await.unwrap();
        assert_eq!((c.name.as_str(), c.project.as_str(), c.context.as_str()), ("prod", "admin", "prod"));
        assert_eq!(c.check.nodes, Some((2, 3)));
        assert_eq!(c.short_id.len(), 8);
        assert!(c.short_id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{}", c.short_id);
        assert!(!format!("{c:?}").contains("sup3r"));
        let raw: String = db::query("SELECT kubeconfig FROM clusters").fetch_one(s.pool()).await.unwrap().get(0);
        assert!(!raw.contains("sup3r"), "sealed at rest");
        let access = s.cluster_access("prod").await.unwrap();
        assert_eq!(access.kubeconfig, KUBECONFIG);
        assert_eq!(access.short_id, c.short_id);
        assert!(!format!("{access:?}").contains("sup3r"));
        // Rotation re-seals it with the rest.
        assert!(
            crate::secretbox::SEALED_COLUMNS.iter().any(|(t, _, cols)| *t == "clusters" && cols == &["kubeconfig"])
        );
    }

    async fn names_are_unique_projects_must_exist_and_lists_are_by_project(s: Store) {
        s.create_project("web", "Default", false).await.unwrap();
        s.create_cluster(&new(&s, "b", "web").await).await.unwrap();
        s.create_cluster(&new(&s, "a", "web").await).await.unwrap();
        s.create_cluster(&new(&s, "c", "admin").await).await.unwrap();
        let dup = s.create_cluster(&new(&s, "a", "admin").await).await.unwrap_err();
        assert!(matches!(&dup, StoreError::Conflict(m) if m.contains("`a` already exists")), "{dup}");
        let ghost = s.create_cluster(&new(&s, "d", "ghost").await).await.unwrap_err();
        assert!(matches!(ghost, StoreError::NotFound(_)));
        let names: Vec<_> = s.clusters_of_project("web").await.unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(s.clusters_of_project("nobody").await.unwrap().is_empty());
        let all: Vec<_> = s.clusters().await.unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(all, ["a", "b", "c"]);
        let ids: std::collections::BTreeSet<_> = s.clusters().await.unwrap().into_iter().map(|c| c.short_id).collect();
        assert_eq!(ids.len(), 3, "short ids are unique");
        s.delete_cluster("a").await.unwrap();
        assert!(matches!(s.delete_cluster("a").await, Err(StoreError::NotFound(_))));
        assert!(matches!(s.cluster("a").await, Err(StoreError::NotFound(_))));
    }

    async fn a_failed_check_keeps_what_the_last_good_one_found(s: Store) {
        let mut n = new(&s, "prod", "admin").await;
        n.check = Check::unchecked();
        assert_eq!(s.create_cluster(&n).await.unwrap().check, Check::unchecked());
        let good = Check {
            health: Health::Healthy,
            error: None,
            checked_at: Some(10),
            version: Some("v1.33.2".into()),
            nodes: Some((1, 1)),
        };
        assert_eq!(s.record_cluster_check("prod", &good).await.unwrap().check, good);
        let bad = Check {
            health: Health::Unreachable,
            error: Some("connection refused".into()),
            checked_at: Some(20),
            version: None,
            nodes: None,
        };
        let after = s.record_cluster_check("prod", &bad).await.unwrap().check;
        assert_eq!(after.health, Health::Unreachable);
        assert_eq!(after.error.as_deref(), Some("connection refused"));
        assert_eq!(
            (after.checked_at, after.version.as_deref(), after.nodes),
            (Some(20), Some("v1.33.2"), Some((1, 1)))
        );
        assert!(matches!(s.record_cluster_check("ghost", &good).await, Err(StoreError::NotFound(_))));
    }

    async fn settings_are_stored_replaced_and_read_with_the_access(s: Store) {
        use wharf_core::pod::{WorkspaceMode, WorkspaceSettings};
        let mut n = new(&s, "prod", "admin").await;
        n.settings.pod.service_account = Some("builder".into());
        n.settings.pending_limit = Some(wharf_core::duration::Duration::from_secs(90));
        let c = s.create_cluster(&n).await.unwrap();
        assert_eq!(c.settings, n.settings);
        let mut changed = c.settings.clone();
        changed.workspace = WorkspaceSettings {
            mode: WorkspaceMode::Claim,
            storage_class: Some("fast".into()),
            size: Some("5Gi".into()),
        };
        changed.pod.node_selector.insert("pool".into(), "ci".into());
        assert_eq!(s.set_cluster_settings("prod", &changed).await.unwrap().settings, changed);
        assert_eq!(s.cluster_access("prod").await.unwrap().settings, changed);
        assert_eq!(s.clusters_of_project("admin").await.unwrap()[0].settings, changed);
        assert!(matches!(s.set_cluster_settings("ghost", &changed).await, Err(StoreError::NotFound(_))));
    }

    on_both!(
        settings_are_stored_replaced_and_read_with_the_access,
        the_kubeconfig_is_sealed_and_only_access_opens_it,
        names_are_unique_projects_must_exist_and_lists_are_by_project,
        a_failed_check_keeps_what_the_last_good_one_found,
    );
}
