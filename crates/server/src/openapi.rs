//! The OpenAPI 3.1 document, built from [`ROUTES`] — the one list of the API's
//! operations — and from the types of [`wharf_api`], which give every schema (request
//! bodies, answers, the error body). A test calls every route in it against a running
//! server, so a route listed here and missing from the router (or the other way round)
//! fails the build; a snapshot test of the whole document catches an accidental change.

use serde_json::{Map, Value, json};

/// One operation: method, path under `/api/v1`, summary, request body kind, success
/// status, and the schema of the success answer's JSON (`None`: no body, or text).
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub body: Body,
    pub status: u16,
    pub answer: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Json(&'static str),
    /// Pipeline YAML (or the same as JSON).
    Pipeline,
    /// A `docker save` tarball (tar or tar.gz), streamed.
    Tarball,
}

pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/pipelines",
        summary: "List pipelines with their last run (?limit, ?page)",
        body: Body::None,
        status: 200,
        answer: Some("PipelinePage"),
    },
    Route {
        method: "post",
        path: "/pipelines",
        summary: "Create a pipeline from YAML or JSON (?project, ?run=true to save and run); with an events \
                  trigger, the answer's `webhook` says whether its repository's webhook was installed",
        body: Body::Pipeline,
        status: 201,
        answer: Some("Saved"),
    },
    Route {
        method: "post",
        path: "/pipelines/scratch",
        summary: "Create a pipeline from the starter: the Source (`source:`, to fill in) and the stages Build, \
                  Test, Deploy",
        body: Body::Json("Scratch"),
        status: 201,
        answer: Some("Saved"),
    },
    Route {
        method: "get",
        path: "/pipelines/scratch",
        summary: "The starter pipeline (?name, default my-pipeline) as YAML and definition, without storing it: \
                  what the editor, `wharf init` and `POST /pipelines/scratch` start from",
        body: Body::None,
        status: 200,
        answer: Some("Validated"),
    },
    Route {
        method: "post",
        path: "/pipelines/validate",
        summary: "Validate YAML, or write a model (`{\"definition\"}`) as YAML and validate it; nothing is stored",
        body: Body::Pipeline,
        status: 200,
        answer: Some("Validated"),
    },
    Route {
        method: "get",
        path: "/task-types",
        summary: "Every task type and whether this server runs it (on its default executor), with what it needs \
                  when it does not",
        body: Body::None,
        status: 200,
        answer: Some("TaskTypes"),
    },
    Route {
        method: "get",
        path: "/pipelines/{key}",
        summary: "A pipeline (by id or name) with its definition and versions",
        body: Body::None,
        status: 200,
        answer: Some("PipelineShown"),
    },
    Route {
        method: "put",
        path: "/pipelines/{key}",
        summary: "Save a new version (?run=true to save and run); `webhook` as for create",
        body: Body::Pipeline,
        status: 200,
        answer: Some("Saved"),
    },
    Route {
        method: "delete",
        path: "/pipelines/{key}",
        summary: "Delete a pipeline with its runs (409 while runs are in progress)",
        body: Body::None,
        status: 204,
        answer: None,
    },
    Route {
        method: "post",
        path: "/pipelines/{key}/copy",
        summary: "Copy a pipeline under a new name",
        body: Body::Json("Copy"),
        status: 201,
        answer: Some("Saved"),
    },
    Route {
        method: "post",
        path: "/pipelines/{key}/activate",
        summary: "Let the pipeline start runs",
        body: Body::None,
        status: 200,
        answer: Some("Pipeline"),
    },
    Route {
        method: "post",
        path: "/pipelines/{key}/deactivate",
        summary: "Stop the pipeline from starting runs; history is kept",
        body: Body::None,
        status: 200,
        answer: Some("Pipeline"),
    },
    Route {
        method: "get",
        path: "/pipelines/{key}/yaml",
        summary: "The saved definition (?version=N)",
        body: Body::None,
        status: 200,
        answer: None,
    },
    Route {
        method: "get",
        path: "/pipelines/{key}/schedule",
        summary: "The next fire times of each timer trigger (?count=5, 1 to 50; ?after=RFC 3339)",
        body: Body::None,
        status: 200,
        answer: Some("Schedule"),
    },
    Route {
        method: "get",
        path: "/pipelines/{key}/runs",
        summary: "Runs of a pipeline, newest first (?limit=50, ?page)",
        body: Body::None,
        status: 200,
        answer: Some("RunPage"),
    },
    Route {
        method: "post",
        path: "/pipelines/{key}/runs",
        summary: "Start a run",
        body: Body::Json("StartRun"),
        status: 201,
        answer: Some("Accepted"),
    },
    Route {
        method: "get",
        path: "/runs/{id}",
        summary: "A run with its checkout, stages and tasks",
        body: Body::None,
        status: 200,
        answer: Some("RunDetail"),
    },
    Route {
        method: "post",
        path: "/runs/{id}/stop",
        summary: "Stop a run (SIGTERM, then SIGKILL after the grace)",
        body: Body::None,
        status: 202,
        answer: Some("Stopping"),
    },
    Route {
        method: "post",
        path: "/runs/{id}/rerun",
        summary: "Run again with the record's version, parameters and commit",
        body: Body::None,
        status: 201,
        answer: Some("Accepted"),
    },
    Route {
        method: "post",
        path: "/runs/{id}/retry",
        summary: "Retry from the failed stage, reusing what succeeded",
        body: Body::None,
        status: 201,
        answer: Some("Accepted"),
    },
    Route {
        method: "post",
        path: "/runs/{id}/tasks/{task}/approve",
        summary: "Approve a waiting `approval` task (optional comment); 403 for who may not, 409 when it is \
                  not waiting or the caller decided already",
        body: Body::Json("Decide"),
        status: 200,
        answer: Some("Decided"),
    },
    Route {
        method: "post",
        path: "/runs/{id}/tasks/{task}/reject",
        summary: "Reject a waiting `approval` task: it fails with the comment",
        body: Body::Json("Decide"),
        status: 200,
        answer: Some("Decided"),
    },
    Route {
        method: "get",
        path: "/approvals",
        summary: "The approval tasks waiting now that the caller may decide",
        body: Body::None,
        status: 200,
        answer: Some("ApprovalList"),
    },
    Route {
        method: "post",
        path: "/pipelines/{key}/stages/{stage}/hook",
        summary: "Make (or replace) the hook URL of a stage that waits with `hook: true`; the token is shown \
                  once. `POST /hooks/stages/{token}` (outside /api/v1, the token is its proof) with a JSON object \
                  signals the stage's waiting runs",
        body: Body::None,
        status: 201,
        answer: Some("StageHook"),
    },
    Route {
        method: "get",
        path: "/runs/{id}/log",
        summary: "Every log of the run as one text file",
        body: Body::None,
        status: 200,
        answer: None,
    },
    Route {
        method: "get",
        path: "/runs/{id}/tasks/{task}/log",
        summary: "A task's log from a byte offset (?offset=N; X-Log-Size, X-More-Data)",
        body: Body::None,
        status: 200,
        answer: None,
    },
    Route {
        method: "get",
        path: "/runs/{id}/tasks/{task}/log/stream",
        summary: "A task's log live, as Server-Sent Events (resumes from Last-Event-ID)",
        body: Body::None,
        status: 200,
        answer: None,
    },
    Route {
        method: "get",
        path: "/bindings",
        summary: "Repository bindings (secrets never shown; has_token, has_webhook_secret… say which are set)",
        body: Body::None,
        status: 200,
        answer: Some("BindingList"),
    },
    Route {
        method: "post",
        path: "/bindings",
        summary: "Create a repository binding (github, gitlab, gitee or git)",
        body: Body::Json("Binding"),
        status: 201,
        answer: Some("BindingInfo"),
    },
    Route {
        method: "get",
        path: "/bindings/{name}",
        summary: "A repository binding, with its webhook path",
        body: Body::None,
        status: 200,
        answer: Some("BindingInfo"),
    },
    Route {
        method: "delete",
        path: "/bindings/{name}",
        summary: "Delete (log out of) a binding; 409 naming the pipelines that still use it",
        body: Body::None,
        status: 204,
        answer: None,
    },
    Route {
        method: "get",
        path: "/bindings/{name}/repos",
        summary: "The repositories the binding's token can see at its provider",
        body: Body::None,
        status: 200,
        answer: Some("RepositoryList"),
    },
    Route {
        method: "get",
        path: "/bindings/{name}/repos/{repo}/branches",
        summary: "A repository's branches ({repo} is the full name; its slashes as they are or as %2F)",
        body: Body::None,
        status: 200,
        answer: Some("Branches"),
    },
    Route {
        method: "get",
        path: "/bindings/{name}/authorize",
        summary: "The provider's OAuth authorize address, with a state valid 10 minutes (?redirect_uri)",
        body: Body::None,
        status: 200,
        answer: Some("Authorization"),
    },
    Route {
        method: "put",
        path: "/bindings/{name}/token",
        summary: "Set a personal access token as the binding's token",
        body: Body::Json("Token"),
        status: 200,
        answer: Some("BindingInfo"),
    },
    Route {
        method: "get",
        path: "/deliveries",
        summary: "Webhook deliveries, newest first, with their verdict and the runs they started (?limit, ?page)",
        body: Body::None,
        status: 200,
        answer: Some("DeliveryPage"),
    },
    Route {
        method: "get",
        path: "/deliveries/{delivery}",
        summary: "A webhook delivery with its headers (secrets redacted) and body",
        body: Body::None,
        status: 200,
        answer: Some("DeliveryShown"),
    },
    Route {
        method: "post",
        path: "/deliveries/{delivery}/replay",
        summary: "Handle a stored delivery again (not re-verified; 409 for a rejected one), as a new delivery",
        body: Body::None,
        status: 201,
        answer: Some("Handled"),
    },
    Route {
        method: "get",
        path: "/registries",
        summary: "Registries with their workspaces (the password is never shown; has_password says whether one is set)",
        body: Body::None,
        status: 200,
        answer: Some("Registries"),
    },
    Route {
        method: "post",
        path: "/registries",
        summary: "Register a registry; its credentials are checked against it unless ?verify=false",
        body: Body::Json("Registry"),
        status: 201,
        answer: Some("RegistryInfo"),
    },
    Route {
        method: "get",
        path: "/registries/{name}",
        summary: "A registry with its workspaces",
        body: Body::None,
        status: 200,
        answer: Some("RegistryInfo"),
    },
    Route {
        method: "post",
        path: "/registries/{name}/workspaces",
        summary: "Register a workspace (a repository namespace such as devops)",
        body: Body::Json("Workspace"),
        status: 201,
        answer: Some("RegistryInfo"),
    },
    Route {
        method: "get",
        path: "/registries/{name}/repositories",
        summary: "The registry's repositories (workspace/image), from its catalog (?workspace)",
        body: Body::None,
        status: 200,
        answer: Some("ImageRepositoryList"),
    },
    Route {
        method: "post",
        path: "/registries/{name}/upload",
        summary: "Push a docker save tarball (tar or tar.gz, up to 2 GB) to ?workspace=W; an existing tag is overwritten",
        body: Body::Tarball,
        status: 201,
        answer: Some("PushedList"),
    },
    Route {
        method: "get",
        path: "/registries/{name}/repositories/{workspace}/{image}/tags",
        summary: "An image's tags with digest, size and creation time, newest first",
        body: Body::None,
        status: 200,
        answer: Some("Tags"),
    },
    Route {
        method: "delete",
        path: "/registries/{name}/repositories/{workspace}/{image}/tags/{tag}",
        summary: "Delete a tag (its manifest: other tags of the same digest go too, and are named)",
        body: Body::None,
        status: 200,
        answer: Some("TagDeleted"),
    },
    Route {
        method: "delete",
        path: "/registries/{name}/workspaces/{workspace}",
        summary: "Forget a workspace (its images stay in the registry)",
        body: Body::None,
        status: 204,
        answer: None,
    },
    Route {
        method: "delete",
        path: "/registries/{name}",
        summary: "Forget a registry (409 naming the pipelines that push to it; its images stay)",
        body: Body::None,
        status: 204,
        answer: None,
    },
    Route {
        method: "get",
        path: "/clusters",
        summary: "Kubernetes clusters the caller may view (?project), with their stored health (the kubeconfig is never shown)",
        body: Body::None,
        status: 200,
        answer: Some("Clusters"),
    },
    Route {
        method: "post",
        path: "/clusters",
        summary: "Register a cluster from a kubeconfig (project `admin` unless given): checked (version, namespaces \
                  listable) and its pipeline namespace ecp-devops-<short id> applied unless ?verify=false; 422 for a \
                  bad kubeconfig (exec and auth-provider plugins refused), refused credentials or bad settings, 502 \
                  when unreachable, 403 for an internal address outbound_allow does not name",
        body: Body::Json("NewCluster"),
        status: 201,
        answer: Some("ClusterInfo"),
    },
    Route {
        method: "get",
        path: "/clusters/{name}",
        summary: "A cluster; its health is checked again first when the last check is older than 30 s (waiting at most 5 s)",
        body: Body::None,
        status: 200,
        answer: Some("ClusterInfo"),
    },
    Route {
        method: "patch",
        path: "/clusters/{name}",
        summary: "Change a cluster's settings for the kubernetes executor (pod defaults, pending_limit, workspace) \
                  as a JSON merge patch: the fields given replace, null clears; 422 with every problem at its field",
        body: Body::Json("ClusterSettings"),
        status: 200,
        answer: Some("ClusterInfo"),
    },
    Route {
        method: "post",
        path: "/clusters/{name}/check",
        summary: "Check a cluster now and, when healthy, apply its pipeline namespace again; the outcome is in `health`",
        body: Body::None,
        status: 200,
        answer: Some("ClusterInfo"),
    },
    Route {
        method: "delete",
        path: "/clusters/{name}",
        summary: "Forget a cluster (409 ClusterInUse naming the pipelines whose latest version deploys to it; nothing \
                  in the cluster is deleted)",
        body: Body::None,
        status: 204,
        answer: None,
    },
    Route {
        method: "get",
        path: "/clusters/{name}/releases",
        summary: "Helm releases (template instances) in a cluster at their latest revision, whether chart-deploy or \
                  helm installed them (?namespace to narrow), read from Helm's release Secrets",
        body: Body::None,
        status: 200,
        answer: Some("Releases"),
    },
    Route {
        method: "get",
        path: "/clusters/{name}/namespaces/{ns}/releases/{release}",
        summary: "A release with its history, values, notes and the registry/workspace/chart it came from",
        body: Body::None,
        status: 200,
        answer: Some("ReleaseDetail"),
    },
    Route {
        method: "post",
        path: "/clusters/{name}/namespaces/{ns}/releases/{release}/rollback",
        summary: "Roll back: a new revision from an old one's chart, values and manifest, as helm rollback (hooks \
                  and rollouts waited for, at most 10 min); 409 while another operation is pending",
        body: Body::Json("Rollback"),
        status: 200,
        answer: Some("Operation"),
    },
    Route {
        method: "post",
        path: "/clusters/{name}/namespaces/{ns}/releases/{release}/upgrade",
        summary: "Upgrade to another chart version, pulled from where the release came from (or registry/workspace \
                  given); values kept unless given",
        body: Body::Json("Upgrade"),
        status: 200,
        answer: Some("Operation"),
    },
    Route {
        method: "delete",
        path: "/clusters/{name}/namespaces/{ns}/releases/{release}",
        summary: "Uninstall: pre-delete hooks, the release's objects deleted, post-delete hooks, every revision removed",
        body: Body::None,
        status: 200,
        answer: Some("Operation"),
    },
    Route {
        method: "get",
        path: "/openapi.json",
        summary: "This document",
        body: Body::None,
        status: 200,
        answer: None,
    },
    Route {
        method: "post",
        path: "/login",
        summary: "Log in (JSON or form): a session cookie (Secure, HttpOnly, SameSite=Strict) and its csrf_token; 429 after repeated failures or too many logins from the address, 503 when every hashing slot is busy",
        body: Body::Json("Login"),
        status: 200,
        answer: Some("LoggedIn"),
    },
    Route {
        method: "get",
        path: "/me",
        summary: "Who the caller is: name, role, projects (and the session's csrf_token)",
        body: Body::None,
        status: 200,
        answer: Some("Me"),
    },
    Route {
        method: "get",
        path: "/departments",
        summary: "Departments (admins)",
        body: Body::None,
        status: 200,
        answer: Some("DepartmentList"),
    },
    Route {
        method: "post",
        path: "/departments",
        summary: "Create a department (admins)",
        body: Body::Json("Department"),
        status: 201,
        answer: Some("Department"),
    },
    Route {
        method: "get",
        path: "/projects",
        summary: "Projects: all for admins, the joined ones for others",
        body: Body::None,
        status: 200,
        answer: Some("ProjectList"),
    },
    Route {
        method: "post",
        path: "/projects",
        summary: "Create a project in a department (admins)",
        body: Body::Json("Project"),
        status: 201,
        answer: Some("ProjectInfo"),
    },
    Route {
        method: "patch",
        path: "/projects/{name}",
        summary: "Mark a project trusted or not: whether its tasks may run on the host on a server with several \
                  users (admins)",
        body: Body::Json("ProjectUpdate"),
        status: 200,
        answer: Some("ProjectInfo"),
    },
    Route {
        method: "get",
        path: "/users",
        summary: "Users with their roles and projects (admins)",
        body: Body::None,
        status: 200,
        answer: Some("UserList"),
    },
    Route {
        method: "post",
        path: "/users",
        summary: "Create a user: admin, manager or user, with the projects they join (admins)",
        body: Body::Json("User"),
        status: 201,
        answer: Some("UserInfo"),
    },
    Route {
        method: "put",
        path: "/users/{name}",
        summary: "Change a user's role, projects (the whole list), password, or disable/enable them (admins)",
        body: Body::Json("UserUpdate"),
        status: 200,
        answer: Some("UserInfo"),
    },
    Route {
        method: "get",
        path: "/users/{name}/tokens",
        summary: "A user's API tokens: names, scopes, dates, never the tokens (admins, or the user)",
        body: Body::None,
        status: 200,
        answer: Some("TokenList"),
    },
    Route {
        method: "post",
        path: "/users/{name}/tokens",
        summary: "Create an API token, shown in this answer only (admins for anyone, users for themselves)",
        body: Body::Json("NewToken"),
        status: 201,
        answer: Some("TokenCreated"),
    },
    Route {
        method: "delete",
        path: "/users/{name}/tokens/{token}",
        summary: "Revoke an API token at once",
        body: Body::None,
        status: 204,
        answer: None,
    },
    Route {
        method: "delete",
        path: "/users/{name}",
        summary: "Delete a user with their tokens, sessions and memberships (admins; not yourself, `admin`, or the last admin)",
        body: Body::None,
        status: 204,
        answer: None,
    },
    Route {
        method: "get",
        path: "/audit",
        summary: "The audit log, newest first: who, what, which object, outcome, when, from where (admins; ?actor, ?limit, ?page)",
        body: Body::None,
        status: 200,
        answer: Some("AuditPage"),
    },
    Route {
        method: "get",
        path: "/secrets",
        summary: "Project secrets' names, never values (?project)",
        body: Body::None,
        status: 200,
        answer: Some("SecretList"),
    },
    Route {
        method: "put",
        path: "/secrets/{name}",
        summary: "Set a project secret (?project, default admin); 201 new, 204 replaced; never readable back",
        body: Body::Json("Secret"),
        status: 201,
        answer: Some("SecretCreated"),
    },
    Route {
        method: "delete",
        path: "/secrets/{name}",
        summary: "Delete a project secret (?project)",
        body: Body::None,
        status: 204,
        answer: None,
    },
    Route {
        method: "post",
        path: "/logout",
        summary: "End the login session and clear its cookie",
        body: Body::None,
        status: 204,
        answer: None,
    },
];

