//! wharf-kube against the Kubernetes API test double, over HTTPS with the kubeconfig it writes.

use std::collections::BTreeMap;

use wharf_kube::{
    Auth, ClusterError, Connection, FileAccess, KubeconfigError, MANAGED_BY, Nodes, Permission, Policy, check,
    ensure_namespace, pipeline_namespace,
};
use wharf_kube_fake::{KubeFake, Options};

async fn start(ready: usize, unready: usize) -> KubeFake {
    KubeFake::start(Options { ready_nodes: ready, unready_nodes: unready, ..Options::default() }).await.unwrap()
}

fn connect(kubeconfig: &str) -> Connection {
    Connection::from_kubeconfig(kubeconfig, None, &FileAccess::Refuse, &loopback()).unwrap()
}

/// The fake listens on 127.0.0.1, an internal address: an admin's allow-list entry.
fn loopback() -> Policy {
    Policy::new(&["127.0.0.1"]).unwrap()
}

#[tokio::test]
async fn token_connection_checks_version_and_nodes() {
    let fake = start(2, 1).await;
    let conn = connect(&fake.kubeconfig());
    assert_eq!(conn.auth(), Auth::Token);
    assert_eq!(conn.server(), fake.url());
    let info = check(&conn).await.unwrap();
    assert_eq!(info.server, fake.url());
    assert_eq!(info.version, "v1.32.0-kube-fake");
    assert_eq!(info.namespaces, Permission::Allowed(()));
    assert_eq!(info.nodes, Permission::Allowed(Nodes { ready: 2, total: 3 }));
}

#[tokio::test]
async fn namespace_is_applied_idempotently() {
    let fake = start(1, 0).await;
    let conn = connect(&fake.kubeconfig());
    let name = pipeline_namespace("a1b2c3");
    let labels = BTreeMap::from([("wharf.dev/pipeline".to_owned(), "a1b2c3".to_owned())]);
    let first = ensure_namespace(&conn, &name, &labels).await.unwrap();
    let second = ensure_namespace(&conn, &name, &labels).await.unwrap();
    let meta = &second.metadata;
    assert_eq!(meta.name.as_deref(), Some("ecp-devops-a1b2c3"));
    let got = meta.labels.clone().unwrap_or_default();
    assert_eq!(got.get(MANAGED_BY).map(String::as_str), Some("wharf"));
    assert_eq!(got.get("wharf.dev/pipeline").map(String::as_str), Some("a1b2c3"));
    assert_eq!(first.metadata.uid, second.metadata.uid, "the same namespace, not a new one");
    assert_eq!(first.metadata.resource_version, second.metadata.resource_version, "applying again changes nothing");
    let managers: Vec<_> = meta.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert_eq!(managers, ["wharf"]);
    let bad = ensure_namespace(&conn, "Not_A_Label", &labels).await.unwrap_err();
    assert!(bad.to_string().contains("not a DNS label"), "{bad}");
}

#[tokio::test]
async fn wrong_token_is_unauthorized() {
    let fake = start(1, 0).await;
    let text = fake.kubeconfig().replace(fake.token(), "not-the-token");
    let err = check(&connect(&text)).await.unwrap_err();
    assert!(matches!(&err, ClusterError::Unauthorized { server, .. } if *server == fake.url()), "{err}");
    assert!(!err.to_string().contains("not-the-token"), "{err}");
}

#[tokio::test]
async fn wrong_ca_is_a_tls_error() {
    let fake = start(1, 0).await;
    let other = start(1, 0).await;
    // The first fake's URL with the second fake's CA.
    let text = other.kubeconfig().replace(&other.url(), &fake.url());
    let err = check(&connect(&text)).await.unwrap_err();
    assert!(matches!(err, ClusterError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn unreachable_server() {
    let fake = start(1, 0).await;
    let text = fake.kubeconfig();
    let url = fake.url();
    drop(fake);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let err = check(&connect(&text)).await.unwrap_err();
    assert!(matches!(&err, ClusterError::Unreachable { server, .. } if *server == url), "{err:?}");
}

#[tokio::test]
async fn exec_plugin_is_refused() {
    let fake = start(1, 0).await;
    let token_line = format!("    token: {}\n", fake.token());
    let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'touch /tmp/pwned']\n";
    let text = fake.kubeconfig().replace(&token_line, exec);
    assert_ne!(text, fake.kubeconfig());
    let err = Connection::from_kubeconfig(&text, None, &FileAccess::Refuse, &loopback()).unwrap_err();
    assert_eq!(err, KubeconfigError::ExecPlugin { user: "kube-fake".into(), command: "/bin/sh".into() });
}

#[tokio::test]
async fn internal_servers_need_the_admins_allow_list() {
    let fake = start(1, 0).await;
    // An IP literal: refused when the connection is built.
    let err =
        Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &Policy::default()).unwrap_err();
    assert!(matches!(&err, KubeconfigError::Refused { refused, .. } if refused.kind == "loopback"), "{err}");
    assert!(err.to_string().contains("outbound_allow"), "{err}");
    // A name: refused when it resolves, at connect time, before anything is sent.
    let by_name = fake.kubeconfig().replace("https://127.0.0.1:", "https://localhost:");
    let conn = Connection::from_kubeconfig(&by_name, None, &FileAccess::Refuse, &Policy::default()).unwrap();
    let err = check(&conn).await.unwrap_err();
    assert!(matches!(&err, ClusterError::Refused { refused, .. } if refused.host == "localhost"), "{err:?}");
    assert!(err.to_string().contains("outbound_allow"), "{err}");
    // Allowed by name, it connects (the fake's certificate names localhost too).
    let conn = Connection::from_kubeconfig(&by_name, None, &FileAccess::Refuse, &Policy::new(&["localhost"]).unwrap())
        .unwrap();
    assert_eq!(check(&conn).await.unwrap().version, "v1.32.0-kube-fake");
}
