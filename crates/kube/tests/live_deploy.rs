//! The deploy tests against a real cluster, when `WHARF_TEST_KUBECONFIG` names a kubeconfig
//! (optionally `WHARF_TEST_KUBECONTEXT`). Skipped with the reason otherwise, also under
//! `CI=true`: no cluster exists on the CI machines.
//!
//! Each test works in its own namespace `wharf-live-<random>`, made by the deployed file
//! itself and deleted afterwards. The workload is `registry.k8s.io/pause`, which every
//! cluster can pull; the failing one names an image that does not exist.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use wharf_executor::deploy::{ClusterLogin, DeployExit, DeploySpec};
use wharf_executor::{LogLine, LogSink};
use wharf_kube::deploy;
use wharf_kube::{Connection, FileAccess};

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl LogSink for Lines {
    fn line(&self, line: LogLine) {
        eprintln!("{}", line.text);
        self.0.lock().unwrap().push(line.text);
    }
}

/// The tester's own cluster may be on a private network: `WHARF_TEST_OUTBOUND_ALLOW`
/// (comma-separated `outbound_allow` entries) allows it, as an admin's config would.
fn live_policy() -> wharf_kube::Policy {
    let entries = std::env::var("WHARF_TEST_OUTBOUND_ALLOW").unwrap_or_default();
    let entries: Vec<&str> = entries.split(',').filter(|e| !e.trim().is_empty()).collect();
    wharf_kube::Policy::new(&entries).unwrap_or_else(|e| panic!("WHARF_TEST_OUTBOUND_ALLOW: {e}"))
}

/// The tester's connection and namespace, or `None` (skipped, with the reason printed).
fn live() -> Option<(Connection, String)> {
    let Some(path) = std::env::var_os("WHARF_TEST_KUBECONFIG") else {
        eprintln!(
            "skipped: WHARF_TEST_KUBECONFIG is not set (no real cluster to deploy to; not a failure, also under CI=true)"
        );
        return None;
    };
    let path = Path::new(&path);
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let context = std::env::var("WHARF_TEST_KUBECONTEXT").ok();
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    let conn = Connection::from_kubeconfig(&text, context.as_deref(), &FileAccess::Allow { base }, &live_policy())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // RandomState is seeded randomly per process: enough for a namespace no one else uses.
    let random = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
    Some((conn, format!("wharf-live-{:08x}", random as u32)))
}

fn manifests(ns: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\napiVersion: apps/v1\nkind: Deployment\n\
         metadata:\n  name: pause\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: pause}}\n  template:\n\
         \x20   metadata:\n      labels: {{app: pause}}\n    spec:\n      containers:\n      - name: pause\n\
         \x20       image: {image}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: pause\nspec:\n\
         \x20 selector: {{app: pause}}\n  ports:\n  - port: 80\n"
    )
}

async fn run(
    conn: &Connection,
    ns: &str,
    text: String,
) -> (Result<DeployExit, wharf_executor::deploy::DeployError>, Arc<Lines>) {
    let spec = DeploySpec {
        run: "live#1".into(),
        stage: "Deploy".into(),
        task: "deploy".into(),
        file: "live.yaml".into(),
        manifests: text,
        cluster: ClusterLogin { name: "live".into(), kubeconfig: String::new(), context: None },
        namespace: ns.into(),
    };
    let (_tx, stop) = tokio::sync::watch::channel(None);
    let lines = Arc::new(Lines::default());
    let result = tokio::time::timeout(Duration::from_secs(300), deploy::deploy(conn, &spec, lines.as_ref(), stop))
        .await
        .expect("the deploy ends within 5 minutes");
    (result, lines)
}

async fn cleanup(conn: &Connection, ns: &str) {
    let api: kube::Api<Namespace> = kube::Api::all(conn.client().clone());
    let _ = api.delete(ns, &Default::default()).await;
}

#[tokio::test]
async fn live_deploy_rolls_out() {
    let Some((conn, ns)) = live() else { return };
    let (result, lines) = run(&conn, &ns, manifests(&ns, "registry.k8s.io/pause:3.10")).await;
    cleanup(&conn, &ns).await;
    match result {
        Ok(DeployExit::Deployed(applied)) => assert_eq!(applied.len(), 3, "{applied:?}"),
        other => panic!("{other:?}"),
    }
    assert!(lines.0.lock().unwrap().iter().any(|l| l == "deployment \"pause\" successfully rolled out"));
}

#[tokio::test]
async fn live_missing_image_fails_fast() {
    let Some((conn, ns)) = live() else { return };
    let (result, _) = run(&conn, &ns, manifests(&ns, "registry.k8s.io/wharf-no-such-image:0")).await;
    cleanup(&conn, &ns).await;
    let err = result.expect_err("an image that does not exist cannot roll out").to_string();
    assert!(err.contains("ErrImagePull") || err.contains("ImagePullBackOff"), "{err}");
}

#[tokio::test]
async fn live_unknown_kind_asks_for_its_crd() {
    let Some((conn, ns)) = live() else { return };
    let text =
        format!("apiVersion: wharf-live.example.com/v1\nkind: Nothing\nmetadata:\n  name: x\n  namespace: {ns}\n");
    let (result, _) = run(&conn, &ns, text).await;
    let err = result.expect_err("an unknown kind").to_string();
    assert!(err.contains("install its CRD first"), "{err}");
}
