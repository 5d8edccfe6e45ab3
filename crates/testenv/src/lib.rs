//! Test support for container tests: brings up the Docker Engine, an htpasswd
//! registry on 127.0.0.1 and the local busybox base image by running
//! `scripts/test-env.sh` (once per test process), and says why when it cannot.
//!
//! ```ignore
//! let Some(env) = wharf_testenv::containers() else { return }; // the skip is printed
//! ```

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

fn bring_up() -> Result<ContainerEnv, String> {
    let script = repo_root().join("scripts/test-env.sh");
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
    let get = |k: &str| vars.get(k).cloned().ok_or_else(|| format!("{} did not print {k}", script.display()));
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
}
