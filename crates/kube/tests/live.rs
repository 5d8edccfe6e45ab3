//! The same check against a real cluster, when `WHARF_TEST_KUBECONFIG` names a kubeconfig
//! (optionally `WHARF_TEST_KUBECONTEXT`). Skipped with the reason otherwise, also under
//! `CI=true`: no cluster exists on the CI machines. Files named in the kubeconfig are allowed
//! here (it is the tester's own file), relative to the kubeconfig's directory.

use std::path::Path;

use wharf_kube::{Connection, FileAccess, Policy, check};

/// The tester's own cluster may be on a private network: `WHARF_TEST_OUTBOUND_ALLOW`
/// (comma-separated `outbound_allow` entries) allows it, as an admin's config would.
fn live_policy() -> Policy {
    let entries = std::env::var("WHARF_TEST_OUTBOUND_ALLOW").unwrap_or_default();
    let entries: Vec<&str> = entries.split(',').collect();
    Policy::new(&entries).unwrap_or_else(|e| panic!("WHARF_TEST_OUTBOUND_ALLOW: {e}"))
}

#[tokio::test]
async fn live_cluster_check() {
    let Some(path) = std::env::var_os("WHARF_TEST_KUBECONFIG") else {
        eprintln!(
            "skipped: WHARF_TEST_KUBECONFIG is not set (no real cluster to check; not a failure, also under CI=true)"
        );
        return;
    };
    let path = Path::new(&path);
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let context = std::env::var("WHARF_TEST_KUBECONTEXT").ok();
    let base = path.parent().unwrap_or(Path::new(".")).to_owned();
    let conn = Connection::from_kubeconfig(&text, context.as_deref(), &FileAccess::Allow { base }, &live_policy())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let info = check(&conn).await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{info:?}");
    assert!(info.version.starts_with('v'), "{info:?}");
}
