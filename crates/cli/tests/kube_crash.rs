//! Re-attach after a crash on the kubernetes executor (issue 15), with the real `wharf
//! serve` and the Kubernetes test double (in this process, so it outlives the server) whose
//! kubelet runs pods on the local Docker Engine. A run's task runs as a pod; the server is
//! killed with SIGKILL while it runs and started again on the same data directory. Checked:
//!
//! - the run is continued: `succeeded`, its task log holds every line exactly once (the
//!   lines stored before the kill, then the rest resumed from `pods/log`), its output
//!   reaches the next stage;
//! - a pod labelled for a run that does not exist is deleted at the restart;
//! - nothing (pod or env Secret) is left in the namespace once the run ends.

use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};
use wharf_kube_fake::{KubeFake, Options};

const TOKEN: &str = "kube-crash-test-admin-token";

fn pipeline(name: &str, image: &str, lines: u32) -> String {
    format!(
        "name: {name}\nexecutor: kubernetes\ncluster: dev\ndefault_image: {image}\nstages:\n  - name: Build\n    tasks:\n      \
         - name: long\n        type: script\n        outputs: [RESULT]\n        script: |\n          \
         i=0; while [ $i -lt {lines} ]; do echo line $i; i=$((i+1)); sleep 0.05; done\n          \
         echo RESULT=ok-{name} >> \"$WHARF_OUTPUT\"\n  \
         - name: Ship\n    tasks:\n      - name: ship\n        type: script\n        script: echo \"shipping ${{RESULT}}\"\n"
    )
}

mod served;
use served::{Server, free_port};

async fn start_server(root: &Path, port: u16, life: u32) -> Server {
    Server::start(root, port, life, TOKEN, &["--outbound-allow", "127.0.0.1"], Duration::from_secs(15)).await
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_else(|| panic!("no status in {v}"))
}

fn ended(v: &Value) -> bool {
    matches!(status(v), "succeeded" | "failed" | "stopped" | "timed_out" | "skipped")
}

fn task<'v>(run: &'v Value, name: &str) -> &'v Value {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["tasks"].as_array().unwrap())
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {run:#}"))
}

fn texts(log: &str) -> Vec<&str> {
    log.lines().map(|l| l.splitn(3, ' ').nth(2).unwrap_or("")).collect()
}

fn numbered(log: &str) -> Vec<u32> {
    texts(log).iter().filter_map(|t| t.strip_prefix("line ")?.parse().ok()).collect()
}

/// The pods or Secrets of the namespace, as the API lists them.
async fn items(fake: &KubeFake, namespace: &str, kind: &str) -> Vec<Value> {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(fake.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let list: Value = client
        .get(format!("{}/api/v1/namespaces/{namespace}/{kind}", fake.url()))
        .bearer_auth(fake.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_pod_then_the_restarted_server_adopts_it_and_finishes_the_run() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let fake = KubeFake::start(Options { kubelet: Some("docker".into()), ..Options::default() }).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let port = free_port();

    // ---- first life ----
    let mut server = start_server(&root, port, 1).await;
    let cluster =
        server.post("/clusters", json!({"name": "dev", "kubeconfig": fake.kubeconfig()}).to_string(), 201).await;
    let namespace = cluster["namespace"].as_str().unwrap().to_owned();
    // 120 lines 50 ms apart (6 s): still running after the restart.
    let pipeline_id =
        server.post("/pipelines", pipeline("kc-long", &env.busybox_image, 120), 201).await["id"].as_i64().unwrap();
    let run = server.post(&format!("/pipelines/{pipeline_id}/runs"), json!({}).to_string(), 201).await["id"]
        .as_i64()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let log = server.task_log(run, "long").await;
        if numbered(&log).len() >= 8 {
            break log;
        }
        assert!(Instant::now() < until, "fewer than 8 lines within 30 s:\n{log}\n{}", server.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let pods = items(&fake, &namespace, "pods").await;
    assert_eq!(pods.len(), 1, "{pods:#?}");
    // The label that ties pods to this data directory, read off the real one.
    let label = pods[0]["metadata"]["annotations"]["WHARF_SERVER_RUN"].as_str().unwrap().to_owned();
    let prefix = label.rsplit_once('/').map(|(p, _)| format!("{p}/")).expect("<hash>/<run id>");
    assert_eq!(label, format!("{prefix}{run}"));

    server.kill9();
    // A pod of a run that does not exist, as a deleted run's killed server would leave it.
    let stray = format!("{prefix}999999");
    let stray_pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "wharf-stray", "labels": {"WHARF_SERVER_RUN": stray.replace('/', "_")},
                     "annotations": {"WHARF_SERVER_RUN": stray}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "task", "image": env.busybox_image,
                 "command": ["/bin/sh", "-c", "sleep 600"]}]}});
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(fake.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let created = client
        .post(format!("{}/api/v1/namespaces/{namespace}/pods", fake.url()))
        .bearer_auth(fake.token())
        .json(&stray_pod)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(items(&fake, &namespace, "pods").await.len(), 2);

    // ---- second life ----
    let server = start_server(&root, port, 2).await;
    let done = server.wait_run(run, Duration::from_secs(60), "an end", ended).await;
    assert_eq!(status(&done), "succeeded", "{done:#}\nserver log:\n{}", server.log_text());
    assert_eq!(task(&done, "long")["outputs"]["RESULT"], "ok-kc-long", "{done:#}");
    let log = server.task_log(run, "long").await;
    assert!(log.starts_with(before.as_str()), "the stored log lost lines seen before the kill");
    assert_eq!(numbered(&log), (0..120).collect::<Vec<_>>(), "every line exactly once:\n{log}");
    assert!(log.contains("the server restarted; took over pod"), "{log}");
    let ship = server.task_log(run, "ship").await;
    assert!(texts(&ship).contains(&"shipping ok-kc-long"), "{ship}");
    // Nothing left: the adopted pod, the stray one, every env Secret.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (pods, secrets) = (items(&fake, &namespace, "pods").await, items(&fake, &namespace, "secrets").await);
        if pods.is_empty() && secrets.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "left in {namespace}: {pods:#?} {secrets:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
