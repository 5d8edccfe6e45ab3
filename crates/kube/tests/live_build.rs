//! The builder pod with real rootless BuildKit, against a real cluster: the only test of
//! what BuildKit does with Wharf's arguments (the other tests run a stand-in builder image
//! on the test double). Runs when `WHARF_TEST_KUBECONFIG` names a kubeconfig (optionally
//! `WHARF_TEST_KUBECONTEXT`, `WHARF_TEST_OUTBOUND_ALLOW`) and `WHARF_TEST_BUILD_REGISTRY`
//! a registry (`host[:port]`) the cluster's pods can push to (`WHARF_TEST_BUILD_REGISTRY_USER`
//! and `_PASSWORD` for its login, `WHARF_TEST_BUILD_REGISTRY_INSECURE=true` for plain HTTP);
//! skipped with the reason otherwise, also under `CI=true`: no cluster exists on the CI
//! machines.
//!
//! As for registered clusters, the kubeconfig must carry its credentials inline (no file
//! paths). The checkout is a `hostPath`, so the cluster's node must see this machine's
//! temporary directory (`WHARF_TEST_HOSTPATH_DIR` to put it elsewhere) at the same path;
//! `WHARF_TEST_BUILDER_IMAGE` replaces `moby/buildkit:rootless`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use wharf_executor::build::{BuildExit, BuildSpec, ImageBuilder, RegistryLogin};
use wharf_executor::deploy::ClusterLogin;
use wharf_executor::{LogLine, LogSink, TaskCluster};
use wharf_kube::builder::KubeBuilder;
use wharf_kube::{Connection, FileAccess, Policy};

#[derive(Default)]
struct Collect(Mutex<Vec<String>>);

impl LogSink for Collect {
    fn line(&self, line: LogLine) {
        self.0.lock().unwrap().push(line.text);
    }
}

fn live_policy() -> Policy {
    let entries = std::env::var("WHARF_TEST_OUTBOUND_ALLOW").unwrap_or_default();
    let entries: Vec<&str> = entries.split(',').collect();
    Policy::new(&entries).unwrap_or_else(|e| panic!("WHARF_TEST_OUTBOUND_ALLOW: {e}"))
}

#[tokio::test]
async fn live_builder_pod_builds_and_pushes_with_rootless_buildkit() {
    let (Some(path), Ok(registry)) =
        (std::env::var_os("WHARF_TEST_KUBECONFIG"), std::env::var("WHARF_TEST_BUILD_REGISTRY"))
    else {
        eprintln!(
            "skipped: WHARF_TEST_KUBECONFIG and WHARF_TEST_BUILD_REGISTRY are not both set (no real cluster and \
             registry for a BuildKit build; not a failure, also under CI=true)"
        );
        return;
    };
    let path = Path::new(&path);
    let kubeconfig = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let context = std::env::var("WHARF_TEST_KUBECONTEXT").ok();
    let policy = live_policy();
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    let conn = Connection::from_kubeconfig(&kubeconfig, context.as_deref(), &FileAccess::Allow { base }, &policy)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let suffix: String = format!("{:x}", std::process::id() ^ jiff::Timestamp::now().subsec_nanosecond() as u32);
    let namespace = format!("wharf-live-build-{suffix}");
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
    let namespaces = Api::<Namespace>::all(conn.client().clone());
    namespaces.create(&PostParams::default(), &ns).await.unwrap_or_else(|e| panic!("creating {namespace}: {e}"));

    let parent = std::env::var_os("WHARF_TEST_HOSTPATH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(parent).unwrap();
    let checkout = dir.path().canonicalize().unwrap();
    std::fs::write(checkout.join("hello.txt"), format!("built by wharf {suffix}\n")).unwrap();
    std::fs::write(checkout.join("Dockerfile"), "FROM scratch\nARG GREETING\nCOPY hello.txt /hello.txt\n").unwrap();
    // The pod reads the checkout as user 1000.
    for p in [&checkout.join("hello.txt"), &checkout.join("Dockerfile")] {
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&checkout, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let spec = BuildSpec {
        run: "live-build#1".into(),
        stage: "Build".into(),
        task: "buildkit".into(),
        context: checkout.clone(),
        dockerfile: checkout.join("Dockerfile"),
        build_args: vec![("GREETING".into(), "hello".into())],
        image: format!("{registry}/wharf-live/hello:{suffix}"),
        registry: RegistryLogin {
            name: "live".into(),
            host: registry.clone(),
            username: std::env::var("WHARF_TEST_BUILD_REGISTRY_USER").ok(),
            password: std::env::var("WHARF_TEST_BUILD_REGISTRY_PASSWORD").ok(),
            insecure: std::env::var("WHARF_TEST_BUILD_REGISTRY_INSECURE").is_ok_and(|v| v == "true"),
        },
        labels: vec![("org.opencontainers.image.revision".into(), suffix.clone())],
        checkout,
        owner_labels: vec![],
        cluster: Some(TaskCluster {
            login: ClusterLogin { name: "live".into(), kubeconfig, context },
            namespace: namespace.clone(),
            pod: Default::default(),
            pending_limit: None,
            workspace: Default::default(),
        }),
    };
    let builder = KubeBuilder::new(policy, std::env::var("WHARF_TEST_BUILDER_IMAGE").ok());
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = tokio::sync::watch::channel(None);
    let result = builder.build(spec.clone(), logs.clone(), rx).await;
    let all = logs.0.lock().unwrap().join("\n");
    let pods = Api::<Pod>::namespaced(conn.client().clone(), &namespace).list(&ListParams::default()).await;
    let secrets = Api::<Secret>::namespaced(conn.client().clone(), &namespace).list(&ListParams::default()).await;
    let _ = namespaces.delete(&namespace, &DeleteParams::default()).await;
    let exit = result.unwrap_or_else(|e| panic!("{e}\n{all}"));
    let BuildExit::Built(built) = exit else { panic!("{exit:?}\n{all}") };
    eprintln!("{all}\n{built:?}");
    assert_eq!(built.image, spec.image);
    assert!(built.digest.starts_with("sha256:") && built.digest.len() == 71, "{built:?}");
    // BuildKit's own progress names the manifest it pushed.
    assert!(all.contains(&built.digest), "{all}");
    assert!(pods.map(|l| l.items.len()).unwrap_or(0) == 0, "the builder pod is deleted");
    assert!(
        secrets
            .map(|l| l
                .items
                .iter()
                .filter(|s| s.type_.as_deref() != Some("kubernetes.io/service-account-token"))
                .count())
            .unwrap_or(0)
            == 0
    );
}
