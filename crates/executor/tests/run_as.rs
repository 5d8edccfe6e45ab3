//! Host tasks run as an unprivileged user (a server running as root): the workspace is
//! handed to it without following a link out of it or changing a file linked from
//! elsewhere, and the shell runs with that user's ids. Needs root; prints why it skips
//! otherwise, and fails under CI=true (CI runs as root).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use wharf_executor::handover::{self, TaskUser};
use wharf_executor::host::{HostConfig, HostExecutor};
use wharf_executor::{Executor, LogLine, LogSink, Stream, TaskSpec};

/// `nobody`'s ids: no account is needed to own files or run a process.
const USER: TaskUser = TaskUser { name: String::new(), uid: 65534, gid: 65534 };

fn root_or_skip() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none_or(|v| v != "true"), "CI=true runs the tests as root");
    eprintln!("SKIPPED: switching a task's user needs root");
    false
}

fn owner(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().uid()
}

#[test]
fn the_hand_over_stays_inside_the_workspace() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, "root's").unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("a/b")).unwrap();
    std::fs::write(ws.join("a/b/file"), "x").unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("a/link-to-file")).unwrap();
    std::os::unix::fs::symlink(dir.path(), ws.join("link-to-dir")).unwrap();
    std::fs::hard_link(&outside, ws.join("hardlink")).unwrap();

    handover::give_tree(&ws, &USER).unwrap();
    for inside in ["", "a", "a/b", "a/b/file"] {
        assert_eq!(owner(&ws.join(inside)), USER.uid, "{inside}");
    }
    assert_eq!(owner(&outside), 0, "a file linked from outside is not changed");
    assert_eq!(owner(dir.path()), 0, "a linked directory is not followed");
    assert_eq!(owner(&ws.join("a/link-to-file")), 0, "links themselves are left as they are");
    assert!(handover::give_file(&ws.join("a/link-to-file"), &USER).is_err(), "an output file must be a plain file");
}

struct Lines(Mutex<Vec<LogLine>>);

impl LogSink for Lines {
    fn line(&self, line: LogLine) {
        self.0.lock().unwrap().push(line);
    }
}

#[tokio::test]
async fn the_task_runs_as_the_user_and_owns_its_workspace_output_and_home() {
    if !root_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let src = run_dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(run_dir.join("outputs")).unwrap();
    std::fs::write(src.join("checked-out"), "by root").unwrap();
    let output = run_dir.join("outputs/0-0-1.env");
    std::fs::write(&output, "").unwrap();
    // `nobody` passes through the temporary directory (0700) like through /var/lib.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();

    let user = TaskUser { name: "nobody".into(), ..USER };
    let exec = HostExecutor::new(HostConfig {
        base_env: vec![("PATH".into(), "/usr/bin:/bin".into()), ("HOME".into(), "/root".into())],
        user: Some(user),
        ..HostConfig::default()
    });
    let spec = TaskSpec {
        run: "demo#1".into(),
        stage: "build".into(),
        task: "t".into(),
        attempt: 1,
        workdir: src.clone(),
        script:
            "id -u; echo \"$HOME $USER\"; echo more >> checked-out; echo K=v >> \"$WHARF_OUTPUT\"; touch \"$HOME/h\""
                .into(),
        image: None,
        env: vec![("WHARF_OUTPUT".into(), output.display().to_string())],
        output_file: output.clone(),
        labels: Vec::new(),
        cluster: None,
    };
    let lines = Arc::new(Lines(Mutex::default()));
    let (_stop, stop) = watch::channel(None);
    let exit = exec.run(spec, lines.clone(), stop).await.unwrap();
    let out: Vec<String> =
        lines.0.lock().unwrap().iter().filter(|l| l.stream != Stream::System).map(|l| l.text.clone()).collect();
    assert!(exit.succeeded(), "{exit:?} {out:?}");
    let home = run_dir.join("home");
    assert_eq!(out, ["65534".to_owned(), format!("{} nobody", home.display())]);
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "K=v\n");
    assert_eq!(owner(&home.join("h")), 65534);
    assert_eq!(owner(&run_dir), 0, "the run directory stays root's");
}

