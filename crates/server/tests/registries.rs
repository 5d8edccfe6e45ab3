//! Registries over loopback HTTP against the real registry and dockerd: register
//! (credentials checked), list, upload `docker save` tarballs, tags with size and
//! creation time, delete; `image` tasks that build and push in a run; hostile input.

mod common;

use common::{Answer, TestServer, task_of};
use serde_json::{Value, json};
use std::io::Write;

fn registry_body(env: &wharf_testenv::ContainerEnv, name: &str, password: &str, workspaces: &[&str]) -> Value {
    json!({ "name": name, "url": env.registry_url, "insecure": true, "username": env.registry_user,
            "password": password, "workspaces": workspaces })
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}{}x{nanos}", std::process::id())
}

async fn upload(s: &TestServer, registry: &str, workspace: &str, body: Vec<u8>) -> Answer {
    let url = s.url(&format!("/registries/{registry}/upload?workspace={workspace}"));
    Answer::read(s.client.post(url).body(body).send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_are_registered_with_checked_credentials_and_never_show_the_password() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let s = common::start().await;

    // A wrong password is refused at registration, naming the registry.
    let wrong = s.post("/registries", registry_body(&env, "local", "wrong", &["devops"])).await.expect_error(422);
    assert!(
        wrong.error_text().contains(&format!("registry {} refused the credentials", env.registry)),
        "{}",
        wrong.text
    );
    // A registry that is down: 502 with what happened.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    drop(listener);
    let down = json!({ "name": "down", "url": dead, "insecure": true });
    let answer = s.post("/registries", down.clone()).await.expect_error(502);
    assert!(answer.error_text().contains("is unreachable"), "{}", answer.text);
    // Bad input: every problem named.
    let bad = json!({ "name": "bad name", "url": "http://hub.example.com", "workspaces": ["Dev"] });
    let answer = s.post("/registries", bad).await.expect_error(422);
    let text = answer.error_text();
    assert!(
        text.contains("not a valid registry name") && text.contains("insecure: true") && text.contains("lowercase"),
        "{text}"
    );

    let created =
        s.post("/registries", registry_body(&env, "local", &env.registry_password, &["devops"])).await.expect(201);
    assert_eq!(created.json["url"], env.registry_url);
    assert_eq!(created.json["has_password"], true);
    assert!(!created.text.contains(&env.registry_password), "{}", created.text);
    let list = s.get("/registries").await.expect(200);
    assert_eq!(list.json["total"], 1);
    assert!(!list.text.contains(&env.registry_password));
    s.post("/registries", registry_body(&env, "local", &env.registry_password, &[])).await.expect_error(409);
    s.post("/registries?verify=false", down).await.expect(201);

    // The registry that is down: listing is a 502 that says so.
    let answer = s.get("/registries/down/repositories").await.expect_error(502);
    assert!(
        answer.error_text().contains(&format!("registry `down`: registry {dead} is unreachable")),
        "{}",
        answer.text
    );

    // Workspaces.
    s.post("/registries/local/workspaces", json!({ "name": "qa" })).await.expect(201);
    s.post("/registries/local/workspaces", json!({ "name": "qa" })).await.expect_error(409);
    s.post("/registries/local/workspaces", json!({ "name": "../x" })).await.expect_error(422);
    assert_eq!(s.get("/registries/local").await.expect(200).json["workspaces"], json!(["devops", "qa"]));
    s.delete("/registries/local/workspaces/qa").await.expect(204);
    s.delete("/registries/local/workspaces/qa").await.expect_error(404);

    // A registry a pipeline pushes to cannot be removed; the pipeline is named.
    s.create(
        "name: pusher
stages:
  - name: Build
    tasks:
      - {name: build, type: image, image: app, tag: '1', workspace: devops, registry: local}
",
    )
    .await;
    let answer = s.delete("/registries/local").await.expect_error(409);
    assert!(answer.error_text().contains("`pusher`"), "{}", answer.text);
    s.delete("/registries/down").await.expect(204);
    s.get("/registries/down").await.expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarballs_upload_list_with_size_and_time_and_tags_delete() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let s = common::start().await;
    let workspace = unique("up");
    s.post("/registries", registry_body(&env, "local", &env.registry_password, &[&workspace])).await.expect(201);
    let image = unique("bb");
    let tar = common::saved_image(&env.busybox_image, &format!("anything/{image}:v1"));

    let pushed = upload(&s, "local", &workspace, tar.clone()).await.expect(201);
    let reference = format!("{}/{workspace}/{image}:v1", env.registry);
    assert_eq!(pushed.json["items"][0]["image"], reference);
    let digest = pushed.json["items"][0]["digest"].as_str().unwrap().to_owned();

    // The same image as tar.gz under a second tag.
    let tar2 = common::saved_image(&env.busybox_image, &format!("anything/{image}:v2"));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar2).unwrap();
    upload(&s, "local", &workspace, gz.finish().unwrap()).await.expect(201);

    let repos = s.get(&format!("/registries/local/repositories?workspace={workspace}")).await.expect(200);
    assert_eq!(
        repos.json["items"],
        json!([{ "name": format!("{workspace}/{image}"), "workspace": workspace, "image": image, "artifact": "image" }])
    );
    let tags = s.get(&format!("/registries/local/repositories/{workspace}/{image}/tags")).await.expect(200);
    assert_eq!(tags.json["total"], 2, "{}", tags.text);
    let v1 = tags.json["items"].as_array().unwrap().iter().find(|t| t["tag"] == "v1").unwrap().clone();
    assert_eq!(v1["digest"], digest);
    assert_eq!(v1["image"], reference);
    let created_at = std::process::Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Created}}", &env.busybox_image])
        .output()
        .unwrap();
    let created_at: jiff::Timestamp = String::from_utf8_lossy(&created_at.stdout).trim().parse().unwrap();
    assert_eq!(v1["created"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap(), created_at);
    assert!(v1["size"].as_u64().unwrap() > 100_000, "{v1}");

    // Not an image, an unregistered workspace, an empty body: 422, nothing pushed.
    let junk = upload(&s, "local", &workspace, b"this is not a tarball at all".repeat(100)).await.expect_error(422);
    assert!(junk.error_text().contains("not an image tarball"), "{}", junk.text);
    let other = upload(&s, "local", "elsewhere", tar.clone()).await.expect_error(422);
    assert!(other.error_text().contains(&format!("registered: {workspace}")), "{}", other.text);
    upload(&s, "local", &workspace, Vec::new()).await.expect_error(422);
    s.get(&format!("/registries/local/repositories/{workspace}/Bad/tags")).await.expect_error(422);
    s.get(&format!("/registries/local/repositories/{workspace}/missing/tags")).await.expect_error(404);

    // Deleting v1 deletes its manifest, which v2 shares: both go, and v2 is named.
    let deleted = s.delete(&format!("/registries/local/repositories/{workspace}/{image}/tags/v1")).await.expect(200);
    assert_eq!(deleted.json["deleted"], reference);
    assert_eq!(deleted.json["also_removed"], json!(["v2"]));
    let tags = s.get(&format!("/registries/local/repositories/{workspace}/{image}/tags")).await.expect(200);
    assert_eq!(tags.json["total"], 0, "{}", tags.text);
    s.delete(&format!("/registries/local/repositories/{workspace}/{image}/tags/v1")).await.expect_error(404);
}

