//! Against the real registry (htpasswd auth, deletes enabled) and the real dockerd of
//! `scripts/test-env.sh`.

use std::process::Command;
use std::sync::{Arc, Mutex};
use wharf_executor::build::{BuildExit, BuildSpec, ImageBuilder, RegistryLogin};
use wharf_executor::{LogLine, LogSink};
use wharf_image::{DockerBuilder, RegistryAccess, RegistryClient, RegistryError, UploadError, upload_tarball};

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}{}x{nanos}", std::process::id())
}

fn access(env: &wharf_testenv::ContainerEnv, password: &str) -> RegistryAccess {
    RegistryAccess {
        host: env.registry.clone(),
        username: Some(env.registry_user.clone()),
        password: Some(password.to_owned()),
        insecure: true,
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker runs");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_docker_save_tarball_goes_up_and_comes_back_down() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let client = RegistryClient::new(access(&env, &env.registry_password), &wharf_outbound::Policy::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A tag of our own, so that the tarball's RepoTag names this test's image.
    let local = format!("wharf-upload/{}:v1", unique("bb"));
    docker(&["tag", &env.busybox_image, &local]);
    let tarball = dir.path().join("image.tar");
    docker(&["save", &local, "-o", tarball.to_str().unwrap()]);
    docker(&["rmi", &local]);

    let workspace = unique("ws");
    let pushed = upload_tarball(&client, &tarball, &workspace).await.unwrap();
    assert_eq!(pushed.len(), 1);
    let name = local.split('/').nth(1).unwrap().split(':').next().unwrap();
    let repository = format!("{workspace}/{name}");
    assert_eq!(pushed[0].image, format!("{}/{repository}:v1", env.registry));

    // The registry lists it, with the digest, size and creation time of the image.
    assert!(client.catalog().await.unwrap().contains(&repository));
    assert_eq!(client.tags(&repository).await.unwrap(), vec!["v1".to_owned()]);
    let info = client.tag_info(&repository, "v1").await.unwrap();
    assert_eq!(info.digest, pushed[0].digest);
    assert_eq!(info.size, pushed[0].size);
    let created = docker(&["image", "inspect", "-f", "{{.Created}}", &env.busybox_image]);
    let created: jiff::Timestamp = created.trim().parse().unwrap();
    let listed: jiff::Timestamp = info.created.as_deref().expect("a creation time").parse().unwrap();
    assert_eq!(listed, created);

    // Docker pulls it back (logged in with a config of its own) and runs it.
    let config = dir.path().join("docker-config");
    let config = config.to_str().unwrap();
    let login = Command::new("docker")
        .args(["--config", config, "login", "-u", &env.registry_user, "--password-stdin", &env.registry])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(env.registry_password.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(login.success());
    docker(&["--config", config, "pull", &pushed[0].image]);
    let out = docker(&["run", "--rm", "--network", "none", &pushed[0].image, "sh", "-c", "echo pulled-and-ran"]);
    assert_eq!(out.trim(), "pulled-and-ran");
    docker(&["rmi", &pushed[0].image]);

    // Uploading again overwrites the tag (same content: same digest, blobs skipped).
    let again = upload_tarball(&client, &tarball, &workspace).await.unwrap();
    assert_eq!(again[0].digest, pushed[0].digest);

    // Deleting the tag removes it.
    let others = client.delete_tag(&repository, "v1").await.unwrap();
    assert!(others.is_empty(), "{others:?}");
    assert!(client.tags(&repository).await.unwrap_or_default().is_empty());
    let gone = client.tag_info(&repository, "v1").await.unwrap_err();
    assert!(matches!(gone, RegistryError::NotFound { .. }), "{gone}");
}

#[tokio::test]
async fn a_gzipped_tarball_uploads_too_and_junk_pushes_nothing() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let client = RegistryClient::new(access(&env, &env.registry_password), &wharf_outbound::Policy::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = format!("wharf-upload/{}:gz", unique("bb"));
    docker(&["tag", &env.busybox_image, &local]);
    let tarball = dir.path().join("image.tar");
    docker(&["save", &local, "-o", tarball.to_str().unwrap()]);
    docker(&["rmi", &local]);
    let gz = dir.path().join("image.tar.gz");
    let status = Command::new("gzip").arg("-k").arg(&tarball).status().unwrap();
    assert!(status.success());
    assert!(gz.exists());

    let workspace = unique("gz");
    let pushed = upload_tarball(&client, &gz, &workspace).await.unwrap();
    let name = local.split('/').nth(1).unwrap().split(':').next().unwrap();
    let info = client.tag_info(&format!("{workspace}/{name}"), "gz").await.unwrap();
    assert_eq!(info.digest, pushed[0].digest);

    // Not an image: a tar of something else, random bytes, a truncated tarball.
    let junk_dir = dir.path().join("junk");
    std::fs::create_dir(&junk_dir).unwrap();
    std::fs::write(junk_dir.join("readme.txt"), "hello").unwrap();
    let junk = dir.path().join("junk.tar");
    let status = Command::new("tar").arg("-cf").arg(&junk).arg("-C").arg(&junk_dir).arg(".").status().unwrap();
    assert!(status.success());
    let junk_ws = unique("junk");
    let err = upload_tarball(&client, &junk, &junk_ws).await.unwrap_err();
    assert!(matches!(err, UploadError::NotAnImage(_)), "{err}");
    assert!(err.to_string().contains("neither a manifest.json nor an index.json"), "{err}");

    let bytes = std::fs::read(&tarball).unwrap();
    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = upload_tarball(&client, &truncated, &junk_ws).await.unwrap_err();
    assert!(matches!(err, UploadError::NotAnImage(_)), "{err}");

    let catalog = client.catalog().await.unwrap();
    assert!(!catalog.iter().any(|r| r.starts_with(&format!("{junk_ws}/"))), "nothing pushed: {catalog:?}");
}

#[tokio::test]
async fn wrong_credentials_and_a_registry_that_is_down_are_named() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let client = RegistryClient::new(access(&env, "not-the-password"), &wharf_outbound::Policy::default()).unwrap();
    let err = client.catalog().await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&env.registry) && text.contains(&env.registry_user), "{text}");

    let anonymous = RegistryClient::new(
        RegistryAccess { username: None, password: None, ..access(&env, "") },
        &wharf_outbound::Policy::default(),
    )
    .unwrap();
    let err = anonymous.tags("devops/x").await.unwrap_err().to_string();
    assert!(err.contains("needs credentials"), "{err}");

    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let down = RegistryClient::new(
        RegistryAccess { host: format!("127.0.0.1:{port}"), ..access(&env, "x") },
        &wharf_outbound::Policy::default(),
    )
    .unwrap();
    let err = down.catalog().await.unwrap_err();
    assert!(matches!(err, RegistryError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port} is unreachable")), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.tar"), b"").unwrap();
}

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl LogSink for Lines {
    fn line(&self, line: LogLine) {
        self.0.lock().unwrap().push(line.text);
    }
}

