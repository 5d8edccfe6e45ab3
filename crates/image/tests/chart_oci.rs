//! Helm charts as OCI artifacts against the real registry of `scripts/test-env.sh`,
//! checked both ways with the real `helm` 4: what Wharf pushes `helm pull` fetches and
//! `helm show chart` reads; what `helm push` pushes Wharf pulls byte for byte.

use std::path::Path;
use std::process::Command;
use wharf_executor::build::RegistryLogin;
use wharf_executor::chart::{ChartRegistry, ChartRegistryError, ChartUpload};
use wharf_image::chart::OciCharts;
use wharf_image::{RegistryAccess, RegistryClient};

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}{}x{nanos}", std::process::id())
}

fn login(env: &wharf_testenv::ContainerEnv) -> RegistryLogin {
    RegistryLogin {
        name: "test".into(),
        host: env.registry.clone(),
        username: Some(env.registry_user.clone()),
        password: Some(env.registry_password.clone()),
        insecure: true,
    }
}

/// `helm` with its own home (registry logins, caches) under `home`.
fn helm(tools: &wharf_testenv::K8sTools, home: &Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new(&tools.helm)
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
        .expect("helm runs");
    child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn helm_login(tools: &wharf_testenv::K8sTools, home: &Path, env: &wharf_testenv::ContainerEnv) {
    helm(
        tools,
        home,
        &["registry", "login", &env.registry, "--plain-http", "-u", &env.registry_user, "--password-stdin"],
        Some(&env.registry_password),
    );
}

#[tokio::test]
async fn helm_pulls_what_wharf_pushed_and_wharf_pulls_what_helm_pushed() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    helm_login(&tools, home, &env);
    let workspace = unique("charts");
    let charts = OciCharts::new(wharf_outbound::Policy::default());

    // helm packages and pushes; Wharf pulls the same bytes and sees a chart.
    helm(&tools, home, &["create", "demo"], None);
    helm(&tools, home, &["package", "demo", "--version", "0.3.0+b.7"], None);
    let packaged = std::fs::read(home.join("demo-0.3.0+b.7.tgz")).unwrap();
    let target = format!("oci://{}/{workspace}", env.registry);
    helm(&tools, home, &["push", "demo-0.3.0+b.7.tgz", &target, "--plain-http"], None);
    let pulled = charts.pull(login(&env), format!("{workspace}/demo"), "0.3.0+b.7".into()).await.unwrap();
    assert_eq!(pulled.archive, packaged);
    assert!(pulled.digest.starts_with("sha256:"));

    // Wharf pushes (another name, another version); helm pulls and reads it.
    let config = br#"{"name":"other","version":"1.2.3+build.9","description":"Pushed by Wharf","apiVersion":"v2","type":"application"}"#;
    let archive_dir = tempfile::tempdir().unwrap();
    let other = renamed_archive(&tools, home, archive_dir.path(), "other", "1.2.3+build.9");
    let pushed = charts
        .push(
            login(&env),
            ChartUpload {
                repository: format!("{workspace}/other"),
                version: "1.2.3+build.9".into(),
                archive: other.clone(),
                config: config.to_vec(),
            },
        )
        .await
        .unwrap();
    assert_eq!(pushed.reference, format!("{}/{workspace}/other:1.2.3_build.9", env.registry));
    let reference = format!("oci://{}/{workspace}/other", env.registry);
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().to_str().unwrap();
    helm(&tools, home, &["pull", &reference, "--version", "1.2.3+build.9", "--plain-http", "-d", out_dir], None);
    let fetched = std::fs::read(out.path().join("other-1.2.3+build.9.tgz")).unwrap();
    assert_eq!(fetched, other);
    let shown = helm(&tools, home, &["show", "chart", &reference, "--version", "1.2.3+build.9", "--plain-http"], None);
    assert!(shown.contains("name: other") && shown.contains("version: 1.2.3+build.9"), "{shown}");

    // The manifest is Helm's: config and layer media types, the digest Wharf reported.
    let client = RegistryClient::new(
        RegistryAccess {
            host: env.registry.clone(),
            username: Some(env.registry_user.clone()),
            password: Some(env.registry_password.clone()),
            insecure: true,
        },
        &wharf_outbound::Policy::default(),
    )
    .unwrap();
    let info = client.tag_info(&format!("{workspace}/other"), "1.2.3_build.9").await.unwrap();
    assert_eq!(info.digest, pushed.digest);
    assert_eq!(info.config_media_type.as_deref(), Some(wharf_image::chart::HELM_CONFIG));
}