/// The `Uid:`, `Gid:`, `Groups:` and `CapEff:` lines of a `/proc/…/status`, tabs as spaces.
fn credentials(status: &str) -> Vec<String> {
    status
        .lines()
        .filter(|l| ["Uid:", "Gid:", "Groups:", "CapEff:"].iter().any(|p| l.starts_with(p)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The credentials of every thread of this process, by thread id.
fn threads_credentials() -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        // A thread may end between the listing and the read.
        if let Ok(status) = std::fs::read_to_string(entry.path().join("status")) {
            all.push((entry.file_name().to_string_lossy().into_owned(), credentials(&status)));
        }
    }
    all
}

fn probe_spec(workdir: &Path) -> TaskSpec {
    TaskSpec {
        run: "demo#1".into(),
        stage: "build".into(),
        task: "t".into(),
        attempt: 1,
        workdir: workdir.join("src"),
        script: "grep -E '^(Uid|Gid|Groups|CapEff|CapPrm):' /proc/self/status".into(),
        image: None,
        env: Vec::new(),
        output_file: workdir.join("outputs/out.env"),
        labels: Vec::new(),
        cluster: None,
    }
}

/// A run directory as the server makes it: `src/` and `outputs/out.env`, passable for the user.
fn run_dir(parent: &Path, name: &str) -> std::path::PathBuf {
    let run = parent.join(name);
    std::fs::create_dir_all(run.join("src")).unwrap();
    std::fs::create_dir_all(run.join("outputs")).unwrap();
    std::fs::write(run.join("outputs/out.env"), "").unwrap();
    run
}

/// Gives this (root) test process supplementary groups, so a task that kept them would
/// show them. Once per process: the credentials test compares against the state after.
fn with_supplementary_groups() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let groups = [nix::unistd::Gid::from_raw(4), nix::unistd::Gid::from_raw(27)];
        nix::unistd::setgroups(&groups).expect("root sets its supplementary groups");
    });
}

fn nobody_executor() -> HostExecutor {
    HostExecutor::new(HostConfig {
        base_env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        user: Some(TaskUser { name: "nobody".into(), ..USER }),
        ..HostConfig::default()
    })
}

#[tokio::test]
async fn the_task_has_the_user_s_ids_no_groups_and_no_capabilities() {
    if !root_or_skip() {
        return;
    }
    with_supplementary_groups();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let run = run_dir(dir.path(), "run");
    let lines = Arc::new(Lines(Mutex::default()));
    let (_stop, stop) = watch::channel(None);
    let exit = nobody_executor().run(probe_spec(&run), lines.clone(), stop).await.unwrap();
    let out: Vec<String> = lines
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| l.text.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(exit.succeeded(), "{exit:?} {out:?}");
    assert_eq!(
        out,
        [
            "Uid: 65534 65534 65534 65534",
            "Gid: 65534 65534 65534 65534",
            "Groups:",
            "CapPrm: 0000000000000000",
            "CapEff: 0000000000000000",
        ]
    );
}

/// The task's child shares the server's memory and switches ids before its exec; the
/// server must stay as it was. Many tasks started at once from several worker threads
/// must leave every thread of this (root) process exactly as it was: ids, groups and
/// capabilities.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starting_tasks_as_the_user_leaves_the_server_s_credentials_alone() {
    if !root_or_skip() {
        return;
    }
    with_supplementary_groups();
    let before = credentials(&std::fs::read_to_string("/proc/self/status").unwrap());
    assert!(before.iter().any(|l| l == "Uid: 0 0 0 0"), "{before:?}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let exec = Arc::new(nobody_executor());
    let mut started = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (exec, parent) = (exec.clone(), dir.path().to_owned());
        started.spawn(async move {
            for i in 0..25 {
                let run = run_dir(&parent, &format!("run-{worker}-{i}"));
                let lines = Arc::new(Lines(Mutex::default()));
                let (_stop, stop) = watch::channel(None);
                let exit = exec.run(probe_spec(&run), lines.clone(), stop).await.unwrap();
                let text: Vec<String> = lines.0.lock().unwrap().iter().map(|l| l.text.clone()).collect();
                assert!(exit.succeeded(), "{exit:?} {text:?}");
                assert!(text.iter().any(|t| t.starts_with("Uid:\t65534")), "the task ran as the user: {text:?}");
            }
        });
    }
    while let Some(done) = started.join_next().await {
        done.unwrap();
    }
    let threads = threads_credentials();
    assert!(threads.len() > 4, "the workers are threads of this process: {threads:?}");
    for (tid, creds) in threads {
        assert_eq!(creds, before, "thread {tid}");
    }
}
