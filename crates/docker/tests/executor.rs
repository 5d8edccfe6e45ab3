//! The Docker executor against the real Docker Engine of the test environment
//! (`wharf_testenv`): scripts in the local busybox image, env, exit codes, outputs
//! through the mounted workspace, logs with the daemon's timestamps, stop and timeout
//! that leave no container behind, a missing image, adopting a container after a
//! "restart" with the log resumed exactly once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wharf_docker::{DockerConfig, DockerExecutor};
use wharf_executor::{Executor, LogLine, LogResume, LogSink, StopReason, StopRequest, Stream, TaskSpec};

#[derive(Default)]
struct Collect(Mutex<Vec<LogLine>>);

impl LogSink for Collect {
    fn line(&self, line: LogLine) {
        self.0.lock().unwrap().push(line);
    }
}

impl Collect {
    fn texts(&self, stream: Stream) -> Vec<String> {
        self.0.lock().unwrap().iter().filter(|l| l.stream == stream).map(|l| l.text.clone()).collect()
    }
    fn all(&self) -> String {
        self.0.lock().unwrap().iter().map(|l| format!("{:?} {}\n", l.stream, l.text)).collect()
    }
}

struct Fixture {
    executor: Arc<DockerExecutor>,
    image: String,
    dir: tempfile::TempDir,
    /// A label unique to this test, so that its containers can be counted.
    label: (String, String),
}

