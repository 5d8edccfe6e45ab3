//! `executor: kubernetes` on the server: a pipeline naming a registered cluster (the
//! Kubernetes test double with its kubelet, so pods really run on the local Docker Engine)
//! runs its `script` tasks as pods in the cluster's `ecp-devops-<id>` namespace: outputs
//! and the workspace carried between stages, parallel tasks, exit codes, logs stored by
//! Wharf, nothing left in the namespace; the server's `--default-cluster` for pipelines
//! that name none; a pipeline without a cluster (and no default) is refused at run start,
//! one naming an unknown cluster fails with a clear message; without a Docker Engine,
//! `image` tasks of such pipelines build in a builder pod (the BuildKit stand-in).

mod common;

use common::*;
use serde_json::{Value, json};
use wharf_kube_fake::{KubeFake, Options};

fn image() -> String {
    wharf_testenv::containers().map(|e| e.busybox_image).unwrap_or_else(|| "wharf-test/busybox:1.35".into())
}

async fn log_of(s: &TestServer, run: i64, task: &str) -> String {
    s.tail(run, task, None).await.expect(200).text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_tasks_run_as_pods_in_the_clusters_namespace() {
    let Some(_env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let fake = KubeFake::start(Options { kubelet: Some("docker".into()), ..Options::default() }).await.unwrap();
    let s = start().await;
    let cluster = s.post("/clusters", json!({"name": "prod", "kubeconfig": fake.kubeconfig()})).await.expect(201);
    let namespace = cluster.json["namespace"].as_str().unwrap().to_owned();
    let yaml = format!(
        "name: on-kube\nexecutor: kubernetes\ncluster: prod\ndefault_image: {}\nstages:\n  \
         - name: Build\n    tasks:\n      \
         - {{name: build, type: script, script: 'echo \"built in $(hostname)\"; echo v1 > made.txt; echo VERSION=1.2.3 >> \"$WHARF_OUTPUT\"', outputs: [VERSION]}}\n  \
         - name: Test\n    mode: parallel\n    tasks:\n      \
         - {{name: one, type: script, script: 'cat made.txt; echo \"version ${{tasks.build.VERSION}}\"'}}\n      \
         - {{name: two, type: script, script: 'echo failing >&2; exit 4'}}\n",
        image()
    );
    s.create(&yaml).await;
    let run = id_of(&s.start_run("on-kube", json!({})).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let build = log_of(&s, run, "build").await;
    assert!(build.contains(&format!("in a pod of {} in namespace {namespace} of cluster prod", image())), "{build}");
    assert!(build.contains("out built in wharf-"), "the pod's hostname: {build}");
    let one = log_of(&s, run, "one").await;
    assert!(one.contains("out v1") && one.contains("out version 1.2.3"), "{one}");
    assert_eq!(task_of(&done, "one").unwrap()["status"], "succeeded", "{done:#}");
    let two = task_of(&done, "two").unwrap();
    assert_eq!(two["status"], "failed", "{done:#}");
    let log = log_of(&s, run, "two").await;
    assert!(log.contains("failing"), "{log}");
    // Nothing is left in the namespace: no pod, no env Secret.
    for kind in ["pods", "secrets"] {
        let list: Value = common::kube_get(&fake, &format!("/api/v1/namespaces/{namespace}/{kind}")).await.unwrap();
        assert_eq!(list["items"], json!([]), "{kind}: {list:#}");
    }
}

#[tokio::test]
async fn a_kubernetes_pipeline_must_name_a_registered_cluster() {
    let s = start().await;
    let yaml = format!(
        "name: nowhere\nexecutor: kubernetes\ndefault_image: {}\nstages:\n  - name: A\n    tasks:\n      \
         - {{name: t, type: script, script: echo hi}}\n",
        image()
    );
    s.create(&yaml).await;
    // Neither `cluster:` nor a server default: refused when the run starts, saying both ways out.
    let refused = s.post("/pipelines/nowhere/runs", json!({"parameters": {}})).await.expect(422);
    let text = refused.text;
    assert!(text.contains("names no `cluster:`, and the server has no default cluster"), "{text}");
    assert!(text.contains("--default-cluster NAME"), "{text}");

    s.create(&yaml.replace("name: nowhere\n", "name: unknown\ncluster: mars\n")).await;
    let run = id_of(&s.start_run("unknown", json!({})).await);
    assert_eq!(s.wait_run(run).await["status"], "failed");
    let log = log_of(&s, run, "t").await;
    assert!(log.contains("cluster: `mars` is not a cluster of this pipeline's project"), "{log}");
}

/// `--default-cluster`: a pipeline on the kubernetes executor that names no cluster runs
/// on the server's default one; one that names a cluster keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_default_cluster_runs_pipelines_that_name_none() {
    let Some(_env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let fake = KubeFake::start(Options { kubelet: Some("docker".into()), ..Options::default() }).await.unwrap();
    let s = start_with(tempfile::tempdir().unwrap(), |c| c.default_cluster = Some("dev".into())).await;
    let cluster = s.post("/clusters", json!({"name": "dev", "kubeconfig": fake.kubeconfig()})).await.expect(201);
    let namespace = cluster.json["namespace"].as_str().unwrap().to_owned();
    let yaml = format!(
        "name: defaulted\nexecutor: kubernetes\ndefault_image: {}\nstages:\n  - name: A\n    tasks:\n      \
         - {{name: t, type: script, script: echo hello from the default cluster}}\n",
        image()
    );
    s.create(&yaml).await;
    let run = id_of(&s.start_run("defaulted", json!({})).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let log = log_of(&s, run, "t").await;
    assert!(log.contains(&format!("in namespace {namespace} of cluster dev")), "{log}");
    assert!(log.contains("out hello from the default cluster"), "{log}");

    // A named cluster is not overridden by the default: `mars` is not registered.
    s.create(&yaml.replace("name: defaulted\n", "name: named\ncluster: mars\n")).await;
    let run = id_of(&s.start_run("named", json!({})).await);
    assert_eq!(s.wait_run(run).await["status"], "failed");
    assert!(log_of(&s, run, "t").await.contains("cluster: `mars` is not a cluster"));
}

/// Without a Docker Engine, the `image` tasks of a pipeline on the kubernetes executor
/// build in a builder pod on its cluster (the BuildKit stand-in of wharf-testenv, the
/// server's `kube_builder_image`) and push to the registered registry: the digest is the
/// task's output, the login reaches the pod only through its Secret, nothing is left. A
/// pipeline on the host executor on the same server is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_docker_engine_image_tasks_build_in_a_builder_pod() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let standin = wharf_testenv::buildkit_standin(&env);
    let fake = KubeFake::start(Options { kubelet: Some("docker".into()), ..Options::default() }).await.unwrap();
    let s = start_with(tempfile::tempdir().unwrap(), |c| {
        c.docker_host = None;
        c.kube_builder_image = Some(standin.clone());
    })
    .await;
    let cluster = s.post("/clusters", json!({"name": "prod", "kubeconfig": fake.kubeconfig()})).await.expect(201);
    let namespace = cluster.json["namespace"].as_str().unwrap().to_owned();
    let registry = json!({"name": "local", "url": env.registry_url, "insecure": true, "username": env.registry_user,
        "password": env.registry_password, "workspaces": ["devops"]});
    s.post("/registries", registry).await.expect(201);
    let yaml = format!(
        "name: kube-build\nexecutor: kubernetes\ncluster: prod\ndefault_image: {}\nstages:\n  \
         - name: Prepare\n    tasks:\n      \
         - {{name: write, type: script, script: 'mkdir -p app && echo \"FROM scratch\" > Dockerfile && echo x > app/x'}}\n  \
         - name: Build\n    tasks:\n      \
         - {{name: build, type: image, dockerfile: Dockerfile, context: app, image: app, tag: 'alpha-${{BUILD_ID}}', workspace: devops, registry: local}}\n  \
         - name: Use\n    tasks:\n      \
         - {{name: use, type: script, script: 'echo \"digest=${{tasks.build.digest}}\"'}}\n",
        image()
    );
    s.create(&yaml).await;
    let run = id_of(&s.start_run("kube-build", json!({})).await);
    let done = s.wait_run(run).await;
    let build = log_of(&s, run, "build").await;
    assert_eq!(done["status"], "succeeded", "{done:#}\n{build}");
    assert!(build.contains(&format!("in builder pod {namespace}/wharf-build-")), "{build}");
    assert!(build.contains(&format!("of {standin} on cluster `prod`")), "{build}");
    assert!(build.contains("#4 registry login from /wharf/docker-config/config.json"), "{build}");
    let reference = format!("{}/devops/app:alpha-1", env.registry);
    let pushed = build
        .lines()
        .find(|l| l.contains(&format!("pushed {reference} (sha256:")))
        .unwrap_or_else(|| panic!("{build}"));
    let digest = pushed.rsplit_once('(').unwrap().1.trim_end_matches(')');
    let used = log_of(&s, run, "use").await;
    assert!(used.contains(&format!("digest={digest}")), "{used}");
    assert!(!build.contains(&env.registry_password), "{build}");
    for kind in ["pods", "secrets"] {
        let list: Value = common::kube_get(&fake, &format!("/api/v1/namespaces/{namespace}/{kind}")).await.unwrap();
        assert_eq!(list["items"], json!([]), "{kind}: {list:#}");
    }

    // The same task on the host executor: no Docker Engine, no builder pod there.
    s.create(&yaml.replace("name: kube-build\nexecutor: kubernetes\n", "name: host-build\nexecutor: host\n")).await;
    let refused = s.post("/pipelines/host-build/runs", json!({"parameters": {}})).await.expect(422);
    assert!(refused.text.contains("`image` tasks need the Docker Engine"), "{}", refused.text);
}

/// The cluster's stored settings reach its task pods: a default node selector no node
/// matches keeps the pod `Pending` until the cluster's pending limit ends the attempt, and
/// once the selector is cleared (`PATCH`) the same pipeline runs (the default requests
/// fit the node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clusters_settings_are_the_task_pods_defaults() {
    let Some(_env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let fake = KubeFake::start(Options { kubelet: Some("docker".into()), ..Options::default() }).await.unwrap();
    let s = start().await;
    let settings = json!({"node_selector": {"pool": "nowhere"}, "pending_limit": "2s",
        "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}}});
    let cluster = s
        .post("/clusters", json!({"name": "prod", "kubeconfig": fake.kubeconfig(), "settings": settings}))
        .await
        .expect(201);
    let namespace = cluster.json["namespace"].as_str().unwrap().to_owned();
    let yaml = format!(
        "name: defaults\nexecutor: kubernetes\ncluster: prod\ndefault_image: {}\nstages:\n  - name: Build\n    tasks:\n      \
         - {{name: build, type: script, script: 'echo ran'}}\n",
        image()
    );
    s.create(&yaml).await;
    let run = id_of(&s.start_run("defaults", json!({})).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let log = log_of(&s, run, "build").await;
    let record = done.to_string();
    assert!(record.contains("stayed pending for 2s"), "the cluster's pending limit: {done:#}");
    assert!(log.contains("node(s) didn't match Pod's node affinity/selector"), "the cluster's selector: {log}");

    s.call(reqwest::Method::PATCH, "/clusters/prod", Some(json!({"node_selector": null}))).await.expect(200);
    let run = id_of(&s.start_run("defaults", json!({})).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert!(log_of(&s, run, "build").await.contains("out ran"));
    let list: Value = common::kube_get(&fake, &format!("/api/v1/namespaces/{namespace}/pods")).await.unwrap();
    assert_eq!(list["items"], json!([]), "{list:#}");
}

/// A cluster whose workspace is `claim`: the same pipeline as on `hostPath` (the checkout
/// reaches every pod, files pass between stages, outputs come back, parallel tasks), and
/// no pod, Secret or claim left in the namespace after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_the_claim_workspace_runs_the_same_pipeline() {
    let Some(_env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let fake = KubeFake::start(Options { kubelet: Some("docker".into()), ..Options::default() }).await.unwrap();
    let s = start().await;
    let settings = json!({"workspace": {"mode": "claim", "size": "512Mi"}});
    let cluster = s
        .post("/clusters", json!({"name": "multi", "kubeconfig": fake.kubeconfig(), "settings": settings}))
        .await
        .expect(201);
    let namespace = cluster.json["namespace"].as_str().unwrap().to_owned();
    let yaml = format!(
        "name: on-claim\nexecutor: kubernetes\ncluster: multi\ndefault_image: {}\nstages:\n  \
         - name: Build\n    tasks:\n      \
         - {{name: build, type: script, script: 'echo v1 > made.txt; echo VERSION=1.2.3 >> \"$WHARF_OUTPUT\"', outputs: [VERSION]}}\n  \
         - name: Test\n    mode: parallel\n    tasks:\n      \
         - {{name: one, type: script, script: 'cat made.txt; echo \"version ${{tasks.build.VERSION}}\"'}}\n      \
         - {{name: two, type: script, script: 'test -s made.txt && echo seen'}}\n",
        image()
    );
    s.create(&yaml).await;
    let run = id_of(&s.start_run("on-claim", json!({})).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let build = log_of(&s, run, "build").await;
    assert!(build.contains("volume claim") && build.contains("(512Mi) created"), "{build}");
    let one = log_of(&s, run, "one").await;
    assert!(one.contains("out v1") && one.contains("out version 1.2.3"), "{one}");
    assert!(log_of(&s, run, "two").await.contains("out seen"));
    for kind in ["pods", "secrets", "persistentvolumeclaims"] {
        let list: Value = common::kube_get(&fake, &format!("/api/v1/namespaces/{namespace}/{kind}")).await.unwrap();
        assert_eq!(list["items"], json!([]), "{kind}: {list:#}");
    }
}