#[tokio::test]
async fn pulling_an_image_or_a_missing_version_says_what_is_wrong() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let charts = OciCharts::new(wharf_outbound::Policy::default());
    let workspace = unique("nochart");
    let missing = charts.pull(login(&env), format!("{workspace}/demo"), "9.9.9".into()).await.unwrap_err();
    assert!(matches!(missing, ChartRegistryError::NotFound(_)), "{missing}");
    assert!(missing.to_string().contains("version 9.9.9"), "{missing}");

    // An image is not a chart: push a tiny OCI image by hand and try to pull it.
    let client = RegistryClient::new(
        RegistryAccess {
            host: env.registry.clone(),
            username: Some(env.registry_user.clone()),
            password: Some(env.registry_password.clone()),
            insecure: true,
        },
        &wharf_outbound::Policy::default(),
    )
    .unwrap();
    let repository = format!("{workspace}/app");
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let digest = wharf_image::registry::sha256_digest(config);
    client.push_blob_bytes(&repository, &digest, config).await.unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": wharf_image::registry::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len()},
        "layers": []
    });
    client
        .put_manifest(
            &repository,
            "1.0.0",
            wharf_image::registry::OCI_MANIFEST,
            &serde_json::to_vec(&manifest).unwrap(),
        )
        .await
        .unwrap();
    let image = charts.pull(login(&env), repository.clone(), "1.0.0".into()).await.unwrap_err();
    assert!(matches!(image, ChartRegistryError::NotAChart(_)), "{image}");
    assert!(image.to_string().contains("application/vnd.oci.image.config.v1+json"), "{image}");

    // Nor may a chart replace it: a chart `app` 1.0.0 in the same workspace is refused,
    // and the image's manifest is still the tag's.
    let before = client.config_media_type(&repository, "1.0.0").await.unwrap();
    let upload = ChartUpload {
        repository: repository.clone(),
        version: "1.0.0".into(),
        archive: b"not read: refused first".to_vec(),
        config: br#"{"name":"app","version":"1.0.0","apiVersion":"v2"}"#.to_vec(),
    };
    let replaced = charts.push(login(&env), upload).await.unwrap_err();
    assert!(replaced.to_string().contains("already holds an image"), "{replaced}");
    assert!(replaced.to_string().contains("another workspace"), "{replaced}");
    assert_eq!(client.config_media_type(&repository, "1.0.0").await.unwrap(), before);

    // A wrong password is the registry's refusal, named.
    let mut wrong = login(&env);
    wrong.password = Some("wrong".into());
    let refused = charts.pull(wrong, format!("{workspace}/app"), "1.0.0".into()).await.unwrap_err();
    assert!(refused.to_string().contains("refused the credentials"), "{refused}");
    assert!(!refused.to_string().contains(&env.registry_password));
}

/// A packaged chart named `name` at `version`, made by helm itself.
fn renamed_archive(tools: &wharf_testenv::K8sTools, home: &Path, dir: &Path, name: &str, version: &str) -> Vec<u8> {
    let dir_str = dir.to_str().unwrap();
    helm(tools, home, &["create", &format!("{dir_str}/{name}")], None);
    helm(tools, home, &["package", &format!("{dir_str}/{name}"), "--version", version, "-d", dir_str], None);
    std::fs::read(dir.join(format!("{name}-{version}.tgz"))).unwrap()
}