fn spec(env: &wharf_testenv::ContainerEnv, dir: &std::path::Path, image: &str, password: &str) -> BuildSpec {
    BuildSpec {
        run: "p#1".into(),
        stage: "Build".into(),
        task: "img".into(),
        context: dir.to_path_buf(),
        dockerfile: dir.join("Dockerfile"),
        build_args: vec![("BASE".into(), env.busybox_image.clone()), ("GREETING".into(), "built-by-wharf".into())],
        image: image.to_owned(),
        registry: RegistryLogin {
            name: "local".into(),
            host: env.registry.clone(),
            username: Some(env.registry_user.clone()),
            password: Some(password.to_owned()),
            insecure: true,
        },
        labels: vec![("wharf.run".into(), "p#1".into())],
        checkout: dir.to_path_buf(),
        owner_labels: vec![],
        cluster: None,
    }
}

#[tokio::test]
async fn an_image_is_built_and_pushed_with_auth() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let builder = DockerBuilder::connect(&env.docker).unwrap();
    builder.ping().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "ARG BASE=wharf-test/busybox:1.35\nFROM ${BASE}\nARG GREETING\nCOPY web /web\nRUN echo \"$GREETING\" > /web/greeting\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("web")).unwrap();
    std::fs::write(dir.path().join("web/index.html"), "<h1>hi</h1>").unwrap();
    let workspace = unique("build");
    let image = format!("{}/{workspace}/app:alpha-1", env.registry);
    let logs = Arc::new(Lines::default());
    let (_tx, stop) = tokio::sync::watch::channel(None);
    let exit = builder.build(spec(&env, dir.path(), &image, &env.registry_password), logs.clone(), stop).await.unwrap();
    let BuildExit::Built(built) = exit else { panic!("{exit:?}") };
    assert_eq!(built.image, image);
    let lines = logs.0.lock().unwrap().join("\n");
    assert!(lines.contains("Step 1/6"), "{lines}");

    // The digest is what the registry stores under the tag.
    let client = RegistryClient::new(access(&env, &env.registry_password), &wharf_outbound::Policy::default()).unwrap();
    let repository = format!("{workspace}/app");
    assert_eq!(client.resolve(&repository, "alpha-1").await.unwrap(), built.digest);
    let info = client.tag_info(&repository, "alpha-1").await.unwrap();
    assert!(info.size > 0 && info.created.is_some(), "{info:?}");

    // The build arg reached the image.
    let out = docker(&["run", "--rm", "--network", "none", &image, "cat", "/web/greeting"]);
    assert_eq!(out.trim(), "built-by-wharf");

    // A wrong password: the push fails and says which registry refused.
    let other = format!("{}/{workspace}/app:alpha-2", env.registry);
    let (_tx, stop) = tokio::sync::watch::channel(None);
    let err = builder.build(spec(&env, dir.path(), &other, "wrong"), logs.clone(), stop).await.unwrap_err().to_string();
    assert!(err.contains("registry `local`") && err.contains(&env.registry), "{err}");
    assert_eq!(client.tags(&repository).await.unwrap(), vec!["alpha-1".to_owned()], "nothing pushed: {err}");
    let _ = Command::new("docker").args(["rmi", &image, &other]).output();
}

