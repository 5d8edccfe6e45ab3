//! Authorisation: the one function every API handler asks, [`check`], and the
//! permission matrix of seed 002 §2.5 it implements, row by row, in [`MATRIX`].
//!
//! The seed's words, and what they mean here:
//!
//! | seed | [`Scope`] | allowed when |
//! | --- | --- | --- |
//! | √ | `All` | always (every object of every project) |
//! | 仅Default/admin项目 "only the Default/admin project" | `DefaultAdmin` | the object is in project `admin` (department `Default`) |
//! | 仅已加入项目 "only joined projects" | `Joined` | the object's project is one the caller joined |
//! | 仅该用户创建对象 "only objects the user created" | `Own` | the object's `created_by` is the caller |
//! | (blank) | `Never` | never |
//!
//! In the seed's table the rows "set code repository", "log out" and the cluster rows
//! "add" and "remove" have blank cells. The same table shows vertically merged cells
//! as blanks below the first (the first column, 流水线 / 代码仓库 / 集群配置, is written
//! once per group), so these blanks continue the cell above: every role may set and
//! log out of the repositories it created, and add and remove clusters where it may
//! view them. Read literally, nobody at all (not even the cloud administrator) could
//! set up a repository or a cluster, which the rest of the manual contradicts.
//!
//! Rows beyond the seed (secrets, tenancy administration, audit, tokens) are marked so.
//!
//! A denied call answers `404` when the caller may not even view the object (its
//! existence must not leak: a pipeline of another project, another user's binding) and
//! `403` when the caller sees it but may not do this. Handlers check before they change
//! anything, so a denied call changes nothing.
//!
//! To guard a new route: take a [`Caller`] as an argument (an axum extractor; the
//! request is already authenticated) and call
//! `authz::check(&caller, Action::X, &Object::…)?` before acting.

use crate::error::AppError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt;

/// The project every install has, in department `Default`.
pub const ADMIN_PROJECT: &str = "admin";
pub const DEFAULT_DEPARTMENT: &str = "Default";

/// The seed's three kinds of user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// 云管理员, cloud administrator.
    Admin,
    /// 部门管理员/项目经理, department administrator / project manager.
    Manager,
    /// 普通用户, normal user.
    User,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Manager, Role::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::User => "user",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    fn column(self) -> usize {
        self as usize
    }
}

/// What an API token may do: `read` only GET (and HEAD), `write` everything its user may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenScope {
    Read,
    Write,
}

impl TokenScope {
    pub fn parse(text: &str) -> Option<TokenScope> {
        match text {
            "read" => Some(TokenScope::Read),
            "write" => Some(TokenScope::Write),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Write => "write",
        }
    }
}

/// How the caller proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    Token {
        scope: TokenScope,
    },
    /// A UI session (cookie); `id_sha256` names the session row.
    Session {
        id_sha256: String,
    },
}

/// The authenticated user behind a request, put into the request by the
/// authentication layer; handlers take it as an argument.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The projects the user joined.
    pub projects: BTreeSet<String>,
    pub via: Via,
    pub client_ip: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or(AppError::Unauthorized)
    }
}