fn fixture(name: &str) -> Option<Fixture> {
    let env = wharf_testenv::containers_or_fail_in_ci()?;
    let executor = DockerExecutor::new(DockerConfig {
        socket: Some(env.docker.clone()),
        network: Some("none".into()),
        ..DockerConfig::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::create_dir_all(dir.path().join("outputs")).unwrap();
    let unique = format!("{name}-{}-{}", std::process::id(), jiff::Timestamp::now().as_nanosecond());
    Some(Fixture {
        executor: Arc::new(executor),
        image: env.busybox_image,
        dir,
        label: ("WHARF_TEST_EXECUTOR".into(), unique),
    })
}

impl Fixture {
    fn spec(&self, task: &str, script: &str) -> TaskSpec {
        let output_file = self.dir.path().join("outputs").join(format!("{task}.env"));
        std::fs::write(&output_file, b"").unwrap();
        TaskSpec {
            run: "docker-test#1".into(),
            stage: "Build".into(),
            task: task.into(),
            attempt: 1,
            workdir: self.dir.path().join("src"),
            script: script.into(),
            image: Some(self.image.clone()),
            env: vec![
                ("GREETING".into(), "hello from env".into()),
                ("WHARF_OUTPUT".into(), output_file.display().to_string()),
                ("WHARF_WORKSPACE".into(), self.dir.path().join("src").display().to_string()),
            ],
            output_file,
            labels: vec![self.label.clone()],
            cluster: None,
        }
    }

    /// Containers (any state) carrying this test's label.
    async fn containers(&self) -> usize {
        let filters = HashMap::from([("label".to_owned(), vec![format!("{}={}", self.label.0, self.label.1)])]);
        let options =
            bollard::query_parameters::ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        self.executor.client().list_containers(Some(options)).await.unwrap().len()
    }
}

fn no_stop() -> (watch::Sender<Option<StopRequest>>, watch::Receiver<Option<StopRequest>>) {
    watch::channel(None)
}

#[tokio::test]
async fn script_env_outputs_and_exit_code() {
    let Some(f) = fixture("basic") else { return };
    let logs = Arc::new(Collect::default());
    let spec = f.spec(
        "basic",
        "echo \"$GREETING\"\necho to stderr >&2\npwd\necho VERSION=1.2.3 >> \"$WHARF_OUTPUT\"\n\
         echo made > \"$WHARF_WORKSPACE/made.txt\"\nexit 3",
    );
    let (_tx, rx) = no_stop();
    let started = jiff::Timestamp::now();
    let exit = f.executor.run(spec.clone(), logs.clone(), rx).await.unwrap();
    assert_eq!((exit.code, exit.signal, exit.stopped), (Some(3), None, None), "{}", logs.all());
    assert_eq!(logs.texts(Stream::Stdout), ["hello from env", spec.workdir.display().to_string().as_str()]);
    assert_eq!(logs.texts(Stream::Stderr), ["to stderr"]);
    // The daemon's timestamps: within this test's time, not Wharf's reading time.
    for line in logs.0.lock().unwrap().iter().filter(|l| l.stream != Stream::System) {
        assert!(line.at >= started - jiff::SignedDuration::from_secs(1) && line.at <= jiff::Timestamp::now());
    }
    assert_eq!(std::fs::read_to_string(&spec.output_file).unwrap(), "VERSION=1.2.3\n");
    assert_eq!(std::fs::read_to_string(spec.workdir.join("made.txt")).unwrap(), "made\n");
    assert_eq!(f.containers().await, 0, "the container is removed");

    // The script is an argument, not shell text pasted into another command.
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let exit = f.executor.run(f.spec("quotes", "echo 'a \"b\" $c'; echo \"it's\""), logs.clone(), rx).await.unwrap();
    assert_eq!(exit.code, Some(0));
    assert_eq!(logs.texts(Stream::Stdout), ["a \"b\" $c", "it's"]);

    // `sh -e`: the first failing command ends the script.
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let exit = f.executor.run(f.spec("dash-e", "echo one; false; echo never"), logs.clone(), rx).await.unwrap();
    assert_eq!(exit.code, Some(1));
    assert_eq!(logs.texts(Stream::Stdout), ["one"]);
}

#[tokio::test]
async fn stop_and_timeout_leave_no_container() {
    let Some(f) = fixture("stop") else { return };
    for (reason, grace, script) in [
        // Exits on SIGTERM.
        (StopReason::Stopped, Duration::from_secs(20), "echo started; sleep 60"),
        // Ignores SIGTERM: SIGKILL after the grace.
        (StopReason::TimedOut, Duration::from_millis(300), "trap '' TERM; echo started; while :; do sleep 1; done"),
    ] {
        let logs = Arc::new(Collect::default());
        let (tx, rx) = no_stop();
        let run = tokio::spawn({
            let executor = f.executor.clone();
            let spec = f.spec("stop", script);
            let logs = logs.clone();
            async move { executor.run(spec, logs, rx).await }
        });
        let until = Instant::now() + Duration::from_secs(20);
        while !logs.texts(Stream::Stdout).contains(&"started".to_owned()) {
            assert!(Instant::now() < until, "never started: {}", logs.all());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(f.containers().await, 1);
        let asked = Instant::now();
        tx.send_replace(Some(StopRequest { reason, grace }));
        let exit = run.await.unwrap().unwrap();
        assert_eq!(exit.stopped, Some(reason), "{}", logs.all());
        assert!(asked.elapsed() < Duration::from_secs(15), "the stop took {:?}", asked.elapsed());
        let expected_signal = if grace < Duration::from_secs(1) { 9 } else { 15 };
        assert_eq!(exit.signal, Some(expected_signal), "{exit:?} {}", logs.all());
        assert_eq!(f.containers().await, 0, "a stopped container is removed");
    }
}

#[tokio::test]
async fn missing_image_is_a_clear_error_and_leaves_nothing() {
    let Some(f) = fixture("missing") else { return };
    let logs = Arc::new(Collect::default());
    let mut spec = f.spec("missing", "echo never");
    spec.image = Some("127.0.0.1:9/wharf-test/does-not-exist:0".into());
    let (_tx, rx) = no_stop();
    let err = f.executor.run(spec, logs.clone(), rx).await.unwrap_err().to_string();
    assert!(err.contains("cannot pull image 127.0.0.1:9/wharf-test/does-not-exist:0"), "{err}");
    assert!(err.contains("connection refused"), "the daemon's reason: {err}");
    assert_eq!(f.containers().await, 0);

    let mut spec = f.spec("no-image", "echo never");
    spec.image = None;
    let (_tx, rx) = no_stop();
    let err = f.executor.run(spec, logs.clone(), rx).await.unwrap_err().to_string();
    assert!(err.contains("names no image"), "{err}");
}

#[tokio::test]
async fn adopting_resumes_the_log_exactly_once() {
    let Some(f) = fixture("adopt") else { return };
    // A task that prints 40 lines 50 ms apart; the first `run` is abandoned (as a
    // killed server would) after some of them, keeping its container.
    let script =
        "i=0; while [ $i -lt 40 ]; do echo line $i; i=$((i+1)); sleep 0.05; done; echo DONE=1 >> \"$WHARF_OUTPUT\"";
    let spec = f.spec("adopt", script);
    // A container started the way `run` starts one, but with no supervisor: what a
    // killed server leaves behind.
    let docker = f.executor.client();
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    for (k, v) in [
        ("wharf.run", spec.run.clone()),
        ("wharf.stage", spec.stage.clone()),
        ("wharf.task", spec.task.clone()),
        ("wharf.attempt", "1".to_owned()),
    ] {
        labels.insert(k.to_owned(), v);
    }
    let body = bollard::models::ContainerCreateBody {
        image: Some(f.image.clone()),
        entrypoint: Some(vec!["/bin/sh".into()]),
        cmd: Some(vec!["-e".into(), "-c".into(), script.into()]),
        env: Some(vec![format!("WHARF_OUTPUT={}", spec.output_file.display())]),
        labels: Some(labels),
        host_config: Some(bollard::models::HostConfig {
            init: Some(true),
            network_mode: Some("none".into()),
            binds: Some(vec![format!("{0}:{0}", spec.output_file.parent().unwrap().display())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker.create_container(None, body).await.unwrap().id;
    docker.start_container(&id, None).await.unwrap();
    // Read what a first server process would have stored: the first lines.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let options = bollard::query_parameters::LogsOptionsBuilder::new().stdout(true).timestamps(true).build();
    let stored: Vec<(i64, String)> = {
        use futures_util::StreamExt;
        let frames: Vec<_> = docker.logs(&id, Some(options)).collect().await;
        frames
            .into_iter()
            .map(|f| {
                let bytes = f.unwrap().into_bytes();
                let text = String::from_utf8_lossy(&bytes).trim_end().to_owned();
                let (at, line) = text.split_once(' ').unwrap();
                (at.parse::<jiff::Timestamp>().unwrap().as_second(), line.to_owned())
            })
            .collect()
    };
    assert!(stored.len() >= 3 && stored.len() < 40, "{stored:?}");
    let since_second = stored.last().unwrap().0;
    let skip_lines = stored.iter().filter(|(s, _)| *s >= since_second).count() as u64;

    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let exit = f
        .executor
        .adopt(spec.clone(), logs.clone(), rx, LogResume { since_second, skip_lines })
        .await
        .unwrap()
        .expect("the container is there to adopt");
    assert_eq!(exit.code, Some(0), "{}", logs.all());
    let mut all: Vec<String> = stored.iter().map(|(_, l)| l.clone()).collect();
    all.extend(logs.texts(Stream::Stdout));
    let expected: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
    assert_eq!(all, expected, "stored + resumed = every line once");
    assert_eq!(std::fs::read_to_string(&spec.output_file).unwrap(), "DONE=1\n");
    assert_eq!(f.containers().await, 0, "the adopted container is removed");

    // Nothing left to adopt: `None`.
    let (_tx, rx) = no_stop();
    assert!(f.executor.adopt(spec, logs, rx, LogResume::default()).await.unwrap().is_none());
}

#[tokio::test]
async fn parallel_attempts_run_at_once() {
    let Some(f) = fixture("parallel") else { return };
    // A barrier in the shared workspace: each task waits (up to 20 s) until all four
    // have arrived, which only happens when they run at the same time.
    let barrier = "touch \"$WHARF_WORKSPACE/$ME\"; i=0; \
                   until [ \"$(ls \"$WHARF_WORKSPACE\" | wc -l)\" -ge 4 ]; do \
                   i=$((i+1)); [ $i -lt 400 ] || exit 7; sleep 0.05; done; echo done";
    let mut handles = Vec::new();
    for i in 0..4 {
        let executor = f.executor.clone();
        let mut spec = f.spec(&format!("p{i}"), barrier);
        spec.env.push(("ME".into(), format!("p{i}")));
        handles.push(tokio::spawn(async move {
            let logs = Arc::new(Collect::default());
            let (_tx, rx) = no_stop();
            let exit = executor.run(spec, logs.clone(), rx).await.unwrap();
            (exit, logs.texts(Stream::Stdout))
        }));
    }
    for h in handles {
        let (exit, out) = h.await.unwrap();
        assert_eq!((exit.code, out), (Some(0), vec!["done".to_owned()]));
    }
    assert_eq!(f.containers().await, 0);
}

#[tokio::test]
async fn images_are_pulled_with_the_registry_credentials() {
    use futures_util::StreamExt;
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let Some(f) = fixture("pull") else { return };
    let docker = f.executor.client();
    // Put the busybox image into the htpasswd registry under a name of this test's own,
    // then drop it locally, so that running it needs a pull with credentials.
    let repo = format!("{}/wharf-docker-test/bb", env.registry);
    let tag = f.label.1.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let image = format!("{repo}:{tag}");
    docker
        .tag_image(
            &f.image,
            Some(bollard::query_parameters::TagImageOptionsBuilder::new().repo(&repo).tag(&tag).build()),
        )
        .await
        .unwrap();
    let credentials = bollard::auth::DockerCredentials {
        username: Some(env.registry_user.clone()),
        password: Some(env.registry_password.clone()),
        serveraddress: Some(env.registry.clone()),
        ..Default::default()
    };
    let pushed: Vec<_> = docker
        .push_image(
            &repo,
            Some(bollard::query_parameters::PushImageOptionsBuilder::new().tag(&tag).build()),
            Some(credentials),
        )
        .collect()
        .await;
    assert!(pushed.iter().all(Result::is_ok), "push: {pushed:?}");
    let remove = || async {
        let _ = docker.remove_image(&image, None::<bollard::query_parameters::RemoveImageOptions>, None).await;
    };
    remove().await;

    // Without credentials the registry refuses: the error names the image and says why.
    let mut spec = f.spec("pull", "echo pulled and ran");
    spec.image = Some(image.clone());
    let (_tx, rx) = no_stop();
    let err = f.executor.run(spec.clone(), Arc::new(Collect::default()), rx).await.unwrap_err().to_string();
    assert!(err.contains(&format!("cannot pull image {image}")), "{err}");
    assert!(err.contains("no basic auth credentials") || err.contains("unauthorized"), "{err}");

    // A wrong password: refused too.
    let executor = DockerExecutor::new(DockerConfig {
        socket: Some(env.docker.clone()),
        network: Some("none".into()),
        credentials: Some(Arc::new(wharf_docker::StaticCredentials(std::collections::BTreeMap::from([(
            env.registry.clone(),
            (env.registry_user.clone(), "wrong-password".to_owned()),
        )])))),
        ..DockerConfig::default()
    })
    .unwrap();
    let (_tx, rx) = no_stop();
    let err = executor.run(spec.clone(), Arc::new(Collect::default()), rx).await.unwrap_err().to_string();
    assert!(err.contains(&format!("cannot pull image {image}")), "{err}");

    // With the registry's credentials it is pulled and runs.
    let executor = DockerExecutor::new(DockerConfig {
        socket: Some(env.docker.clone()),
        network: Some("none".into()),
        credentials: Some(Arc::new(wharf_docker::StaticCredentials(std::collections::BTreeMap::from([(
            env.registry.clone(),
            (env.registry_user.clone(), env.registry_password.clone()),
        )])))),
        ..DockerConfig::default()
    })
    .unwrap();
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let exit = executor.run(spec, logs.clone(), rx).await.unwrap();
    assert_eq!(exit.code, Some(0), "{}", logs.all());
    assert_eq!(logs.texts(Stream::Stdout), ["pulled and ran"]);
    assert!(
        logs.texts(Stream::System).iter().any(|l| l.contains(&format!("with the credentials for {}", env.registry)))
    );
    remove().await;
    assert_eq!(f.containers().await, 0);
}

#[tokio::test]
async fn a_container_created_but_never_started_is_started_when_adopted() {
    let Some(f) = fixture("created") else { return };
    let spec = f.spec("created", "echo ran after all; echo OK=1 >> \"$WHARF_OUTPUT\"");
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    for (k, v) in [
        ("wharf.run", spec.run.clone()),
        ("wharf.stage", spec.stage.clone()),
        ("wharf.task", spec.task.clone()),
        ("wharf.attempt", "1".to_owned()),
    ] {
        labels.insert(k.to_owned(), v);
    }
    let body = bollard::models::ContainerCreateBody {
        image: Some(f.image.clone()),
        entrypoint: Some(vec!["/bin/sh".into()]),
        cmd: Some(vec!["-e".into(), "-c".into(), spec.script.clone()]),
        env: Some(vec![format!("WHARF_OUTPUT={}", spec.output_file.display())]),
        labels: Some(labels),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some("none".into()),
            binds: Some(vec![format!("{0}:{0}", spec.output_file.parent().unwrap().display())]),
            ..Default::default()
        }),
        ..Default::default()
    };
    f.executor.client().create_container(None, body).await.unwrap();
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let exit = f.executor.adopt(spec.clone(), logs.clone(), rx, LogResume::default()).await.unwrap().unwrap();
    assert_eq!(exit.code, Some(0), "{}", logs.all());
    assert_eq!(logs.texts(Stream::Stdout), ["ran after all"]);
    assert_eq!(std::fs::read_to_string(&spec.output_file).unwrap(), "OK=1\n");
    assert_eq!(f.containers().await, 0);
}