#[tokio::test]
async fn a_failing_build_reports_the_daemons_error_and_pushes_nothing() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let builder = DockerBuilder::connect(&env.docker).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), "FROM wharf-test/busybox:1.35\nRUN echo about to fail && exit 3\n")
        .unwrap();
    let workspace = unique("fail");
    let image = format!("{}/{workspace}/app:1", env.registry);
    let logs = Arc::new(Lines::default());
    let (_tx, stop) = tokio::sync::watch::channel(None);
    let err =
        builder.build(spec(&env, dir.path(), &image, &env.registry_password), logs.clone(), stop).await.unwrap_err();
    let err = err.to_string();
    assert!(err.contains("the Docker build failed") && err.contains("returned a non-zero code: 3"), "{err}");
    assert!(logs.0.lock().unwrap().iter().any(|l| l.contains("about to fail")));
    let client = RegistryClient::new(access(&env, &env.registry_password), &wharf_outbound::Policy::default()).unwrap();
    let err = client.tags(&format!("{workspace}/app")).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_stopped_build_ends_promptly_and_leaves_no_container() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let builder = DockerBuilder::connect(&env.docker).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let marker = unique("stopme");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {}\nRUN echo {marker} && sleep 60\n", env.busybox_image),
    )
    .unwrap();
    let image = format!("{}/{}/app:1", env.registry, unique("stop"));
    let logs = Arc::new(Lines::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(None);
    let build = builder.build(spec(&env, dir.path(), &image, &env.registry_password), logs.clone(), stop);
    tokio::pin!(build);
    // Wait until the RUN step is running, then stop.
    let started = std::time::Instant::now();
    loop {
        tokio::select! {
            exit = &mut build => panic!("the build ended by itself: {exit:?}"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
        if logs.0.lock().unwrap().iter().any(|l| l.contains(&marker) && !l.contains("RUN")) {
            break;
        }
        assert!(started.elapsed().as_secs() < 30, "the RUN step never started: {:?}", logs.0.lock().unwrap());
    }
    let containers = || {
        let out = docker(&["ps", "-a", "--no-trunc", "--format", "{{.Command}}"]);
        out.lines().filter(|l| l.contains(&marker)).count()
    };
    assert_eq!(containers(), 1, "the RUN step runs in a container");
    let asked = std::time::Instant::now();
    stop_tx.send_replace(Some(wharf_executor::StopRequest {
        reason: wharf_executor::StopReason::Stopped,
        grace: std::time::Duration::from_secs(1),
    }));
    let exit = build.await.unwrap();
    assert_eq!(exit, BuildExit::Stopped(wharf_executor::StopReason::Stopped));
    assert!(asked.elapsed().as_secs() < 5, "took {:?}", asked.elapsed());
    // The daemon cancels the build when its client goes away and removes the container.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while containers() > 0 {
        assert!(std::time::Instant::now() < until, "the build container outlived the stop");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let client = RegistryClient::new(access(&env, &env.registry_password), &wharf_outbound::Policy::default()).unwrap();
    let repository = image.split_once('/').unwrap().1.rsplit_once(':').unwrap().0.to_owned();
    assert!(matches!(client.tags(&repository).await, Err(RegistryError::NotFound { .. })), "nothing pushed");
}

/// The OCI image layout newer Docker writes (`index.json`, `blobs/sha256/…`), made here
/// from a legacy `docker save` of the busybox image (dockerd 20.10 writes the legacy one).
fn oci_layout_tarball(legacy: &std::path::Path, name: &str) -> (Vec<u8>, String) {
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(legacy).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.header().entry_type().is_file() {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            files.insert(path, bytes);
        }
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config = files[manifest[0]["Config"].as_str().unwrap()].clone();
    let layers: Vec<Vec<u8>> =
        manifest[0]["Layers"].as_array().unwrap().iter().map(|l| files[l.as_str().unwrap()].clone()).collect();
    let digest = wharf_image::registry::sha256_digest;
    let descriptor =
        |media: &str, b: &[u8]| serde_json::json!({ "mediaType": media, "digest": digest(b), "size": b.len() });
    let oci_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": layers.iter().map(|l| descriptor("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let mut index_entry = descriptor("application/vnd.oci.image.manifest.v1+json", &oci_manifest);
    index_entry["annotations"] = serde_json::json!({ "io.containerd.image.name": format!("docker.io/library/{name}:v1"), "org.opencontainers.image.ref.name": "v1" });
    let index = serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "manifests": [index_entry] })).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        out.append_data(&mut header, path, bytes).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in std::iter::once(&config).chain(&layers).chain(std::iter::once(&oci_manifest)) {
        add(&format!("blobs/sha256/{}", &digest(blob)[7..]), blob);
    }
    (out.into_inner().unwrap(), digest(&oci_manifest))
}

