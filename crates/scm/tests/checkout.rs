//! `checkout` against real git and real repositories made in temporary directories.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;
use tokio::sync::watch;
use wharf_scm::{CheckedOut, CheckoutError, CheckoutRequest, checkout};

/// Runs git synchronously for fixtures; panics with its stderr on failure.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

fn commit(dir: &Path, file: &str, message: &str) -> String {
    std::fs::write(dir.join(file), message).unwrap();
    git(dir, &["add", file]);
    git(dir, &["commit", "--quiet", "-m", message]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A repository whose default branch is `trunk` (commits c1, c2, c3) with a branch
/// `feature-x` (one more commit on top of c2).
struct Fixture {
    _tmp: TempDir,
    repo: PathBuf,
    trunk: Vec<String>,
    feature: String,
}

impl Fixture {
    fn new() -> Self {
        let tmp = TempDir::new().unwrap();
        let repo = tmp.path().join("app");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "--quiet", "--initial-branch=trunk"]);
        let c1 = commit(&repo, "f", "c1");
        let c2 = commit(&repo, "f", "c2");
        git(&repo, &["checkout", "--quiet", "-b", "feature-x"]);
        let feature = commit(&repo, "g", "feature work");
        git(&repo, &["checkout", "--quiet", "trunk"]);
        let c3 = commit(&repo, "f", "c3\n\nbody line");
        Self { _tmp: tmp, repo, trunk: vec![c1, c2, c3], feature }
    }

    fn url(&self) -> String {
        format!("file://{}", self.repo.display())
    }
}

fn request(repo: &str, branch: Option<&str>, commit: Option<&str>, dest: &Path) -> CheckoutRequest {
    CheckoutRequest {
        repo: repo.to_string(),
        branch: branch.map(str::to_string),
        commit: commit.map(str::to_string),
        dest: dest.to_path_buf(),
    }
}

/// Runs a checkout with a stop signal that never fires; returns the result and the log.
async fn run(req: &CheckoutRequest) -> (Result<CheckedOut, CheckoutError>, Vec<String>) {
    let lines = Mutex::new(Vec::new());
    let log = |line: String| lines.lock().unwrap().push(line);
    let (_stop_tx, stop) = watch::channel(false);
    let result = checkout(req, &log, stop).await;
    (result, lines.into_inner().unwrap())
}

fn unique(name: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    std::env::temp_dir().join(format!("{name}-{}-{nanos}", std::process::id()))
}

#[tokio::test]
async fn clones_the_default_branch_at_depth_one() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    let (result, log) = run(&request(&fx.url(), None, None, dest.path())).await;
    let out = result.unwrap();

    assert_eq!(out.commit, fx.trunk[2]);
    assert_eq!(out.branch.as_deref(), Some("trunk"));
    assert_eq!(out.subject, "c3");
    assert_eq!(out.author, "t <t@example.com>");
    assert_eq!(std::fs::read_to_string(dest.path().join("f")).unwrap(), "c3\n\nbody line");
    assert_eq!(git(dest.path(), &["rev-list", "--count", "HEAD"]), "1");
    let clone_line = format!(
        "$ git -c advice.detachedHead=false clone --template= --progress --depth 1 --single-branch -- {}",
        fx.url()
    );
    assert!(log.iter().any(|l| l.starts_with(&clone_line)), "{log:#?}");
    assert!(log.iter().all(|l| !l.is_empty() && !l.contains('\r')), "{log:#?}");
    // No template: nothing of the machine's git set-up lands in the workspace.
    assert!(!dest.path().join(".git/hooks").exists(), "{:?}", std::fs::read_dir(dest.path().join(".git/hooks")));
}

#[tokio::test]
async fn clones_a_named_branch() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    let (result, log) = run(&request(&fx.url(), Some("feature-x"), None, dest.path())).await;
    let out = result.unwrap();

    assert_eq!(out.commit, fx.feature);
    assert_eq!(out.branch.as_deref(), Some("feature-x"));
    assert_eq!(out.subject, "feature work");
    assert!(log.iter().any(|l| l.contains("--branch feature-x -- file://")), "{log:#?}");
}

#[tokio::test]
async fn an_absolute_path_is_cloned_shallow_through_file_url() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    let repo = fx.repo.to_str().unwrap();
    let (result, _) = run(&request(repo, Some("trunk"), None, &dest.path().join("sub"))).await;

    assert_eq!(result.unwrap().commit, fx.trunk[2]);
    assert_eq!(git(&dest.path().join("sub"), &["rev-list", "--count", "HEAD"]), "1");
}

