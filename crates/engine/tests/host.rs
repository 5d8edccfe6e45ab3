//! End-to-end facts of the host executor with real shells and real git: stops and timeouts
//! that end whole process groups, the source checkout, and the outputs directory a task
//! may tamper with. These run on the real clock; each takes well under a few seconds.
//! What holds on every executor (outputs through `$WHARF_OUTPUT`, variables, secret
//! masking, exit codes, retries, parallel stages, stop, timeout) is in `executors.rs`.

mod common;

use common::{Dirs, GitRepo, Recorder, host_engine, pipeline, request, secs, statuses, stop_request, task_record};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wharf_core::status::Status;
use wharf_engine::{Engine, EngineConfig, Part};
use wharf_executor::host::{HostConfig, HostExecutor};

/// A name no other test run uses, for files under /tmp.
fn unique(prefix: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()))
}

/// Whether the process is gone (or a zombie nobody reaped yet, which runs no more).
/// Whether `pid` is gone within a short while: a SIGKILL takes effect when the
/// process is next scheduled, which on a loaded machine is not instant.
fn dies_soon(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    is_dead(pid)
}

fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[tokio::test]
async fn a_stop_kills_the_running_process_group_and_keeps_the_log() {
    let engine = host_engine();
    let dirs = Dirs::new();
    let pid_file = dirs.path().join("sleeper.pid");
    let p = pipeline(&format!(
        "name: p\nstages:\n  - name: S\n    tasks:\n      - name: t\n        type: script\n        script: |\n          sleep 30 &\n          echo $! > {}\n          echo started\n          wait\n          echo never\n      - {{name: after, type: script, script: 'echo after'}}\n",
        pid_file.display()
    ));
    let recorder = Recorder::new();
    let started = Instant::now();
    let waiter = recorder.clone();
    let record = common::run_stopped_when(
        &engine,
        request(p, dirs.existing()),
        recorder.clone(),
        async move { waiter.wait_for_line(Part::Task(0, 0), "started").await },
        stop_request(secs(5)),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(record.progress.status, Status::Stopped);
    assert_eq!(common::history(&record, Part::Task(0, 0)), statuses("queued running stopped"));
    assert_eq!(common::history(&record, Part::Task(0, 1)), statuses("queued skipped"));
    assert_eq!(recorder.output(Part::Task(0, 0)), ["started"]);
    let pid: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(dies_soon(pid), "the task's background `sleep` ({pid}) outlived the stop");
}

#[tokio::test]
async fn a_second_stop_with_a_shorter_grace_hurries_a_process_that_ignores_sigterm() {
    let engine = host_engine();
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: \"trap '' TERM; echo ready; sleep 30\"}\n",
    );
    let recorder = Recorder::new();
    let (stop_tx, stop_rx) = watch::channel(None);
    let started = Instant::now();
    let run = engine.run(request(p, dirs.existing()), recorder.clone(), stop_rx);
    let hurry = async {
        recorder.wait_for_line(Part::Task(0, 0), "ready").await;
        stop_tx.send_replace(stop_request(secs(60)));
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop_tx.send_replace(stop_request(Duration::ZERO));
        std::future::pending::<()>().await
    };
    let record = tokio::select! {
        record = run => record,
        () = hurry => unreachable!(),
    };
    recorder.assert_consistent_with(&record);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert_eq!(record.progress.status, Status::Stopped);
    let lines = recorder.lines(Part::Task(0, 0));
    assert!(lines.iter().any(|l| l.contains("SIGKILL now")), "{lines:?}");
}

#[tokio::test]
async fn a_task_timeout_kills_a_process_that_ignores_sigterm_after_the_timeout_grace() {
    let host = HostExecutor::new(HostConfig {
        base_env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
        ..HostConfig::default()
    });
    let engine = Engine::new(
        EngineConfig { timeout_grace: Duration::from_millis(500), ..EngineConfig::default() },
        Arc::new(host),
    );
    let dirs = Dirs::new();
    let p = pipeline(
        "name: p\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: \"trap '' TERM; sleep 30\", timeout: 1s}\n",
    );
    let started = Instant::now();
    let (record, recorder) = common::run(&engine, request(p, dirs.existing())).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500) && took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(record.progress.status, Status::TimedOut);
    assert_eq!(task_record(&record, "t").reason.as_deref(), Some("timed out: the task timeout of 1s ran out"));
    let lines = recorder.lines(Part::Task(0, 0));
    assert!(lines.iter().any(|l| l.contains("did not exit within 500ms of SIGTERM; sent SIGKILL")), "{lines:?}");
}

