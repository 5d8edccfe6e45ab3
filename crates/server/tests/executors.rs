//! Which executor runs a pipeline on the server: a pipeline's `executor:` wins over the
//! server's default; `executor: docker` on a host server is refused when the run is
//! started; on a docker server a task with an image runs in a container, one without
//! runs on the host where `allow_host` says so and fails asking for an image where it
//! does not.

mod common;

use common::*;
use reqwest::header::AUTHORIZATION;
use serde_json::json;
use std::time::Duration;
use wharf_core::model::ExecutorKind;
use wharf_server::{Server, ServerConfig};

async fn docker_server(allow_host: bool) -> Option<TestServer> {
    let env = wharf_testenv::containers_or_fail_in_ci()?;
    let dir = tempfile::tempdir().unwrap();
    wharf_testenv::server_root(dir.path());
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_token = Some(TOKEN.to_owned());
    config.host_env = vec![("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())];
    config.stop_grace = Duration::from_secs(2);
    config.executor = ExecutorKind::Docker;
    config.docker.socket = Some(env.docker.clone());
    config.docker.network = Some("none".into());
    config.allow_host = allow_host;
    let server = Server::start(config).await.expect("the server starts");
    let base = format!("http://{}", server.addr);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
    let client = reqwest::Client::builder().default_headers(headers).build().unwrap();
    Some(TestServer { server, base, client, dir })
}

fn image() -> String {
    wharf_testenv::containers().map(|e| e.busybox_image).unwrap_or_else(|| "wharf-test/busybox:1.35".into())
}

async fn log_of(s: &TestServer, run: i64, task: &str) -> String {
    s.tail(run, task, None).await.expect(200).text
}

#[tokio::test]
async fn a_host_server_refuses_docker_pipelines_when_they_start() {
    let s = start().await;
    let yaml = format!(
        "name: wants-docker\nexecutor: docker\ndefault_image: {}\nstages:\n  - name: A\n    tasks:\n      \
         - {{name: t, type: script, script: echo hi}}\n",
        image()
    );
    s.create(&yaml).await;
    let answer = s.post("/pipelines/wants-docker/runs", json!({})).await.expect_error(422);
    assert!(answer.error_text().contains("asks for the docker executor"), "{}", answer.error_text());
}

#[tokio::test]
async fn a_docker_server_runs_images_in_containers_and_the_rest_on_the_host() {
    let Some(s) = docker_server(true).await else { return };
    // Inside a container the hostname is the container's id, not this machine's.
    let host_name = std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim().to_owned();
    let yaml = format!(
        "name: mixed\nstages:\n  - name: A\n    tasks:\n      \
         - {{name: boxed, type: script, image: {}, script: 'echo \"in $(hostname)\"'}}\n      \
         - {{name: bare, type: script, script: 'echo \"in $(hostname)\"'}}\n",
        image()
    );
    s.create(&yaml).await;
    let run = id_of(&s.start_run("mixed", json!({})).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let boxed = log_of(&s, run, "boxed").await;
    let bare = log_of(&s, run, "bare").await;
    assert!(boxed.contains(" out in ") && !boxed.contains(&format!("in {host_name}\n")), "{boxed}");
    assert!(bare.contains(&format!("out in {host_name}")), "{bare}");

    // `executor: host` wins: the image is ignored and said so.
    let yaml = format!(
        "name: on-host\nexecutor: host\nstages:\n  - name: A\n    tasks:\n      \
         - {{name: t, type: script, image: {}, script: 'echo \"in $(hostname)\"'}}\n",
        image()
    );
    s.create(&yaml).await;
    let run = id_of(&s.start_run("on-host", json!({})).await);
    assert_eq!(s.wait_run(run).await["status"], "succeeded");
    let log = log_of(&s, run, "t").await;
    assert!(log.contains("ignores image") && log.contains(&format!("out in {host_name}")), "{log}");
}

#[tokio::test]
async fn without_host_execution_a_task_without_image_is_refused_at_start() {
    let Some(s) = docker_server(false).await else { return };
    s.create("name: bare\nstages:\n  - name: A\n    tasks:\n      - {name: t, type: script, script: echo hi}\n").await;
    let answer = s.post("/pipelines/bare/runs", json!({})).await.expect_error(422);
    let why = answer.error_text();
    assert!(why.contains("A/t name no image") && why.contains("default_image"), "{why}");
    // With a default image it runs, in a container.
    let yaml = format!(
        "name: boxed\ndefault_image: {}\nstages:\n  - name: A\n    tasks:\n      - {{name: t, type: script, script: echo hi}}\n",
        image()
    );
    s.create(&yaml).await;
    let run = id_of(&s.start_run("boxed", json!({})).await);
    assert_eq!(s.wait_run(run).await["status"], "succeeded");
    assert!(log_of(&s, run, "t").await.contains("out hi"));
}

#[tokio::test]
async fn a_docker_server_pulls_with_the_credentials_of_the_registered_registry() {
    let Some(s) = docker_server(true).await else { return };
    let env = wharf_testenv::containers().expect("docker_server checked it");
    let registry = json!({ "name": "local", "url": env.registry_url, "insecure": true,
                           "username": env.registry_user, "password": env.registry_password,
                           "workspaces": ["pull"] });
    s.post("/registries", registry).await.expect(201);
    // The image exists only in the registry (uploaded there, never in this daemon), which
    // answers nobody without the password.
    let name = format!("bb{}", std::process::id());
    let tarball = saved_image(&env.busybox_image, &format!("wharf-pull/{name}:v1"));
    let upload = s.client.post(s.url("/registries/local/upload?workspace=pull")).body(tarball).send().await.unwrap();
    assert_eq!(upload.status(), 201, "{}", upload.text().await.unwrap());
    let image = format!("{}/pull/{name}", env.registry);
    let _ = std::process::Command::new("docker").args(["rmi", &format!("{image}:v1")]).output();

    let yaml = format!(
        "name: pulls\nstages:\n  - name: A\n    tasks:\n      \
         - {{name: t, type: script, image: {image}, tag: v1, script: 'echo pulled-and-ran'}}\n"
    );
    s.create(&yaml).await;
    let run = id_of(&s.start_run("pulls", json!({})).await);
    let done = s.wait_run(run).await;
    let log = log_of(&s, run, "t").await;
    let _ = std::process::Command::new("docker").args(["rmi", &format!("{image}:v1")]).output();
    assert_eq!(done["status"], "succeeded", "{done:#}\n{log}");
    assert!(log.contains("pulled-and-ran"), "{log}");
    assert!(!log.contains(&env.registry_password), "{log}");
}

/// A container has the run's outputs directory mounted (as root inside): links it
/// plants there are never followed by the server — not to read the server's own
/// environment into the record, not to truncate `secret.key` through a link named
/// like the next attempt's output file (issue 11, finding 2).
#[tokio::test]
async fn links_a_container_plants_for_wharf_output_are_never_followed() {
    let Some(s) = docker_server(false).await else { return };
    let key = s.dir.path().join("data/secret.key");
    let key_before = std::fs::read(&key).expect("the server made its key file");
    let yaml = format!(
        r#"name: links
default_image: {image}
stages:
  - name: A
    mode: parallel
    on_error: ignore
    tasks:
      - name: environ
        type: script
        outputs: [CARGO_PKG_NAME]
        script: ln -sf /proc/self/environ "$WHARF_OUTPUT"
      - name: truncate
        type: script
        retries: 1
        script: |
          case "$WHARF_OUTPUT" in
            *-1.env) ln -s {key} "$(dirname "$WHARF_OUTPUT")/0-1-2.env"; exit 1 ;;
          esac
          echo "attempt 2 found $(wc -c < "$WHARF_OUTPUT") bytes"
"#,
        image = image(),
        key = key.display()
    );
    s.create(&yaml).await;
    let run = id_of(&s.start_run("links", json!({})).await);
    let done = s.wait_run(run).await;
    let tasks = &done["stages"][0]["tasks"];
    assert_eq!(tasks[0]["status"], "failed", "{done:#}");
    assert!(tasks[0]["reason"].as_str().unwrap_or("").contains("symbolic link"), "{done:#}");
    // The test process (the server here) has CARGO_PKG_NAME=wharf-server in its environment.
    assert!(!done.to_string().contains("wharf-server"), "the server's environment reached the record: {done:#}");
    assert_eq!(tasks[1]["status"], "succeeded", "{done:#}");
    assert!(log_of(&s, run, "truncate").await.contains("attempt 2 found 0 bytes"));
    assert_eq!(std::fs::read(&key).unwrap(), key_before, "secret.key was written through the link");
}