#[tokio::test]
async fn checks_out_an_exact_commit_given_in_full() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    let (result, _) = run(&request(&fx.url(), Some("trunk"), Some(&fx.trunk[0]), dest.path())).await;
    let out = result.unwrap();

    assert_eq!(out.commit, fx.trunk[0]);
    assert_eq!(out.branch.as_deref(), Some("trunk"));
    assert_eq!(out.subject, "c1");
    assert_eq!(std::fs::read_to_string(dest.path().join("f")).unwrap(), "c1");
    assert_eq!(git(dest.path(), &["symbolic-ref", "--short", "HEAD"]), "trunk");
}

#[tokio::test]
async fn checks_out_an_abbreviated_commit() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    let short = fx.trunk[1][..7].to_uppercase();
    let (result, _) = run(&request(&fx.url(), Some("trunk"), Some(&short), dest.path())).await;
    let out = result.unwrap();

    assert_eq!(out.commit, fx.trunk[1]);
    assert_eq!(out.subject, "c2");
}

#[tokio::test]
async fn the_tip_commit_needs_no_second_fetch() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    let (result, log) = run(&request(&fx.url(), None, Some(&fx.trunk[2]), dest.path())).await;

    assert_eq!(result.unwrap().commit, fx.trunk[2]);
    assert!(!log.iter().any(|l| l.starts_with("$ git -C")), "{log:#?}");
}