#[tokio::test]
async fn prepare_refuses_task_types_the_host_executor_cannot_run() {
    let engine = host_engine();
    let p = pipeline(
        "name: p\nstages:\n  - name: Build\n    tasks:\n      - {name: img, type: image, dockerfile: Dockerfile, context: ., image: app, tag: '1', workspace: devops}\n      - {name: ok, type: script, script: x}\n",
    );
    let err = engine.prepare(&p, &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
    assert_eq!(
        err,
        "Build/img: `image` tasks need the Docker Engine to build and push, and none is configured here (the server uses it when a Docker socket answers at start)"
    );
}

#[tokio::test]
async fn the_checkout_comes_first_and_scripts_see_the_commit_and_branch() {
    let repo = GitRepo::new();
    let engine = host_engine();
    let dirs = Dirs::new();
    let p = pipeline(&format!(
        "name: p\nsource: {{repo: '{}', branch: main}}\nstages:\n  - name: S\n    tasks:\n      - {{name: t, type: script, script: 'echo \"${{GIT_BRANCH}} ${{GIT_COMMIT}} ${{GIT_URL}}\"; cat README'}}\n",
        repo.url()
    ));
    let (record, recorder) = common::run(&engine, request(p, dirs.checkout())).await;
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);
    let checkout = record.checkout.as_ref().unwrap();
    assert_eq!(common::history(&record, Part::Checkout), statuses("queued running succeeded"));
    assert_eq!(checkout.commit.as_deref(), Some(repo.commit.as_str()));
    assert_eq!(checkout.branch.as_deref(), Some("main"));
    assert_eq!(
        recorder.output(Part::Task(0, 0)),
        [format!("main {} {}", repo.commit, repo.url()), "hello from the repo".to_owned()]
    );
    // The checkout finished before the first stage began.
    let changes = recorder.changes();
    let checked_out = changes.iter().position(|c| *c == (Part::Checkout, Status::Succeeded)).unwrap();
    let stage_began = changes.iter().position(|c| *c == (Part::Stage(0), Status::Running)).unwrap();
    assert!(checked_out < stage_began);
    assert!(recorder.lines(Part::Checkout).iter().any(|l| l.contains(&repo.commit)));
}

#[tokio::test]
async fn a_missing_branch_fails_the_run_naming_branch_and_repository() {
    let repo = GitRepo::new();
    let engine = host_engine();
    let dirs = Dirs::new();
    let p = pipeline(&format!(
        "name: p\nsource: {{repo: '{}', branch: no-such-branch}}\nstages:\n  - name: S\n    tasks:\n      - {{name: t, type: script, script: 'echo ran'}}\n  - name: T\n    tasks:\n      - {{name: u, type: script, script: 'echo ran'}}\n",
        repo.url()
    ));
    let (record, recorder) = common::run(&engine, request(p, dirs.checkout())).await;
    assert_eq!(record.progress.status, Status::Failed);
    let want = format!(
        "checkout failed: branch `no-such-branch` does not exist in repository `{}` (it may have been deleted or renamed; edit the pipeline's source branch)",
        repo.url()
    );
    assert_eq!(record.reason.as_deref(), Some(want.as_str()));
    assert_eq!(common::history(&record, Part::Checkout), statuses("queued running failed"));
    for part in [Part::Stage(0), Part::Task(0, 0), Part::Stage(1), Part::Task(1, 0)] {
        assert_eq!(common::history(&record, part), statuses("queued skipped"), "{part:?}");
    }
    assert!(recorder.output(Part::Task(0, 0)).is_empty());
}