const BUILD: &str = "name: build-2048
parameters: [{name: DF, default: Dockerfile}]
stages:
  - name: Build
    tasks:
      - name: build
        type: image
        dockerfile: ${DF}
        image: app
        tag: alpha-${BUILD_ID}
        workspace: WORKSPACE
        registry: local
        build_args:
          GREETING: hello-from-${BUILD_ID}
  - name: Test
    tasks:
      - name: use
        type: script
        script: echo \"image=${tasks.build.image} digest=${tasks.build.digest}\"
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_task_builds_and_pushes_in_a_run_and_hostile_paths_fail_it() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let s = common::start().await;
    let workspace = unique("run");
    s.post("/registries", registry_body(&env, "local", &env.registry_password, &[&workspace])).await.expect(201);
    // A repository in a local directory, served to the run as its source.
    let repo = s.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(
        repo.join("Dockerfile"),
        format!("FROM {}\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\n", env.busybox_image),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").args(args).current_dir(&repo).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@e", "add", "."]);
    git(&["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "app"]);
    let yaml = BUILD
        .replace("WORKSPACE", &workspace)
        .replace("parameters:", &format!("source: {{repo: 'file://{}', branch: main}}\nparameters:", repo.display()));
    s.create(&yaml).await;

    let run = common::id_of(&s.start_run("build-2048", json!({})).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let outputs = &task_of(&done, "build").unwrap()["outputs"];
    let image = format!("{}/{workspace}/app:alpha-1", env.registry);
    assert_eq!(outputs["image"], image);
    // The digest is what the registry serves under the tag.
    let tags = s.get(&format!("/registries/local/repositories/{workspace}/app/tags")).await.expect(200);
    assert_eq!(tags.json["items"][0]["tag"], "alpha-1");
    assert_eq!(outputs["digest"], tags.json["items"][0]["digest"]);
    let log = s.tail(run, "use", None).await.text;
    assert!(log.contains(&format!("image={image} digest={}", outputs["digest"].as_str().unwrap())), "{log}");
    let build_log = s.tail(run, "build", None).await.text;
    assert!(
        build_log.contains(": RUN echo \"$GREETING\"") && !build_log.contains(&env.registry_password),
        "{build_log}"
    );

    // `../../etc/passwd` as the Dockerfile: the run fails and says why; nothing pushed.
    let run = common::id_of(&s.start_run("build-2048", json!({ "DF": "../../etc/passwd" })).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "failed");
    let reason = task_of(&done, "build").unwrap()["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("dockerfile: `../../etc/passwd` leaves the checkout"), "{reason}");
    let tags = s.get(&format!("/registries/local/repositories/{workspace}/app/tags")).await.expect(200);
    assert_eq!(tags.json["total"], 1, "{}", tags.text);
    let _ = std::process::Command::new("docker").args(["rmi", &image]).output();
}

/// examples/2048 as it is: its app as a repository, its pipeline, a registry `local`
/// with the workspace `devops` and a cluster `local` (the Kubernetes test double), on a
/// docker server (the page is served in the built image; a host task of a server running
/// as root cannot reach the Docker Engine, whose socket is root's); the Deploy stage
/// applies the repository's 2048_env.yaml with the image just pushed and waits for the
/// rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_2048_example_builds_pushes_serves_its_page_and_deploys() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let s = common::start_with(tempfile::tempdir().unwrap(), |c| {
        c.executor = wharf_core::model::ExecutorKind::Docker;
        c.docker.socket = Some(env.docker.clone());
    })
    .await;
    s.post("/registries", registry_body(&env, "local", &env.registry_password, &["devops"])).await.expect(201);
    let options = wharf_kube_fake::Options {
        rollout_delay: std::time::Duration::from_millis(300),
        ..wharf_kube_fake::Options::default()
    };
    let cluster = wharf_kube_fake::KubeFake::start(options).await.unwrap();
    s.post("/clusters", json!({ "name": "local", "kubeconfig": cluster.kubeconfig() })).await.expect(201);
    let example = wharf_testenv::repo_root().join("examples/2048");
    let repo = s.dir.path().join("2048");
    let copied = std::process::Command::new("cp").arg("-R").arg(example.join("app")).arg(&repo).status().unwrap();
    assert!(copied.success());
    for args in [
        &["init", "-q", "-b", "master"][..],
        &["add", "."],
        &["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "2048"],
    ] {
        let out = std::process::Command::new("git").args(args).current_dir(&repo).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let yaml = std::fs::read_to_string(example.join("pipeline.yaml")).unwrap();
    s.create(&yaml).await;
    let parameters = json!({ "REPO": format!("file://{}", repo.display()), "BASE": env.busybox_image });
    let run = common::id_of(&s.start_run("deploy-2048", parameters).await);
    let done =
        s.wait_run_until(run, "the end", |r| common::TERMINAL.contains(&r["status"].as_str().unwrap_or(""))).await;
    let test_log = s.tail(run, "serve-page", None).await.text;
    assert_eq!(done["status"], "succeeded", "{done}\n{test_log}");
    assert!(test_log.contains("served the 2048 page and its script"), "{test_log}");
    let image = task_of(&done, "build-2048-game").unwrap()["outputs"]["image"].as_str().unwrap().to_owned();
    assert!(image.starts_with(&format!("{}/devops/jack-2048:alpha-", env.registry)), "{image}");

    // Deployed: the Deployment runs the image just pushed, and the rollout was awaited.
    let applied = task_of(&done, "deploy-2048").unwrap()["outputs"]["applied"].as_str().unwrap().to_owned();
    let kinds: Vec<&str> = applied.split(' ').map(|a| a.split('@').next().unwrap()).collect();
    assert_eq!(kinds, ["Deployment/default/jack-2048", "Service/default/svc-2048", "Ingress/default/ing-2048"]);
    let deployment = common::kube_get(&cluster, "/apis/apps/v1/namespaces/default/deployments/jack-2048").await;
    let deployment = deployment.expect("the Deployment is in the cluster");
    assert_eq!(deployment["spec"]["template"]["spec"]["containers"][0]["image"], image.as_str());
    assert_eq!(deployment["status"]["availableReplicas"], 2, "{deployment:#}");
    let deploy_log = s.tail(run, "deploy-2048", None).await.text;
    assert!(deploy_log.contains("deployment \"jack-2048\" successfully rolled out"), "{deploy_log}");
}

const PUBLISH: &str = "name: publish-chart
parameters: [{name: DIR, default: charts/app}]
stages:
  - name: Build
    tasks:
      - name: publish
        type: chart-publish
        chart_dir: ${DIR}
        chart: web
        version: 1.0.${BUILD_ID}
        workspace: WORKSPACE
        registry: local
";

/// `helm` with its own home; fails the test when it fails.
fn helm(tools: &wharf_testenv::K8sTools, home: &std::path::Path, args: &[&str], stdin: &str) -> String {
    let mut child = std::process::Command::new(&tools.helm)
        .args(args)
        .env("HOME", home)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_publish_task_pushes_a_chart_helm_pulls_and_a_broken_chart_fails_the_lint() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let s = common::start().await;
    let workspace = unique("charts");
    s.post("/registries", registry_body(&env, "local", &env.registry_password, &[&workspace])).await.expect(201);
    // A repository holding the starter chart (its image tag from the run) and a broken one.
    let repo = s.dir.path().join("repo");
    std::fs::create_dir_all(repo.join("charts")).unwrap();
    let home = s.dir.path().join("helm");
    std::fs::create_dir_all(&home).unwrap();
    let charts_dir = repo.join("charts");
    helm(&tools, &home, &["create", charts_dir.join("app").to_str().unwrap()], "");
    let values = std::fs::read_to_string(charts_dir.join("app/values.yaml")).unwrap();
    assert!(values.contains("  tag: \"\"\n"), "the starter chart changed: {values}");
    std::fs::write(
        charts_dir.join("app/values.yaml"),
        values.replace("  tag: \"\"\n", "  tag: \"alpha-${BUILD_ID}\"\n"),
    )
    .unwrap();
    helm(&tools, &home, &["create", charts_dir.join("broken").to_str().unwrap()], "");
    std::fs::write(
        charts_dir.join("broken/templates/service.yaml"),
        "kind: Service\nname: {{ .Values.x | nosuchfunc }}\n",
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").args(args).current_dir(&repo).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@e", "add", "."]);
    git(&["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "charts"]);
    let yaml = PUBLISH
        .replace("WORKSPACE", &workspace)
        .replace("parameters:", &format!("source: {{repo: 'file://{}', branch: main}}\nparameters:", repo.display()));
    s.create(&yaml).await;

    let run = common::id_of(&s.start_run("publish-chart", json!({})).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let outputs = &task_of(&done, "publish").unwrap()["outputs"];
    assert_eq!(outputs["chart"], "web");
    assert_eq!(outputs["version"], "1.0.1");
    let digest = outputs["digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha256:"), "{outputs}");

    // The registries page's API sees a chart, with the digest the task reported.
    let tags = s.get(&format!("/registries/local/repositories/{workspace}/web/tags")).await.expect(200);
    assert_eq!(tags.json["items"][0]["tag"], "1.0.1", "{}", tags.text);
    assert_eq!(tags.json["items"][0]["digest"], digest.as_str());
    assert_eq!(tags.json["items"][0]["artifact"], "chart", "{}", tags.text);
    let repositories = s.get("/registries/local/repositories").await.expect(200);
    let listed = repositories.json["items"].as_array().unwrap().iter().find(|r| r["image"] == "web").cloned();
    assert_eq!(listed.unwrap()["artifact"], "chart", "{}", repositories.text);

    // helm pulls it: renamed, versioned, the image tag substituted.
    helm(
        &tools,
        &home,
        &["registry", "login", &env.registry, "--plain-http", "-u", &env.registry_user, "--password-stdin"],
        &env.registry_password,
    );
    let reference = format!("oci://{}/{workspace}/web", env.registry);
    helm(&tools, &home, &["pull", &reference, "--version", "1.0.1", "--plain-http"], "");
    let pulled = home.join("web-1.0.1.tgz");
    let chart = helm(&tools, &home, &["show", "chart", pulled.to_str().unwrap()], "");
    assert!(chart.contains("name: web\n") && chart.contains("version: 1.0.1\n"), "{chart}");
    let values = helm(&tools, &home, &["show", "values", pulled.to_str().unwrap()], "");
    assert!(values.contains("  tag: \"alpha-1\"\n"), "{values}");

    // A chart that does not render fails the task at the lint, naming the template; nothing pushed.
    let run = common::id_of(&s.start_run("publish-chart", json!({ "DIR": "charts/broken" })).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "failed", "{done}");
    let reason = task_of(&done, "publish").unwrap()["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("chart_dir: `charts/broken` does not render"), "{reason}");
    assert!(reason.contains("templates/service.yaml"), "{reason}");
    let tags = s.get(&format!("/registries/local/repositories/{workspace}/web/tags")).await.expect(200);
    assert_eq!(tags.json["total"], 1, "{}", tags.text);
}