#[tokio::test]
async fn an_unknown_commit_is_commit_not_found() {
    let fx = Fixture::new();
    for unknown in ["0123456789abcdef0123456789abcdef01234567", "0123456"] {
        let dest = TempDir::new().unwrap();
        let (result, _) = run(&request(&fx.url(), Some("trunk"), Some(unknown), dest.path())).await;
        match result {
            Err(CheckoutError::CommitNotFound { repo, commit }) => {
                assert_eq!(repo, fx.url());
                assert_eq!(commit, unknown);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_commit_that_is_not_hex_is_refused() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    let (result, log) = run(&request(&fx.url(), None, Some("--upload-pack=x"), dest.path())).await;
    assert!(matches!(result, Err(CheckoutError::InvalidCommit { .. })), "{result:?}");
    assert!(log.is_empty());
}

#[tokio::test]
async fn a_missing_branch_names_branch_and_repository() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    let (result, _) = run(&request(&fx.url(), Some("feature-gone"), None, dest.path())).await;
    let error = result.unwrap_err();

    assert!(matches!(error, CheckoutError::BranchNotFound { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "branch `feature-gone` does not exist in repository `{}` (it may have been deleted \
             or renamed; edit the pipeline's source branch)",
            fx.url()
        )
    );
}

#[tokio::test]
async fn a_missing_repository_is_repo_not_found() {
    let tmp = TempDir::new().unwrap();
    let not_a_repo = tmp.path().join("plain");
    std::fs::create_dir(&not_a_repo).unwrap();
    for repo in [format!("file://{}/nowhere.git", tmp.path().display()), not_a_repo.display().to_string()] {
        let dest = TempDir::new().unwrap();
        let (result, _) = run(&request(&repo, Some("main"), None, dest.path())).await;
        let error = result.unwrap_err();
        assert!(matches!(error, CheckoutError::RepoNotFound { .. }), "{error:?}");
        assert!(error.to_string().contains(&format!("`{repo}`")), "{error}");
    }
}

#[tokio::test]
async fn an_empty_repository_is_a_clear_error() {
    let tmp = TempDir::new().unwrap();
    git(tmp.path(), &["init", "--quiet", "--bare", "empty.git"]);
    let repo = format!("file://{}/empty.git", tmp.path().display());
    let dest = TempDir::new().unwrap();
    let (result, _) = run(&request(&repo, None, None, dest.path())).await;
    assert!(matches!(result, Err(CheckoutError::EmptyRepo { .. })), "{result:?}");
}

#[tokio::test]
async fn a_non_empty_destination_is_refused() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    std::fs::write(dest.path().join("left-over"), "x").unwrap();
    let (result, log) = run(&request(&fx.url(), None, None, dest.path())).await;
    assert!(matches!(result, Err(CheckoutError::DestNotEmpty { .. })), "{result:?}");
    assert!(log.is_empty());
}

#[tokio::test]
async fn a_branch_name_with_a_command_substitution_is_refused() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    let marker = unique("pwned");
    let branch = format!("$(touch {})", marker.display());
    let (result, log) = run(&request(&fx.url(), Some(&branch), None, dest.path())).await;

    match result {
        Err(CheckoutError::InvalidBranch { branch: refused, .. }) => assert_eq!(refused, branch),
        other => panic!("{other:?}"),
    }
    assert!(log.is_empty(), "git must not run: {log:#?}");
    assert!(!marker.exists());
}

#[tokio::test]
async fn command_running_and_option_like_urls_are_refused() {
    let marker = unique("pwned-url");
    let dest = TempDir::new().unwrap();
    for repo in [
        format!("ext::sh -c touch% {}", marker.display()),
        "ext::sh".to_string(),
        format!("--upload-pack=touch {}", marker.display()),
        "-oProxyCommand=x:app".to_string(),
        "ssh://-oProxyCommand=x/app".to_string(),
        "app.git".to_string(),
    ] {
        let (result, log) = run(&request(&repo, None, None, dest.path())).await;
        match result {
            Err(CheckoutError::InvalidRepo { repo: refused, .. }) => assert_eq!(refused, repo),
            other => panic!("{repo}: {other:?}"),
        }
        assert!(log.is_empty(), "git must not run: {log:#?}");
    }
    assert!(!marker.exists());
}

#[tokio::test]
async fn stop_kills_a_hanging_clone() {
    // A server that accepts connections and never answers: git waits forever.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (conn_tx, conn_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((socket, _)) = listener.accept() {
            let _ = conn_tx.send(socket);
        }
    });

    let dest = TempDir::new().unwrap();
    let repo = format!("http://bob:s3cret@127.0.0.1:{port}/app.git");
    let req = request(&repo, Some("main"), None, &dest.path().join("app"));
    let lines = Mutex::new(Vec::new());
    let log = |line: String| lines.lock().unwrap().push(line);
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_tx.send(true).unwrap();
        // Keep the sender so `stop` is not mistaken for "can never fire".
        std::future::pending::<()>().await;
    });

    let result = tokio::time::timeout(Duration::from_secs(5), checkout(&req, &log, stop))
        .await
        .expect("checkout returns within 5 s of the stop");
    assert!(matches!(result, Err(CheckoutError::Stopped)), "{result:?}");

    // The connection was held by `git-remote-http`, a child of git: it must be gone too.
    let mut socket = conn_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let closed = socket.read_to_end(&mut buf);
    assert!(closed.is_ok(), "git's helper still holds the connection: {closed:?}");

    let lines = lines.into_inner().unwrap();
    assert!(lines.iter().any(|l| l.contains("http://bob:***@127.0.0.1")), "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains("s3cret")), "{lines:#?}");
}

#[tokio::test]
async fn a_stop_before_the_start_runs_nothing() {
    let fx = Fixture::new();
    let dest = TempDir::new().unwrap();
    let lines = Mutex::new(Vec::new());
    let log = |line: String| lines.lock().unwrap().push(line);
    let (_stop_tx, stop) = watch::channel(true);
    let result = checkout(&request(&fx.url(), None, None, dest.path()), &log, stop).await;
    assert!(matches!(result, Err(CheckoutError::Stopped)), "{result:?}");
    assert!(lines.into_inner().unwrap().is_empty());
}

/// Git gets the allow-listed part of the server's environment only (issue 11 review):
/// `WHARF_ADMIN_TOKEN` and the like would be readable in `/proc/<git>/environ`. The
/// test runs itself again as a child process (the "server") whose environment holds a
/// secret and whose `HOME` has a git config installing a `post-checkout` hook that
/// writes git's environment to a file.
#[test]
fn git_does_not_inherit_the_servers_environment() {
    const OUT: &str = "WHARF_TEST_GIT_ENV_OUT";
    const REPO: &str = "WHARF_TEST_GIT_ENV_REPO";
    if let (Some(_), Some(repo)) = (std::env::var_os(OUT), std::env::var(REPO).ok()) {
        let dest = TempDir::new().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (result, log) = runtime.block_on(run(&request(&repo, None, None, &dest.path().join("src"))));
        assert!(result.is_ok(), "{result:?} {log:?}");
        return;
    }
    let fixture = Fixture::new();
    let tmp = TempDir::new().unwrap();
    let (home, hooks, out) = (tmp.path().join("home"), tmp.path().join("hooks"), tmp.path().join("git-env"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(home.join(".gitconfig"), format!("[core]\n\thooksPath = {}\n", hooks.display())).unwrap();
    let hook = hooks.join("post-checkout");
    std::fs::write(&hook, format!("#!/bin/sh\nenv > '{}'\n", out.display())).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "git_does_not_inherit_the_servers_environment", "--nocapture"])
        .env("HOME", &home)
        .env("WHARF_ADMIN_TOKEN", "admin-secret-token")
        .env("AWS_SECRET_ACCESS_KEY", "cloud-secret")
        .env("https_proxy", "http://proxy.invalid:3128")
        .env(OUT, &out)
        .env(REPO, fixture.url())
        .status()
        .unwrap();
    assert!(status.success(), "the child checkout failed");
    let env = std::fs::read_to_string(&out).expect("the hook ran and wrote git's environment");
    assert!(env.lines().any(|l| l == format!("HOME={}", home.display())), "{env}");
    assert!(env.lines().any(|l| l == "https_proxy=http://proxy.invalid:3128"), "proxies are kept: {env}");
    for leaked in ["admin-secret-token", "cloud-secret", OUT, REPO, "CARGO_"] {
        assert!(!env.contains(leaked), "`{leaked}` reached git: {env}");
    }
}
