//! Running one git process: a fixed environment, its own process group so that a stop
//! also reaches the helpers git spawns (`git-remote-https`, `ssh`, `upload-pack`), and
//! stderr streamed line by line to the task log.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::CheckoutError;
use crate::validate::redact_url;

/// Transports git may use: blocks `ext::` and `fd::`, which run commands, even if a
/// `url.<base>.insteadOf` in the server's git config rewrites a URL into one.
const ALLOWED_PROTOCOLS: &str = "file:git:http:https:ssh";

/// The server's variables git gets; `LC_*` too. Nothing else the server inherited
/// (`WHARF_ADMIN_TOKEN`, cloud credentials, `GIT_DIR`, `GIT_CONFIG_*`…) reaches git, whose
/// environment another process of the same user could read in `/proc/<pid>/environ`.
/// Proxies are kept (clones behind a proxy must work; curl reads both cases), and so
/// are the operator's CA bundle and ssh agent, which clones of private remotes use.
const GIT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "SSH_AUTH_SOCK",
];

/// `PATH` when the server has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Git's whole environment, built from the server's (`parent`): the allow-list
/// [`GIT_ENV`] and `LC_*`, then the settings Wharf itself gives every git process.
fn git_env(parent: impl IntoIterator<Item = (OsString, OsString)>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = parent
        .into_iter()
        .filter(|(k, _)| k.to_str().is_some_and(|k| GIT_ENV.contains(&k) || k.starts_with("LC_")))
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.retain(|(k, _)| k != "LC_ALL");
    env.extend(
        [("GIT_TERMINAL_PROMPT", "0"), ("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS), ("LC_ALL", "C")]
            .map(|(k, v)| (k.into(), v.into())),
    );
    env
}

/// How long git may clean up (it removes a half-made clone on SIGTERM) before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Lines of stderr kept for error messages.
const STDERR_TAIL_LINES: usize = 12;

/// What a finished git process left behind.
pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    /// The last non-empty stderr lines, joined by newlines.
    pub stderr: String,
}

impl Output {
    /// The `Git` error for this output, for failures without a more precise variant.
    pub fn into_error(self, action: &str) -> CheckoutError {
        CheckoutError::Git { action: action.to_string(), status: self.status, stderr: self.stderr }
    }
}

/// Runs git commands for one checkout, sharing its log and stop signal.
pub(crate) struct Git<'a> {
    log: &'a (dyn Fn(String) + Send + Sync),
    stop: watch::Receiver<bool>,
}

impl<'a> Git<'a> {
    pub fn new(log: &'a (dyn Fn(String) + Send + Sync), stop: watch::Receiver<bool>) -> Self {
        Self { log, stop }
    }

    pub fn log(&self, line: String) {
        (self.log)(line);
    }

    /// Runs `git -C <repo> <args>`; see [`Git::run`].
    pub async fn run_in(&mut self, repo: &Path, args: &[&str], echo: bool) -> Result<Output, CheckoutError> {
        let mut all: Vec<OsString> = vec!["-C".into(), repo.into()];
        all.extend(args.iter().map(OsString::from));
        self.run(&all, echo).await
    }

    /// Runs git with `args` and waits for it. With `echo`, the command line and git's
    /// stderr go to the task log. A non-zero exit is not an error here: callers decide
    /// what it means. Errors are only `GitMissing`, `Io` and `Stopped`.
    pub async fn run(&mut self, args: &[OsString], echo: bool) -> Result<Output, CheckoutError> {
        if *self.stop.borrow() {
            return Err(CheckoutError::Stopped);
        }
        if echo {
            self.log(format!("$ git {}", shown(args)));
        }
        let mut command = Command::new("git");
        command
            .args(args)
            .env_clear()
            .envs(git_env(std::env::vars_os()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| match source.kind() {
            ErrorKind::NotFound => CheckoutError::GitMissing,
            _ => CheckoutError::Io { context: "cannot start git".into(), source },
        })?;
        // Declared after `child` so it is dropped first, while git is still unreaped and
        // its process group id cannot have been reused.
        let mut group = ProcessGroup::of(&child);
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = echo.then_some(self.log);

        let finished = async { tokio::join!(read_all(stdout), forward_lines(stderr, log), child.wait()) };
        let outcome = tokio::select! {
            outcome = finished => Some(outcome),
            () = stop_requested(&mut self.stop) => None,
        };
        let Some((stdout, stderr, status)) = outcome else {
            group.signal(Signal::SIGTERM);
            if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                group.signal(Signal::SIGKILL);
                let _ = child.wait().await;
            }
            group.disarm();
            if echo {
                self.log("git was stopped".into());
            }
            return Err(CheckoutError::Stopped);
        };
        group.disarm();
        let io_error = |context: &str, source| CheckoutError::Io { context: context.into(), source };
        Ok(Output {
            status: status.map_err(|e| io_error("cannot wait for git", e))?,
            stdout: stdout.map_err(|e| io_error("cannot read git's output", e))?,
            stderr: stderr.map_err(|e| io_error("cannot read git's errors", e))?,
        })
    }
}