/// Every schema, from the types of [`wharf_api`].
fn schemas() -> Value {
    let schemas: Map<String, Value> = wharf_api::schemas()
        .into_iter()
        .map(|(name, schema)| (name, serde_json::to_value(schema).expect("a schema is JSON")))
        .collect();
    Value::Object(schemas)
}

/// The success answer: its JSON schema by name, or only a description.
fn success(answer: Option<&str>) -> Value {
    match answer {
        Some(schema) => json!({ "description": "success", "content": { "application/json": {
            "schema": { "$ref": format!("#/components/schemas/{schema}") } } } }),
        None => json!({ "description": "success" }),
    }
}

pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut op = json!({
            "summary": route.summary,
            "operationId": format!("{}{}", route.method, route.path.replace(['/', '{', '}'], "_")),
            "responses": {
                route.status.to_string(): success(route.answer),
                "401": { "description": "missing, wrong, expired or revoked token, and no session", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "403": { "description": "the permission matrix refuses this (or a read-only token, a missing CSRF token, the pipeline limit)", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "404": { "description": "not found", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "409": { "description": "conflicts with the current state", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                "422": { "description": "invalid body or query; details carry field paths", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        });
        let mut params = Vec::new();
        for name in ["key", "id", "task", "name", "delivery", "repo", "workspace", "image", "tag", "token"] {
            if route.path.contains(&format!("{{{name}}}")) {
                params.push(json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }));
            }
        }
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        match route.body {
            Body::None => {}
            Body::Json(schema) => {
                op["requestBody"] = json!({ "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } });
            }
            Body::Tarball => {
                op["requestBody"] = json!({ "required": true, "content": {
                    "application/x-tar": { "schema": { "type": "string", "format": "binary" } },
                    "application/gzip": { "schema": { "type": "string", "format": "binary" } } } });
            }
            Body::Pipeline => {
                op["requestBody"] = json!({ "required": true, "content": {
                    "application/yaml": { "schema": { "type": "string" } },
                    "application/json": { "schema": { "type": "object" } } } });
            }
        }
        let entry = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        entry[route.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Wharf API", "version": env!("CARGO_PKG_VERSION"),
                  "description": "Pipelines, runs and logs. Authorization: Bearer <token>, or the session cookie from POST /login with X-CSRF-Token on changes." },
        "servers": [ { "url": "/api/v1" } ],
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
        },
        "security": [ { "bearer": [] } ],
        "paths": paths
    })
}
