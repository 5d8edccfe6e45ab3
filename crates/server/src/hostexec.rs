//! Host execution on the server: who may put tasks on the host executor, as which
//! user, with which environment. A host task runs on the server's machine, so:
//!
//! - `allow_host = false` refuses it everywhere (`executor: host`, every script of a
//!   host server, image-less scripts of a docker server);
//! - on a multi-user server (any user besides the built-in `admin` exists) it runs only
//!   in projects an administrator marked `trusted`;
//! - a server running as root runs it as the unprivileged [`ServerConfig::host_user`]
//!   (default `wharf-task`), never as root; when that user does not exist, host tasks
//!   are refused with the command that creates it;
//! - its environment is an allow-list ([`TASK_ENV`]) plus the task's own env, never
//!   what the server inherited.
//!
//! The checks run when a run is accepted and again when it starts (a user added or a
//! project distrusted in between counts).

use crate::ServerConfig;
use std::path::Path;
use wharf_executor::handover::TaskUser;

/// The server's variables a host task gets (besides its own env, labels and secrets);
/// `LC_*` too. Nothing else the server inherited reaches a task.
pub const TASK_ENV: &[&str] = &["PATH", "HOME", "LANG", "LANGUAGE", "TZ"];

/// `PATH` when the server has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The built-in allow-list applied to an environment (the binary passes its own).
pub fn task_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        vars.into_iter().filter(|(k, _)| TASK_ENV.contains(&k.as_str()) || k.starts_with("LC_")).collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    env
}

/// As whom host tasks run, decided at start.
#[derive(Clone, Debug)]
pub enum RunAs {
    /// The server's own user (it is not root): a single-user install.
    Server,
    /// The unprivileged task user (the server is root).
    User(TaskUser),
    /// Host tasks cannot run: the reason, with what to do.
    Refused(String),
}

impl RunAs {
    /// Looks the task user up when this process is root.
    pub fn resolve(config: &ServerConfig) -> RunAs {
        if !nix::unistd::geteuid().is_root() {
            return RunAs::Server;
        }
        let name = config.host_user.as_str();
        let create = format!(
            "create it with `useradd --system --user-group --no-create-home --home-dir /nonexistent --shell \
             /usr/sbin/nologin {name}` and restart the server"
        );
        match nix::unistd::User::from_name(name) {
            Ok(Some(user)) if user.uid.is_root() => RunAs::Refused(format!(
                "host_user `{name}` is root; host tasks must not run as root (name an unprivileged user)"
            )),
            Ok(Some(user)) => {
                let user = TaskUser { name: name.to_owned(), uid: user.uid.as_raw(), gid: user.gid.as_raw() };
                match unreachable_ancestor(&config.data_dir) {
                    Some(dir) => RunAs::Refused(format!(
                        "the task user `{name}` cannot reach the workspaces: {} is not searchable by others \
                         (chmod o+x it, or move data_dir)",
                        dir.display()
                    )),
                    None => RunAs::User(user),
                }
            }
            Ok(None) => RunAs::Refused(format!(
                "the server runs as root and runs host tasks as the unprivileged user `{name}` (host_user), which \
                 does not exist: {create}"
            )),
            Err(e) => RunAs::Refused(format!("cannot look up the task user `{name}`: {e}")),
        }
    }

    pub fn user(&self) -> Option<&TaskUser> {
        match self {
            RunAs::User(user) => Some(user),
            _ => None,
        }
    }
}

/// The first directory above `data_dir` that other users cannot pass through.
fn unreachable_ancestor(data_dir: &Path) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::path::absolute(data_dir).ok()?;
    dir.ancestors()
        .skip(1)
        .find(|a| std::fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 == 0))
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_allow_list_reaches_tasks() {
        let env = task_env(
            [
                ("PATH", "/bin"),
                ("HOME", "/home/me"),
                ("LC_TIME", "C"),
                ("WHARF_ADMIN_TOKEN", "t"),
                ("SOME_OTHER_VAR", "x"),
                ("AWS_SECRET_ACCESS_KEY", "y"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "HOME", "LC_TIME"]);
        assert_eq!(task_env(Vec::new()), [("PATH".to_owned(), DEFAULT_PATH.to_owned())]);
    }
}