#[tokio::test]
async fn a_branch_parameter_holding_shell_code_fails_cleanly_and_runs_nothing() {
    let repo = GitRepo::new();
    let engine = host_engine();
    let dirs = Dirs::new();
    let marker = unique("pwned-branch");
    let p = pipeline(&format!(
        "name: p\nparameters: [{{name: BRANCH, default: main}}]\nsource: {{repo: '{}', branch: '${{BRANCH}}'}}\nstages:\n  - name: S\n    tasks:\n      - {{name: t, type: script, script: 'echo ran'}}\n",
        repo.url()
    ));
    let branch = format!("$(touch {})", marker.display());
    let mut req = request(p, dirs.checkout());
    req.parameters =
        engine.prepare(&req.pipeline, &BTreeMap::from([("BRANCH".into(), branch.clone())]), &BTreeMap::new()).unwrap();
    let (record, recorder) = common::run(&engine, req).await;
    assert_eq!(record.progress.status, Status::Failed);
    let reason = record.reason.clone().unwrap();
    assert!(reason.starts_with(&format!("checkout failed: branch name `{branch}` is not valid")), "{reason}");
    assert_eq!(common::history(&record, Part::Task(0, 0)), statuses("queued skipped"));
    assert!(recorder.output(Part::Task(0, 0)).is_empty());
    assert!(!marker.exists(), "the branch name ran as code");
}

/// A run not allowed local sources (a server's untrusted project) clones no repository
/// on this machine's disk, even when `source.repo` only becomes a path once rendered.
#[tokio::test]
async fn a_run_without_local_sources_refuses_a_rendered_local_repo_before_git_runs() {
    let repo = GitRepo::new();
    let engine = host_engine();
    let path = repo.tmp.path().display().to_string();
    for given in [path.clone(), format!("file://{path}"), repo.url()] {
        let dirs = Dirs::new();
        let p = pipeline(
            "name: p\nparameters: [REPO]\nsource: {repo: '${REPO}'}\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: 'echo ran'}\n",
        );
        let mut req = request(p, dirs.checkout());
        req.local_sources = false;
        req.parameters =
            engine.prepare(&req.pipeline, &BTreeMap::from([("REPO".into(), given.clone())]), &BTreeMap::new()).unwrap();
        let (record, recorder) = common::run(&engine, req).await;
        assert_eq!(record.progress.status, Status::Failed, "{given}");
        let reason = record.reason.clone().unwrap();
        assert!(
            reason.contains(&format!("source.repo `{given}` names a repository on the server's own disk")),
            "{reason}"
        );
        assert_eq!(common::history(&record, Part::Checkout), statuses("queued failed"), "git never ran");
        assert_eq!(common::history(&record, Part::Task(0, 0)), statuses("queued skipped"));
        assert!(recorder.output(Part::Task(0, 0)).is_empty());
        assert!(!dirs.path().join("ws/src/README").exists(), "{given} was cloned");
    }
}

