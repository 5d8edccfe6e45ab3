//! The `wharf-kube-fake` binary writes a kubeconfig that kubectl uses as is.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_binary_serves_until_killed_and_writes_a_kubeconfig_kubectl_uses() {
    let kubectl = PathBuf::from(std::env::var("WHARF_TEST_KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into()));
    if !kubectl.exists() {
        assert!(std::env::var_os("CI").is_none_or(|v| v != "true"), "{} is required when CI=true", kubectl.display());
        eprintln!("SKIPPED: no kubectl at {} (set WHARF_TEST_KUBECTL)", kubectl.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    let mut server = Command::new(env!("CARGO_BIN_EXE_wharf-kube-fake"))
        .args(["--token", "t0ken", "--kubeconfig"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut waited = 0;
    while !config.exists() && waited < 100 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    let out = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&config)
        .args(["get", "namespaces", "-o", "name"])
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    assert!(text.contains("token: t0ken") && text.contains("server: https://127.0.0.1:"), "{text}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "namespace/default\nnamespace/kube-public\nnamespace/kube-system\n"
    );
}
