//! `wharf run --executor docker` against the real Docker Engine (the local busybox
//! image of `wharf_testenv`): scripts in the image with env and secrets (masked in the
//! stored logs), outputs from one task to the next through `$WHARF_OUTPUT`, a parallel
//! stage, exit codes, a missing image, a timeout and a Ctrl-C, none of which leaves a
//! container behind.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

struct Sandbox {
    tmp: tempfile::TempDir,
    image: String,
}

fn sandbox() -> Option<Sandbox> {
    let env = wharf_testenv::containers_or_fail_in_ci()?;
    Some(Sandbox { tmp: tempfile::tempdir().unwrap(), image: env.busybox_image })
}

impl Sandbox {
    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn command(&self, file: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(WHARF);
        cmd.args(["run", file, "--data-dir"])
            .arg(self.root().join("data"))
            .args(["--executor", "docker", "--docker-network", "none", "--grace", "1"])
            .args(extra)
            .current_dir(self.root())
            .env_remove("WHARF_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, name: &str, yaml: &str, extra: &[&str]) -> Output {
        let file = format!("{name}.yaml");
        std::fs::write(self.root().join(&file), yaml.replace("IMAGE", &self.image)).unwrap();
        self.command(&file, extra).output().unwrap()
    }

    fn run_dir(&self, pipeline: &str) -> PathBuf {
        self.root().join("data/pipelines").join(pipeline).join("runs/1")
    }

    fn record(&self, pipeline: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.run_dir(pipeline).join("run.json")).unwrap()).unwrap()
    }

    fn log(&self, pipeline: &str, stage: &str, task: &str) -> String {
        let path = self.run_dir(pipeline).join("logs").join(stage).join(format!("{task}.log"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
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

fn status(v: &Value) -> &str {
    v["progress"]["status"].as_str().or(v["status"].as_str()).unwrap_or_else(|| panic!("no status in {v}"))
}

/// Containers (any state) of run `<pipeline>#1`.
fn containers_of(pipeline: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=wharf.run={pipeline}#1")])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn scripts_env_secrets_outputs_parallel_and_exit_codes() {
    let Some(sb) = sandbox() else { return };
    let pipeline = format!("drun-{}", std::process::id());
    let (image, tag) = sb.image.rsplit_once(':').unwrap();
    let yaml = format!(
        "name: {pipeline}
stages:
  - name: Build
    tasks:
      - name: env-and-secret
        type: script
        image: {image}
        tag: \"{tag}\"
        env: {{ GREETING: \"hello ${{BUILD_ID}}\" }}
        secrets: [TOKEN_X]
        outputs: [VERSION]
        script: |
          echo \"$GREETING\"
          echo \"token is $TOKEN_X\" >&2
          [ -f inside-the-workspace ] && echo \"workspace mounted at $(pwd)\"
          echo \"VERSION=1.2.${{BUILD_ID}}\" >> \"$WHARF_OUTPUT\"
  - name: Test
    mode: parallel
    tasks:
      - {{ name: p1, type: script, image: IMAGE, script: 'echo \"p1 sees ${{VERSION}}\"' }}
      - {{ name: p2, type: script, image: IMAGE, script: 'echo \"p2 sees ${{tasks.env-and-secret.VERSION}}\"' }}
  - name: Fail
    tasks:
      - {{ name: exit-code, type: script, image: IMAGE, script: 'echo failing; exit 7' }}
"
    );
    std::fs::write(sb.root().join("inside-the-workspace"), "").unwrap();
    let out = sb.run(&pipeline, &yaml, &["-s", "TOKEN_X=s3cr3t-value-42"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains("s3cr3t-value-42"), "the secret leaked to the terminal:\n{}", text(&out));
    let run = sb.record(&pipeline);
    assert_eq!(status(&run), "failed", "{run:#}");
    assert_eq!(status(task(&run, "env-and-secret")), "succeeded", "{run:#}");
    assert_eq!(task(&run, "env-and-secret")["outputs"]["VERSION"], "1.2.1");
    let log = sb.log(&pipeline, "Build", "env-and-secret");
    assert!(log.contains("out hello 1"), "{log}");
    assert!(log.contains("err token is ***"), "the secret is masked in the stored log:\n{log}");
    assert!(!log.contains("s3cr3t-value-42"), "{log}");
    assert!(log.contains(&format!("workspace mounted at {}", sb.root().canonicalize().unwrap().display())), "{log}");
    assert!(sb.log(&pipeline, "Test", "p1").contains("p1 sees 1.2.1"));
    assert!(sb.log(&pipeline, "Test", "p2").contains("p2 sees 1.2.1"));
    assert_eq!(status(task(&run, "exit-code")), "failed");
    assert_eq!(task(&run, "exit-code")["exit_code"], 7);
    assert!(sb.log(&pipeline, "Fail", "exit-code").contains("out failing"));
    assert!(containers_of(&pipeline).is_empty(), "containers left: {:?}", containers_of(&pipeline));
}

#[test]
fn a_missing_image_fails_the_task_naming_the_image_and_the_reason() {
    let Some(sb) = sandbox() else { return };
    let pipeline = format!("dmissing-{}", std::process::id());
    let yaml = format!(
        "name: {pipeline}\nstages:\n  - name: Build\n    tasks:\n      - name: t\n        type: script\n        \
         image: 127.0.0.1:9/wharf-test/nothing\n        tag: \"0\"\n        script: echo never\n"
    );
    let out = sb.run(&pipeline, &yaml, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run = sb.record(&pipeline);
    let why = task(&run, "t")["reason"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("cannot pull image 127.0.0.1:9/wharf-test/nothing:0"), "{why}");
    assert!(why.contains("connection refused"), "the daemon's reason: {why}");
    assert!(containers_of(&pipeline).is_empty());
}

#[test]
fn a_timeout_and_a_ctrl_c_leave_no_container() {
    let Some(sb) = sandbox() else { return };
    // A task timeout; the script ignores SIGTERM, so SIGKILL ends it after the grace.
    let pipeline = format!("dtimeout-{}", std::process::id());
    let yaml = format!(
        "name: {pipeline}\nstages:\n  - name: Build\n    tasks:\n      - name: t\n        type: script\n        \
         image: IMAGE\n        timeout: 2s\n        script: \"trap '' TERM; echo started; while :; do sleep 1; done\"\n"
    );
    let out = sb.run(&pipeline, &yaml, &[]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out));
    let run = sb.record(&pipeline);
    assert_eq!(status(task(&run, "t")), "timed_out", "{run:#}");
    assert!(sb.log(&pipeline, "Build", "t").contains("sent SIGKILL"));
    assert!(containers_of(&pipeline).is_empty(), "the timed-out container is removed");

    // Ctrl-C (SIGINT to `wharf run`) while the container runs.
    let pipeline = format!("dstop-{}", std::process::id());
    let yaml = format!(
        "name: {pipeline}\nstages:\n  - name: Build\n    tasks:\n      - name: t\n        type: script\n        \
         image: {}\n        script: echo started; sleep 60\n",
        sb.image
    );
    std::fs::write(sb.root().join("stop.yaml"), yaml).unwrap();
    let mut child: Child = sb.command("stop.yaml", &[]).spawn().unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while containers_of(&pipeline).is_empty() {
        assert!(Instant::now() < until, "no container appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status_code = child.wait().unwrap().code();
    assert_eq!(status_code, Some(130));
    assert_eq!(status(task(&sb.record(&pipeline), "t")), "stopped");
    assert!(containers_of(&pipeline).is_empty(), "the stopped container is removed");
}