/// Runs git in `dir` and returns its trimmed stdout.
fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@e"])
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn an_event_ref_replaces_the_pipeline_branch_and_sets_git_branch_or_git_tag() {
    use wharf_engine::GitRef;
    let repo = GitRepo::new();
    let dir = repo.tmp.path();
    // main: first commit; feature/x: one more; the annotated tag v1.0 on a third one,
    // reachable from no branch.
    git_in(dir, &["checkout", "--quiet", "-b", "feature/x"]);
    std::fs::write(dir.join("README"), "feature\n").unwrap();
    git_in(dir, &["commit", "--quiet", "-am", "feature commit"]);
    let feature = git_in(dir, &["rev-parse", "HEAD"]);
    std::fs::write(dir.join("README"), "tagged\n").unwrap();
    git_in(dir, &["commit", "--quiet", "-am", "tagged commit"]);
    let tagged = git_in(dir, &["rev-parse", "HEAD"]);
    git_in(dir, &["tag", "-a", "v1.0", "-m", "release"]);
    git_in(dir, &["reset", "--quiet", "--hard", &feature]);
    git_in(dir, &["checkout", "--quiet", "main"]);

    let engine = host_engine();
    let script = "echo \"branch=${GIT_BRANCH} tag=${GIT_TAG} commit=${GIT_COMMIT}\"; cat README";
    let p = pipeline(&format!(
        "name: p\nsource: {{repo: '{}', branch: main}}\nstages:\n  - name: S\n    tasks:\n      - {{name: t, type: script, script: '{script}'}}\n",
        repo.url()
    ));

    let dirs = Dirs::new();
    let mut req = request(p.clone(), dirs.checkout());
    req.git_ref = Some(GitRef::Branch("feature/x".into()));
    req.commit = Some(feature.clone());
    assert_eq!(wharf_engine::initial_record(&req).checkout.unwrap().branch.as_deref(), Some("feature/x"));
    let (record, recorder) = common::run(&engine, req).await;
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);
    let checkout = record.checkout.as_ref().unwrap();
    assert_eq!((checkout.branch.as_deref(), checkout.tag.as_deref()), (Some("feature/x"), None));
    assert_eq!(checkout.commit.as_deref(), Some(feature.as_str()));
    assert_eq!(
        recorder.output(Part::Task(0, 0)),
        [format!("branch=feature/x tag= commit={feature}"), "feature".into()]
    );

    let dirs = Dirs::new();
    let mut req = request(p, dirs.checkout());
    req.git_ref = Some(GitRef::Tag("v1.0".into()));
    req.commit = Some(tagged.clone());
    let initial = wharf_engine::initial_record(&req).checkout.unwrap();
    assert_eq!((initial.branch, initial.tag.as_deref()), (None, Some("v1.0")));
    let (record, recorder) = common::run(&engine, req).await;
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);
    let checkout = record.checkout.as_ref().unwrap();
    assert_eq!((checkout.branch.as_deref(), checkout.tag.as_deref()), (None, Some("v1.0")));
    assert_eq!(checkout.commit.as_deref(), Some(tagged.as_str()));
    assert_eq!(recorder.output(Part::Task(0, 0)), [format!("branch= tag=v1.0 commit={tagged}"), "tagged".into()]);
    assert_eq!(GitRef::from_checkout(checkout), Some(GitRef::Tag("v1.0".into())));
}

#[tokio::test]
async fn a_checkout_waits_for_an_executor_slot_like_a_task() {
    let repo = GitRepo::new();
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let host = HostExecutor::new(HostConfig { base_env: vec![("PATH".into(), path)], ..HostConfig::default() });
    let config = EngineConfig { max_parallel_tasks: 1, timeout_grace: secs(2) };
    let engine = Engine::new(config, Arc::new(host));
    let (busy_dirs, dirs) = (Dirs::new(), Dirs::new());
    let busy =
        pipeline("name: busy\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: 'sleep 1'}\n");
    let cloning = pipeline(&format!(
        "name: cloning\nsource: {{repo: '{}', branch: main}}\nstages:\n  - name: S\n    tasks:\n      - {{name: t, type: script, script: 'true'}}\n",
        repo.url()
    ));
    let (first, second) = tokio::join!(common::run(&engine, request(busy, busy_dirs.checkout())), async {
        // The busy run holds the one slot by now.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        common::run(&engine, request(cloning, dirs.checkout())).await
    });
    let (busy, cloned) = (first.0, second.0);
    assert_eq!(cloned.progress.status, Status::Succeeded, "{:?}", cloned.reason);
    assert_eq!(common::history(&cloned, Part::Checkout), statuses("queued pending running succeeded"));
    let slot_freed = busy.stages[0].tasks[0].progress.finished_at().unwrap();
    let clone_began = cloned.checkout.as_ref().unwrap().progress.started_at().unwrap();
    assert!(clone_began >= slot_freed, "the clone began at {clone_began}, before the slot was free at {slot_freed}");
}