/// Everything a person can be allowed or denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    // Pipelines (流水线); runs, logs and schedules follow their pipeline.
    /// 信息展示: see it, its runs, logs, schedule.
    ViewPipeline,
    /// 从零开始创建: create from scratch (or from YAML).
    CreatePipeline,
    /// 从已有流水线复制: copy an existing one.
    CopyPipeline,
    /// 执行/停止: start, stop, re-run, retry runs.
    RunPipeline,
    /// 编辑流水线: stages, tasks, source, variables.
    EditPipeline,
    /// 编辑触发规则: triggers.
    EditTriggers,
    /// 高级设置: timeout and the other settings.
    AdvancedSettings,
    /// 激活/停用.
    ActivatePipeline,
    /// 删除.
    DeletePipeline,
    // Code repositories (代码仓库 = repository bindings).
    /// 信息展示: see a binding, its repositories and branches.
    ViewRepository,
    /// 设置代码仓库: create a binding, set its token, connect it through OAuth.
    SetRepository,
    /// 注销账户: delete (log out of) a binding.
    LogOutRepository,
    /// Beyond the seed: give a binding an instance URL (a self-hosted GitLab, Gitee or
    /// GitHub Enterprise), a place the server then calls with the binding's token and
    /// OAuth client secret.
    SetInstanceUrl,
    // Clusters (集群配置), for the Kubernetes issue.
    ViewCluster,
    AddCluster,
    RemoveCluster,
    /// Roll back, upgrade and uninstall the Helm releases (template instances) in a
    /// cluster; seeing them is `ViewCluster`.
    ManageReleases,
    // Beyond the seed.
    /// See registries, their workspaces, repositories and tags (everyone who builds
    /// images names them).
    ViewRegistry,
    /// Add and remove registries and workspaces, upload images, delete tags.
    ManageRegistry,
    /// List a project's secret names.
    ViewSecrets,
    /// Set or delete a project's secrets.
    ManageSecrets,
    /// Departments, projects, users; rotating keys.
    ManageTenancy,
    /// Read the audit log.
    ViewAudit,
    /// Create, list and revoke a user's API tokens.
    ManageTokens,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ViewPipeline => "view pipeline",
            Action::CreatePipeline => "create pipeline",
            Action::CopyPipeline => "copy pipeline",
            Action::RunPipeline => "run/stop pipeline",
            Action::EditPipeline => "edit pipeline",
            Action::EditTriggers => "edit triggers",
            Action::AdvancedSettings => "advanced settings",
            Action::ActivatePipeline => "activate/deactivate pipeline",
            Action::DeletePipeline => "delete pipeline",
            Action::ViewRepository => "view code repository",
            Action::SetRepository => "set code repository",
            Action::LogOutRepository => "log out code repository",
            Action::SetInstanceUrl => "set a binding's instance URL",
            Action::ViewCluster => "view cluster",
            Action::AddCluster => "add cluster",
            Action::RemoveCluster => "remove cluster",
            Action::ManageReleases => "manage releases",
            Action::ViewRegistry => "view registries",
            Action::ManageRegistry => "manage registries",
            Action::ViewSecrets => "view secrets",
            Action::ManageSecrets => "manage secrets",
            Action::ManageTenancy => "manage departments, projects and users",
            Action::ViewAudit => "view the audit log",
            Action::ManageTokens => "manage API tokens",
        }
    }

    /// The action whose denial hides the object (404 instead of 403).
    fn view(self) -> Option<Action> {
        match self {
            Action::ViewPipeline
            | Action::CopyPipeline
            | Action::RunPipeline
            | Action::EditPipeline
            | Action::EditTriggers
            | Action::AdvancedSettings
            | Action::ActivatePipeline
            | Action::DeletePipeline => Some(Action::ViewPipeline),
            Action::ViewRepository | Action::SetRepository | Action::LogOutRepository => Some(Action::ViewRepository),
            Action::ViewCluster | Action::RemoveCluster | Action::ManageReleases => Some(Action::ViewCluster),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action is done to: enough facts to decide, nothing more.
#[derive(Clone, Copy, Debug)]
pub enum Object<'a> {
    Pipeline {
        name: &'a str,
        project: &'a str,
        created_by: &'a str,
    },
    /// A project as the place of a new pipeline, cluster or secret.
    Project(&'a str),
    /// A repository binding (setting up a new one: `created_by` is the caller).
    Repository {
        name: &'a str,
        created_by: &'a str,
    },
    Cluster {
        name: &'a str,
        project: &'a str,
    },
    /// An OCI registry (installation-wide, like the registry service of seed 002 §2.7).
    Registry {
        name: &'a str,
    },
    /// A user, as the owner of API tokens.
    User(&'a str),
    /// The installation itself (tenancy administration, audit).
    System,
}

impl<'a> Object<'a> {
    /// The facts [`check`] needs about a pipeline.
    pub fn pipeline(row: &'a wharf_store::PipelineRow) -> Self {
        Object::Pipeline { name: &row.name, project: &row.project, created_by: &row.created_by }
    }

    /// The facts [`check`] needs about a repository binding.
    pub fn binding(binding: &'a wharf_store::bindings::Binding) -> Self {
        Object::Repository { name: &binding.name, created_by: &binding.created_by }
    }

    fn project(&self) -> Option<&str> {
        match self {
            Object::Pipeline { project, .. } | Object::Cluster { project, .. } => Some(project),
            Object::Project(p) => Some(p),
            _ => None,
        }
    }

    fn created_by(&self) -> Option<&str> {
        match self {
            Object::Pipeline { created_by, .. } | Object::Repository { created_by, .. } => Some(created_by),
            _ => None,
        }
    }

    /// How a 404 names it.
    fn describe(&self) -> String {
        match self {
            Object::Pipeline { name, .. } => format!("pipeline `{name}`"),
            Object::Project(p) => format!("project `{p}`"),
            Object::Repository { name, .. } => format!("binding `{name}`"),
            Object::Cluster { name, .. } => format!("cluster `{name}`"),
            Object::Registry { name } => format!("registry `{name}`"),
            Object::User(u) => format!("user `{u}`"),
            Object::System => "the installation".into(),
        }
    }
}

/// Where a role may do an action (one cell of the matrix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// √
    All,
    /// 仅Default/admin项目
    DefaultAdmin,
    /// 仅已加入项目
    Joined,
    /// 仅该用户创建对象
    Own,
    /// Only the caller's own user (tokens).
    Yourself,
    /// blank
    Never,
}

use Scope::{All, DefaultAdmin, Joined, Never, Own, Yourself};

/// Seed 002 §2.5, row by row: `[cloud admin, department admin / project manager,
/// normal user]`.
pub const MATRIX: &[(Action, [Scope; 3])] = &[
    (Action::ViewPipeline, [All, Joined, Own]),
    (Action::CreatePipeline, [DefaultAdmin, Joined, Never]),
    (Action::CopyPipeline, [All, Joined, Never]),
    (Action::RunPipeline, [All, Joined, Never]),
    (Action::EditPipeline, [Own, Own, Never]),
    (Action::EditTriggers, [Own, Own, Never]),
    (Action::AdvancedSettings, [Own, Own, Never]),
    (Action::ActivatePipeline, [All, Joined, Never]),
    (Action::DeletePipeline, [All, Joined, Never]),
    (Action::ViewRepository, [Own, Own, Own]),
    (Action::SetRepository, [Own, Own, Own]),
    (Action::LogOutRepository, [Own, Own, Own]),
    (Action::ViewCluster, [DefaultAdmin, Joined, Never]),
    (Action::AddCluster, [DefaultAdmin, Joined, Never]),
    (Action::RemoveCluster, [DefaultAdmin, Joined, Never]),
    (Action::ManageReleases, [DefaultAdmin, Joined, Never]),
    // Beyond the seed: registries are shared infrastructure; secrets go with running
    // pipelines; administration with the admin.
    (Action::ViewRegistry, [All, All, All]),
    // Where the server sends tokens and client secrets is the admin's decision.
    (Action::SetInstanceUrl, [All, Never, Never]),
    (Action::ManageRegistry, [All, Never, Never]),
    (Action::ViewSecrets, [All, Joined, Never]),
    (Action::ManageSecrets, [All, Joined, Never]),
    (Action::ManageTenancy, [All, Never, Never]),
    (Action::ViewAudit, [All, Never, Never]),
    (Action::ManageTokens, [All, Yourself, Yourself]),
];

/// The cell of the matrix for a role and an action.
pub fn scope(role: Role, action: Action) -> Scope {
    MATRIX.iter().find(|(a, _)| *a == action).map_or(Never, |(_, cells)| cells[role.column()])
}

/// A refusal: `hidden` when the caller may not even see the object (answered 404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub action: Action,
    pub hidden: bool,
    pub message: String,
}

impl From<Denied> for AppError {
    fn from(d: Denied) -> Self {
        if d.hidden { AppError::NotFound(d.message) } else { AppError::Forbidden(d.message) }
    }
}

fn allowed(caller: &Caller, action: Action, object: &Object<'_>) -> bool {
    user_may(&caller.name, caller.role, &caller.projects, action, object)
}

/// The matrix for a user who is not the caller of a request: the server acting for
/// the creator of a pipeline (choosing the binding of its repository, starting it
/// from a webhook), with the role and projects the user has now.
pub fn user_may(name: &str, role: Role, projects: &BTreeSet<String>, action: Action, object: &Object<'_>) -> bool {
    match scope(role, action) {
        All => true,
        DefaultAdmin => object.project() == Some(ADMIN_PROJECT),
        Joined => object.project().is_some_and(|p| projects.contains(p)),
        Own => object.created_by() == Some(name),
        Yourself => matches!(object, Object::User(u) if *u == name),
        Never => false,
    }
}

/// The one authorisation function: may `caller` do `action` to `object`?
pub fn check(caller: &Caller, action: Action, object: &Object<'_>) -> Result<(), Denied> {
    if allowed(caller, action, object) {
        return Ok(());
    }
    let hidden = action.view().is_some_and(|view| !allowed(caller, view, object));
    let message = if hidden {
        object.describe()
    } else {
        let role = caller.role.as_str();
        let why = match scope(caller.role, action) {
            Never => format!("the {role} role may not {action}"),
            DefaultAdmin => format!("the {role} role may {action} only in project `{ADMIN_PROJECT}`"),
            Joined => format!("the {role} role may {action} only in projects it joined"),
            Own => format!("the {role} role may {action} only for objects it created"),
            Yourself => format!("the {role} role may {action} only for itself"),
            // `All` always allows; a denial never comes from it.
            All => "denied".into(),
        };
        format!("user `{}` may not {action} on {}: {why}", caller.name, object.describe())
    };
    Err(Denied { action, hidden, message })
}

/// Whether `caller` may view pipelines of `project` created by `created_by` (for lists).
pub fn sees_pipeline(caller: &Caller, project: &str, created_by: &str) -> bool {
    allowed(caller, Action::ViewPipeline, &Object::Pipeline { name: "", project, created_by })
}

/// Whether the user `creator` (of a pipeline) may view `binding`, by the permission
/// matrix with the role and projects the user has now. A user who no longer exists
/// sees nothing.
pub async fn creator_sees(
    store: &wharf_store::Store,
    creator: &str,
    binding: &wharf_store::bindings::Binding,
) -> Result<bool, wharf_store::StoreError> {
    let Some(user) = store.find_user(creator).await? else { return Ok(false) };
    let Some(role) = Role::parse(&user.role) else { return Ok(false) };
    let projects = user.projects.into_iter().collect();
    Ok(user_may(&user.name, role, &projects, Action::ViewRepository, &Object::binding(binding)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, projects: &[&str]) -> Caller {
        Caller {
            name: "me".into(),
            role,
            projects: projects.iter().map(|p| p.to_string()).collect(),
            via: Via::Token { scope: TokenScope::Write },
            client_ip: None,
        }
    }

    /// The cluster rows (`/clusters`, `api::clusters`), walked here over every role and
    /// project kind against the seed's words; `tests/clusters.rs` drives the routes.
    /// Removing a cluster one may not view is hidden (404), adding one is not (403).
    #[test]
    fn cluster_rows_follow_the_seed() {
        for role in Role::ALL {
            let me = caller(role, &["alpha"]);
            for action in [Action::ViewCluster, Action::AddCluster, Action::RemoveCluster] {
                for project in ["admin", "alpha", "beta"] {
                    let cluster = Object::Cluster { name: "c", project };
                    let allowed = check(&me, action, &cluster).is_ok();
                    let expected = match role {
                        Role::Admin => project == "admin",
                        Role::Manager => project == "alpha",
                        Role::User => false,
                    };
                    assert_eq!(allowed, expected, "{role:?} {action:?} in {project}");
                    if action == Action::AddCluster {
                        assert_eq!(check(&me, action, &Object::Project(project)).is_ok(), expected);
                    }
                    if let Err(denied) = check(&me, action, &cluster) {
                        assert_eq!(denied.hidden, action != Action::AddCluster, "{role:?} {action:?} in {project}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_action_has_exactly_one_row() {
        for (i, (a, _)) in MATRIX.iter().enumerate() {
            assert!(MATRIX[i + 1..].iter().all(|(b, _)| b != a), "{a:?} twice");
        }
    }

    #[test]
    fn the_seed_cells_decide() {
        let admin = caller(Role::Admin, &[]);
        let other = Object::Pipeline { name: "p", project: "web", created_by: "ann" };
        let mine_in_admin = Object::Pipeline { name: "p", project: "admin", created_by: "me" };
        assert!(check(&admin, Action::ViewPipeline, &other).is_ok());
        // Admin sees it but did not create it: 403, not 404.
        let denied = check(&admin, Action::EditPipeline, &other).unwrap_err();
        assert!(!denied.hidden, "{denied:?}");
        assert!(check(&admin, Action::EditPipeline, &mine_in_admin).is_ok());
        assert!(check(&admin, Action::CreatePipeline, &Object::Project("web")).is_err());
        assert!(check(&admin, Action::CreatePipeline, &Object::Project("admin")).is_ok());

        let manager = caller(Role::Manager, &["web"]);
        assert!(check(&manager, Action::DeletePipeline, &other).is_ok());
        assert!(check(&manager, Action::EditPipeline, &other).is_err());
        let elsewhere = Object::Pipeline { name: "p", project: "shop", created_by: "me" };
        // Created by the manager, but in a project it left: hidden for view-rules by project.
        assert!(check(&manager, Action::RunPipeline, &elsewhere).unwrap_err().hidden);

        let user = caller(Role::User, &["web"]);
        assert!(check(&user, Action::ViewPipeline, &other).unwrap_err().hidden);
        let own = Object::Pipeline { name: "p", project: "web", created_by: "me" };
        assert!(check(&user, Action::ViewPipeline, &own).is_ok());
        assert!(!check(&user, Action::RunPipeline, &own).unwrap_err().hidden);
        assert!(check(&user, Action::SetRepository, &Object::Repository { name: "b", created_by: "me" }).is_ok());
        assert!(
            check(&user, Action::ViewRepository, &Object::Repository { name: "b", created_by: "x" })
                .unwrap_err()
                .hidden
        );
        assert!(check(&user, Action::ViewCluster, &Object::Cluster { name: "c", project: "web" }).is_err());
        assert!(check(&user, Action::ManageTokens, &Object::User("me")).is_ok());
        assert!(check(&user, Action::ManageTokens, &Object::User("ann")).is_err());
        let registry = Object::Registry { name: "hub" };
        assert!(check(&user, Action::ViewRegistry, &registry).is_ok());
        assert!(check(&manager, Action::ManageRegistry, &registry).is_err());
        assert!(check(&admin, Action::ManageRegistry, &registry).is_ok());
    }
}