#[tokio::test]
async fn an_oci_layout_tarball_goes_up_as_it_is() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let client = RegistryClient::new(access(&env, &env.registry_password), &wharf_outbound::Policy::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let legacy = dir.path().join("legacy.tar");
    docker(&["save", &env.busybox_image, "-o", legacy.to_str().unwrap()]);
    let name = unique("oci");
    let (tarball, manifest_digest) = oci_layout_tarball(&legacy, &name);
    let path = dir.path().join("oci.tar");
    std::fs::write(&path, tarball).unwrap();

    let workspace = unique("ociws");
    let pushed = upload_tarball(&client, &path, &workspace).await.unwrap();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].image, format!("{}/{workspace}/{name}:v1", env.registry));
    // The manifest went up byte for byte: the registry serves the same digest.
    assert_eq!(pushed[0].digest, manifest_digest);
    assert_eq!(client.resolve(&format!("{workspace}/{name}"), "v1").await.unwrap(), manifest_digest);
    let config = dir.path().join("docker-config");
    let config = config.to_str().unwrap();
    let login = Command::new("docker")
        .args(["--config", config, "login", "-u", &env.registry_user, "--password-stdin", &env.registry])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(env.registry_password.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(login.success());
    docker(&["--config", config, "pull", &pushed[0].image]);
    let out = docker(&["run", "--rm", "--network", "none", &pushed[0].image, "sh", "-c", "echo oci-ran"]);
    assert_eq!(out.trim(), "oci-ran");
    docker(&["rmi", &pushed[0].image]);
}