/// A task (a container with the outputs directory mounted, as root) may leave links
/// in that directory. The server, which may be root, must never follow them: not to
/// read another file into the run record, not to truncate a host file that a link
/// named like the next attempt's output file points to (issue 11, finding 2).
#[tokio::test]
async fn links_a_task_plants_in_the_outputs_directory_are_never_followed() {
    let engine = host_engine();
    let dirs = Dirs::new();
    // A host file the server can read and write, and the task is not meant to reach.
    let precious = dirs.path().join("precious.key");
    std::fs::write(&precious, "SECRET=server-only\n").unwrap();
    let p = pipeline(&format!(
        r#"name: links
stages:
  - name: S
    mode: parallel
    on_error: ignore
    tasks:
      - name: read
        type: script
        outputs: [SECRET]
        script: ln -sf {precious} "$WHARF_OUTPUT"
      - name: truncate
        type: script
        retries: 1
        script: |
          dir=$(dirname "$WHARF_OUTPUT")
          case "$WHARF_OUTPUT" in
            *-1.env) ln -s {precious} "$dir/0-1-2.env"; exit 1 ;;
          esac
          echo "second attempt: $(cat "$WHARF_OUTPUT" | wc -c) bytes"
"#,
        precious = precious.display()
    ));
    let (record, recorder) = common::run(&engine, request(p, dirs.existing())).await;
    let read = task_record(&record, "read");
    assert_eq!(read.progress.status, Status::Failed);
    assert_eq!(
        read.reason.as_deref(),
        Some("$WHARF_OUTPUT was replaced by a symbolic link; write outputs to the file itself")
    );
    assert!(read.outputs.is_empty(), "{:?}", read.outputs);
    assert!(!recorder.lines(Part::Task(0, 0)).iter().any(|l| l.contains("server-only")));

    let truncate = task_record(&record, "truncate");
    assert_eq!(truncate.progress.status, Status::Succeeded, "{:?}", truncate.reason);
    assert_eq!(recorder.output(Part::Task(0, 1)), ["second attempt: 0 bytes"]);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "SECRET=server-only\n", "the link was followed");
}

/// A FIFO under the output file's name would block a server that opens it for reading;
/// a directory there would make the next attempt's file impossible to create.
#[tokio::test]
async fn a_fifo_or_directory_instead_of_the_output_file_fails_the_task_without_blocking() {
    let engine = host_engine();
    let dirs = Dirs::new();
    let p = pipeline(
        r#"name: fifo
stages:
  - name: S
    mode: parallel
    on_error: ignore
    tasks:
      - name: fifo
        type: script
        outputs: [X]
        script: rm "$WHARF_OUTPUT" && mkfifo "$WHARF_OUTPUT"
      - name: dir
        type: script
        retries: 1
        script: |
          case "$WHARF_OUTPUT" in
            *-1.env) mkdir "$(dirname "$WHARF_OUTPUT")/0-1-2.env"; exit 1 ;;
          esac
          echo X=2 >> "$WHARF_OUTPUT"
"#,
    );
    let run = common::run(&engine, request(p, dirs.existing()));
    let (record, _) = tokio::time::timeout(Duration::from_secs(20), run).await.expect("the run must not block");
    let fifo = task_record(&record, "fifo");
    assert_eq!(fifo.progress.status, Status::Failed);
    assert_eq!(fifo.reason.as_deref(), Some("$WHARF_OUTPUT was replaced by something that is not a regular file"));
    // An empty directory planted under the next attempt's name is cleared away.
    assert_eq!(task_record(&record, "dir").progress.status, Status::Succeeded);
}

/// Outputs files can hold secrets in clear: none is left once the run ends, whether
/// its tasks succeeded, failed or wrote outputs they did not declare (finding 10).
#[tokio::test]
async fn no_output_file_is_left_behind_in_any_outcome() {
    let engine = host_engine();
    let dirs = Dirs::new();
    let p = pipeline(
        r#"name: clean
stages:
  - name: S
    mode: parallel
    on_error: ignore
    tasks:
      - name: fails
        type: script
        script: echo TOKEN=in-clear >> "$WHARF_OUTPUT"; exit 3
      - name: undeclared
        type: script
        outputs: [MISSING]
        script: echo TOKEN=in-clear >> "$WHARF_OUTPUT"
      - name: fine
        type: script
        script: echo TOKEN=in-clear >> "$WHARF_OUTPUT"
"#,
    );
    let (record, _) = common::run(&engine, request(p, dirs.existing())).await;
    assert_eq!(task_record(&record, "fails").progress.status, Status::Failed);
    assert_eq!(task_record(&record, "fine").progress.status, Status::Succeeded);
    let outputs = dirs.path().join("run/outputs");
    let left: Vec<_> =
        std::fs::read_dir(&outputs).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", outputs.display());
}
