//! What a host task of the real `wharf serve` can reach (issue 11): not the server's
//! environment (neither inherited nor through /proc/$PPID/environ), and, when the
//! server runs as root and so runs tasks as the unprivileged `wharf-task`, not the
//! data directory's database, key file or logs; yet it can write its workspace, its
//! `$WHARF_OUTPUT` and its `$HOME`. Also the data directory's modes after start.
//!
//! The environment checks hold for any server. The user and data directory checks
//! need root (a server that is not root runs tasks as itself); they say why they skip
//! when not root, and CI (which runs as root) fails instead of skipping.

use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

mod served;
use served::{Server, free_port};

const TOKEN: &str = "isolation-admin-token-3f9a";
const OTHER: &str = "some-other-value-7c1e";

/// The first id on the `/proc/self/status` line starting with `field` in a task log.
fn nix_id(log: &str, field: &str) -> String {
    let line = log.lines().find_map(|l| l.split_once(&format!(" out {field} ")).map(|(_, rest)| rest));
    let id = line.and_then(|rest| rest.split(' ').next()).unwrap_or_else(|| panic!("no {field} line in {log}"));
    assert_ne!(id, "0", "the task runs as root: {log}");
    id.to_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

/// Prints `open=<path>` or `closed=<path>` for each path: whether the task can read it
/// (a file's content, a directory's listing).
fn probe(paths: &[&Path]) -> String {
    paths
        .iter()
        .map(|p| {
            let read = if p.is_dir() { "ls" } else { "cat" };
            let p = p.display();
            format!("if {read} '{p}' >/dev/null 2>&1; then echo open={p}; else echo closed={p}; fi\n")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_task_reaches_neither_the_servers_environment_nor_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let data = root.join("data");
    let server = Server::start_with_env(
        &root,
        free_port(),
        1,
        TOKEN,
        &["--executor", "host"],
        &[("SOME_OTHER_VAR", OTHER), ("LC_TIME", "C")],
        None,
        Duration::from_secs(10),
    )
    .await;
    let as_root = wharf_testenv::is_root();
    // What a container (root inside is root outside) could leave in a workspace: a
    // setuid-root program. Executed by a host task, it must not make the task root.
    let suid = root.join("suid-id");
    if as_root {
        use std::os::unix::fs::PermissionsExt;
        std::fs::copy("/usr/bin/id", &suid).unwrap();
        std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    }

    // The modes a fresh start leaves (0711 where the task user passes through).
    let pass = if as_root { 0o711 } else { 0o700 };
    assert_eq!(mode(&data), pass, "data dir");
    assert_eq!(mode(&data.join("workspaces")), pass, "workspaces");
    assert_eq!(mode(&data.join("logs")), 0o700, "logs");
    for file in ["wharf.db", "wharf.db-wal", "secret.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }

    let script = format!(
        "echo user=$(id -un)\n\
         echo ids=$(id -u):$(id -g):$(id -G)\n\
         grep -E '^(Uid|Gid|CapEff):' /proc/self/status | tr -s '\\t' ' '\n\
         env\n\
         if cat /proc/$PPID/environ >/dev/null 2>&1; then echo environ=open; else echo environ=closed; fi\n\
         grep NoNewPrivs /proc/self/status\n\
         if [ -x '{suid}' ]; then echo euid=$('{suid}' -u); fi\n\
         {}\
         echo built > artefact.txt\n\
         mkdir -p \"$HOME/.cache\" && echo cached > \"$HOME/.cache/x\"\n\
         echo RESULT=done >> \"$WHARF_OUTPUT\"\n",
        probe(&[&data.join("secret.key"), &data.join("wharf.db"), &data.join("logs"), &data]),
        suid = suid.display(),
    );
    let yaml = serde_json::to_string(&serde_json::json!({
        "name": "probe",
        "stages": [{ "name": "Build", "tasks": [{ "name": "look", "type": "script", "script": script }] }]
    }))
    .unwrap();
    let id = server.post("/pipelines?run=true", yaml, 201).await["run"]["id"].as_i64().expect("a run");
    let run = server
        .wait_run(id, Duration::from_secs(20), "the run ends", |r: &Value| {
            r["status"].as_str().is_some_and(|s| ["succeeded", "failed"].contains(&s))
        })
        .await;
    let log = server.task_log(id, "look").await;
    assert_eq!(run["status"], "succeeded", "{run:#}\n{log}");

    // Nothing of the server's environment: not inherited, not through /proc.
    assert!(log.contains("out environ=closed"), "{log}");
    for leaked in [TOKEN, OTHER, "WHARF_ADMIN_TOKEN", "SOME_OTHER_VAR", "CARGO_MANIFEST_DIR"] {
        assert!(!log.contains(leaked), "{leaked} reached the task:\n{log}");
    }
    assert!(log.contains("out PATH=") && log.contains("out LC_TIME=C"), "the allow-list does: {log}");

    if !wharf_testenv::root_or_skip("running host tasks as the unprivileged task user") {
        return;
    }
    assert!(log.contains("out user=wharf-task"), "{log}");
    // Real, effective and saved ids are the task user's, no supplementary group (root's
    // included), no capability left.
    let uid = nix_id(&log, "Uid:");
    let gid = nix_id(&log, "Gid:");
    assert!(log.contains(&format!("out ids={uid}:{gid}:{gid}\n")), "one group only: {log}");
    assert!(log.contains(&format!("out Uid: {uid} {uid} {uid} {uid}\n")), "{log}");
    assert!(log.contains(&format!("out Gid: {gid} {gid} {gid} {gid}\n")), "{log}");
    assert!(log.contains("out CapEff: 0000000000000000\n"), "{log}");
    // A setuid-root program a container left in the workspace cannot make it root again.
    assert!(log.contains("out NoNewPrivs:\t1"), "{log}");
    assert!(log.contains("out euid=") && !log.contains("out euid=0\n"), "setuid root worked: {log}");
    for closed in ["secret.key", "wharf.db", "logs"] {
        assert!(log.contains(&format!("out closed={}", data.join(closed).display())), "{closed}: {log}");
    }
    assert!(log.contains(&format!("out closed={}\n", data.display())), "the data dir is not listable: {log}");
    // Its workspace, output file and home are its own.
    let workspace = data.join("workspaces").join(id.to_string());
    let uid = std::fs::metadata(workspace.join("src/artefact.txt")).unwrap().uid();
    assert_ne!(uid, 0, "the artefact was written by the task user");
    assert_eq!(std::fs::metadata(workspace.join("home/.cache/x")).unwrap().uid(), uid);
    assert_eq!(std::fs::metadata(&workspace).unwrap().uid(), 0, "the run directory stays the server's");
    // Only the task user's group passes through it: no other local account reads checkouts.
    assert_eq!(mode(&workspace), 0o710, "the run directory");
}

/// A single-user install (the server is not root): tasks run as the server's own
/// user, and yet cannot read its environment through /proc (the server is not
/// dumpable). As root, the server is started as `nobody` to be that install; not root,
/// the test above already is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_user_task_cannot_read_the_servers_environ() {
    if !wharf_testenv::root_or_skip("starting the server as another user") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let server = Server::start_with_env(
        &root,
        free_port(),
        1,
        TOKEN,
        &["--executor", "host"],
        &[("SOME_OTHER_VAR", OTHER)],
        Some(65534),
        Duration::from_secs(10),
    )
    .await;
    let script = "echo user=$(id -u) parent=$(stat -c %u /proc/$PPID)\n\
                  if cat /proc/$PPID/environ >/dev/null 2>&1; then echo environ=open; else echo environ=closed; fi\n\
         grep NoNewPrivs /proc/self/status\n\
         if [ -x '{suid}' ]; then echo euid=$('{suid}' -u); fi\n\
                  if cat /proc/$PPID/cmdline >/dev/null 2>&1; then echo cmdline=open; else echo cmdline=closed; fi\n";
    let yaml = serde_json::to_string(&serde_json::json!({
        "name": "same-user",
        "stages": [{ "name": "Build", "tasks": [{ "name": "look", "type": "script", "script": script }] }]
    }))
    .unwrap();
    let id = server.post("/pipelines?run=true", yaml, 201).await["run"]["id"].as_i64().expect("a run");
    let run = server
        .wait_run(id, Duration::from_secs(20), "the run ends", |r: &Value| {
            r["status"].as_str().is_some_and(|s| ["succeeded", "failed"].contains(&s))
        })
        .await;
    let log = server.task_log(id, "look").await;
    assert_eq!(run["status"], "succeeded", "{run:#}\n{log}");
    assert!(log.contains("out user=65534"), "the task runs as the server's user: {log}");
    // Its cmdline stays readable (ps works); its environment does not.
    assert!(log.contains("out cmdline=open") && log.contains("out environ=closed"), "{log}");
    assert!(!log.contains(OTHER) && !log.contains(TOKEN), "{log}");
}
