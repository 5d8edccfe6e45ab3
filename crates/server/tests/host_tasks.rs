//! Who may put tasks on the host executor (issue 11): nobody where `allow_host` is
//! false (`executor: host` included); on a server with users besides `admin`, only
//! projects an administrator marked trusted; only administrators mark them.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

fn one_task(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\n{extra}stages:\n  - name: Main\n    tasks:\n      - {{name: main, type: script, script: echo hi}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_host_is_refused_where_the_server_allows_no_host_execution() {
    let s = start_with(tempfile::tempdir().unwrap(), |c| c.allow_host = false).await;
    s.create(&one_task("on-host", "executor: host\n")).await;
    let answer = s.post("/pipelines/on-host/runs", json!({})).await.expect_error(422);
    let why = answer.error_text();
    assert!(why.contains("Main/main would run on the host executor") && why.contains("allow_host = false"), "{why}");
    // Save-and-run is refused before anything is saved.
    let saved = s.send_yaml(Method::POST, "/pipelines?run=true", &one_task("never-saved", "executor: host\n")).await;
    assert!(saved.expect_error(422).error_text().contains("allow_host = false"));
    s.get("/pipelines/never-saved").await.expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_user_server_only_trusted_projects_run_host_tasks() {
    let s = start().await;
    let created = s.post("/projects", json!({ "name": "web" })).await.expect(201).json;
    assert_eq!(created["trusted"], false, "projects start untrusted");
    let store = &s.server.state.store;
    store.create_pipeline_by("web", "hosted", &one_task("hosted", ""), "admin", None).await.unwrap();

    // One user (the built-in admin): nobody else's code can be on the server.
    let run = id_of(&s.start_run("hosted", json!({})).await);
    assert_eq!(s.wait_run(run).await["status"], "succeeded");

    let mia = s.user("mia", "manager", &["web"]).await;
    let refused = s.post("/pipelines/hosted/runs", json!({})).await.expect_error(422);
    let why = refused.error_text();
    assert!(
        why.contains("Main/main would run on the host executor") && why.contains("project `web` is not trusted"),
        "{why}"
    );
    assert!(why.contains("PATCH /api/v1/projects/web"), "says how: {why}");

    // Only an administrator decides.
    mia.call(Method::PATCH, "/projects/web", Some(json!({ "trusted": true }))).await.expect_error(403);
    assert!(!store.project("web").await.unwrap().trusted);
    let trusted = s.call(Method::PATCH, "/projects/web", Some(json!({ "trusted": true }))).await.expect(200).json;
    assert_eq!(trusted["trusted"], true);
    let listed = s.get("/projects").await.expect(200).json;
    assert!(listed["items"].as_array().unwrap().iter().any(|p| p["name"] == "web" && p["trusted"] == true));
    s.call(Method::PATCH, "/projects/ghost", Some(json!({ "trusted": true }))).await.expect_error(404);
    s.call(Method::PATCH, "/projects/web", Some(json!({ "trusted": "yes" }))).await.expect_error(422);

    let run = id_of(&mia.post("/pipelines/hosted/runs", json!({})).await.expect(201).json);
    assert_eq!(s.wait_run(run).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_server_without_its_task_user_refuses_host_tasks_and_says_how_to_create_it() {
    if !wharf_testenv::root_or_skip("a missing task user matters only to a server running as root") {
        return;
    }
    let s = start_with(tempfile::tempdir().unwrap(), |c| c.host_user = "wharf-no-such-user".into()).await;
    s.create(&one_task("hosted", "")).await;
    let why = s.post("/pipelines/hosted/runs", json!({})).await.expect_error(422).error_text();
    assert!(why.contains("Main/main would run on the host executor"), "{why}");
    assert!(why.contains("useradd --system") && why.contains("wharf-no-such-user"), "{why}");

    // Never as root, even when named.
    let s = start_with(tempfile::tempdir().unwrap(), |c| c.host_user = "root".into()).await;
    s.create(&one_task("hosted", "")).await;
    let why = s.post("/pipelines/hosted/runs", json!({})).await.expect_error(422).error_text();
    assert!(why.contains("must not run as root"), "{why}");
}

/// A git repository with one commit, at `<s.dir>/<name>`, as a server's disk holds them.
fn local_repo(s: &TestServer, name: &str) -> std::path::PathBuf {
    let repo = s.dir.path().join(name);
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("secret.txt"), "not for other projects\n").unwrap();
    for args in [&["init", "-q", "-b", "main"][..], &["add", "secret.txt"], &["commit", "-q", "-m", "one"]] {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    repo
}

fn from_source(name: &str, repo: &str, extra: &str) -> String {
    format!(
        "name: {name}\nsource:\n  repo: {repo}\n{extra}stages:\n  - name: Main\n    tasks:\n      - {{name: main, \
         type: script, script: cat secret.txt}}\n"
    )
}

/// A docker server (tasks with an image run in containers) with the test licence.
async fn docker_server(allow_host: bool) -> Option<TestServer> {
    let env = wharf_testenv::containers_or_fail_in_ci()?;
    let s = start_with(tempfile::tempdir().unwrap(), |c| {
        c.executor = wharf_core::model::ExecutorKind::Docker;
        c.docker.socket = Some(env.docker.clone());
        c.docker.network = Some("none".into());
        c.allow_host = allow_host;
    })
    .await;
    Some(s)
}

fn busybox() -> String {
    wharf_testenv::containers().map(|e| e.busybox_image).unwrap_or_else(|| "wharf-test/busybox:1.35".into())
}

/// Cloning a repository on the server's disk reads it with the server's rights (other
/// projects' checkouts, root-only repositories): allowed only where host tasks are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_user_server_only_trusted_projects_clone_local_repositories() {
    let s = start().await;
    let repo = local_repo(&s, "private");
    s.post("/projects", json!({ "name": "web" })).await.expect(201);
    let store = &s.server.state.store;
    for (name, repo) in [("by-path", repo.display().to_string()), ("by-url", format!("file://{}", repo.display()))] {
        store.create_pipeline_by("web", name, &from_source(name, &repo, ""), "admin", None).await.unwrap();
    }
    // One user: the admin's own server, as before.
    let run = id_of(&s.start_run("by-path", json!({})).await);
    assert_eq!(s.wait_run(run).await["status"], "succeeded");

    let mia = s.user("mia", "manager", &["web"]).await;
    for name in ["by-path", "by-url"] {
        let answer = mia.post(&format!("/pipelines/{name}/runs"), json!({})).await.expect_error(422);
        let why = answer.error_text();
        assert_eq!(answer.json["error"]["details"][0]["path"], "source.repo", "{}", answer.text);
        assert!(
            why.contains("repository on the server's own disk") && why.contains("project `web` is not trusted"),
            "{why}"
        );
    }
    s.call(Method::PATCH, "/projects/web", Some(json!({ "trusted": true }))).await.expect(200);
    let run = id_of(&mia.post("/pipelines/by-url/runs", json!({})).await.expect(201).json);
    assert_eq!(s.wait_run(run).await["status"], "succeeded");
}

/// `source.repo: ${REPO}` cannot be judged before the run: the engine refuses the
/// rendered local address, before git runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_templated_repo_rendering_to_a_local_path_is_not_cloned_for_an_untrusted_project() {
    let Some(s) = docker_server(true).await else { return };
    let repo = local_repo(&s, "private");
    s.post("/projects", json!({ "name": "web" })).await.expect(201);
    let extra = format!("parameters:\n  - REPO\ndefault_image: {}\n", busybox());
    let yaml = from_source("templated", "${REPO}", &extra);
    s.server.state.store.create_pipeline_by("web", "templated", &yaml, "admin", None).await.unwrap();
    let user = s.user("mia", "manager", &["web"]).await;

    let run = user
        .post("/pipelines/templated/runs", json!({ "parameters": { "REPO": repo.display().to_string() } }))
        .await
        .expect(201)
        .json;
    let run = s.wait_run(id_of(&run)).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let text = run.to_string();
    assert!(text.contains("source.repo") && text.contains("repository on the server's own disk"), "{run:#}");
    let src = s.dir.path().join("data/workspaces").join(id_of(&run).to_string()).join("src");
    assert!(
        !src.join("secret.txt").exists() && !src.join(".git").exists(),
        "nothing was cloned into {}",
        src.display()
    );
}

/// Where the server runs nothing on the host, it clones nothing from its disk either,
/// even for tasks that all run in containers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_host_execution_refuses_local_repositories() {
    let Some(s) = docker_server(false).await else { return };
    let repo = local_repo(&s, "private");
    let extra = format!("default_image: {}\n", busybox());
    s.create(&from_source("local", &format!("file://{}", repo.display()), &extra)).await;
    let answer = s.post("/pipelines/local/runs", json!({})).await.expect_error(422);
    assert_eq!(answer.json["error"]["details"][0]["path"], "source.repo", "{}", answer.text);
    assert!(answer.error_text().contains("allow_host = false"), "{}", answer.error_text());
}