/// Resolves once `stop` holds `true`; never, if its sender is gone.
async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|&stop| stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Git's process group, killed when dropped unless disarmed, so that dropping a
/// checkout future leaves no git helpers behind.
struct ProcessGroup(Option<Pid>);

impl ProcessGroup {
    fn of(child: &Child) -> Self {
        let pid = child.id().and_then(|pid| i32::try_from(pid).ok());
        Self(pid.map(Pid::from_raw))
    }

    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.0 {
            // ESRCH just means everyone in the group has exited already.
            let _ = killpg(pgid, signal);
        }
    }

    /// Called once git has been reaped, after which its group id may be reused.
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

async fn read_all(mut stdout: impl AsyncRead + Unpin) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    stdout.read_to_end(&mut bytes).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Splits stderr into lines and sends each non-empty one to `log` if given; returns
/// the last few lines. Git redraws progress with `\r`: only the final state of a
/// progress line (ended by `\n`, ", done.") reaches the log, not every percent.
async fn forward_lines(
    mut stderr: impl AsyncRead + Unpin,
    log: Option<&(dyn Fn(String) + Send + Sync)>,
) -> std::io::Result<String> {
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    let mut emit = |raw: &[u8]| {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim_end();
        if line.is_empty() {
            return;
        }
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
        if let Some(log) = log {
            log(line.to_string());
        }
    };
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stderr.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        pending.extend_from_slice(&chunk[..read]);
        while let Some(end) = pending.iter().position(|&b| b == b'\r' || b == b'\n') {
            if pending[end] == b'\n' {
                emit(&pending[..end]);
            }
            pending.drain(..=end);
        }
    }
    emit(&pending);
    Ok(Vec::from(tail).join("\n"))
}

/// The command line as shown in the task log: passwords redacted, odd arguments quoted.
fn shown(args: &[OsString]) -> String {
    args.iter().map(|arg| quoted(&redact_url(&arg.to_string_lossy()))).collect::<Vec<_>>().join(" ")
}

fn quoted(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@=+,%~".contains(c));
    if plain { arg.to_string() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

/// Convenience for building argument lists that mix strings and paths.
pub(crate) fn arg(value: impl AsRef<OsStr>) -> OsString {
    value.as_ref().to_os_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_gets_only_the_allow_list_and_wharf_settings() {
        let parent = [
            ("PATH", "/bin"),
            ("HOME", "/home/wharf"),
            ("LC_TIME", "C"),
            ("LC_ALL", "de_DE.UTF-8"),
            ("https_proxy", "http://proxy:3128"),
            ("NO_PROXY", "localhost"),
            ("WHARF_ADMIN_TOKEN", "secret"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("GIT_DIR", "/elsewhere/.git"),
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_ALLOW_PROTOCOL", "ext"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env = git_env(parent);
        let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_str().unwrap());
        let names: Vec<&str> = env.iter().map(|(k, _)| k.to_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "PATH",
                "HOME",
                "LC_TIME",
                "https_proxy",
                "NO_PROXY",
                "GIT_TERMINAL_PROMPT",
                "GIT_ALLOW_PROTOCOL",
                "LC_ALL"
            ]
        );
        assert_eq!(get("GIT_ALLOW_PROTOCOL"), Some(ALLOWED_PROTOCOLS));
        assert_eq!(get("LC_ALL"), Some("C"));
        assert_eq!(get("https_proxy"), Some("http://proxy:3128"));
        assert_eq!(git_env(Vec::new())[0], (OsString::from("PATH"), OsString::from(DEFAULT_PATH)));
    }
}
