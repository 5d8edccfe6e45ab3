//! The SMTP test server of the notification tests.

use crate::run_script;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// A real SMTP server (Python's aiosmtpd) on 127.0.0.1 for the notification tests:
/// every message it accepts is written to [`SmtpServer::dir`] as `NNNN.eml` (with an
/// `X-Envelope-To:` line first). With `login`, it requires `AUTH` with that user name
/// and password (over plain text: a test on loopback). Stopped when dropped.
pub struct SmtpServer {
    pub port: u16,
    pub dir: PathBuf,
    child: std::process::Child,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SMTP_SINK: &str = r#"
import itertools, os, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
out, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
class Sink:
    n = itertools.count()
    async def handle_DATA(self, server, session, envelope):
        path = os.path.join(out, "%04d.eml" % next(self.n))
        with open(path + ".tmp", "wb") as f:
            f.write(("X-Envelope-To: " + ", ".join(envelope.rcpt_tos) + "\r\n").encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        return "250 Message accepted for delivery"
def check(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login.decode() == user and auth_data.password.decode() == password
    return AuthResult(success=ok, handled=False)
kwargs = {}
if user:
    kwargs = dict(authenticator=check, auth_required=True, auth_require_tls=False)
c = Controller(Sink(), hostname="127.0.0.1", port=port, **kwargs)
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"#;

impl SmtpServer {
    /// The messages received so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect()
    }
}

/// Starts an SMTP server (see [`SmtpServer`]) writing into `dir`, or `None` after
/// printing why aiosmtpd is missing (`scripts/smtp-test-env.sh` installs it as root);
/// under `CI=true` a missing aiosmtpd fails the test.
pub fn smtp_server_or_fail_in_ci(dir: &std::path::Path, login: Option<(&str, &str)>) -> Option<SmtpServer> {
    static PYTHON: OnceLock<Result<String, String>> = OnceLock::new();
    let python =
        PYTHON.get_or_init(|| run_script("scripts/smtp-test-env.sh").and_then(|get| get("WHARF_TEST_SMTP_PYTHON")));
    let python = match python {
        Ok(python) => python,
        Err(why) => {
            if std::env::var_os("CI").is_some_and(|v| v == "true") {
                panic!("the SMTP test server (python3-aiosmtpd) is required when CI=true: {why}");
            }
            eprintln!("SKIPPED: no SMTP test server: {why}");
            return None;
        }
    };
    std::fs::create_dir_all(dir).expect("the mail directory");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (user, password) = login.unwrap_or(("", ""));
    let mut child = Command::new(python)
        .args(["-c", SMTP_SINK])
        .arg(dir)
        .arg(port.to_string())
        .args([user, password])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start python3 with aiosmtpd");
    let mut ready = String::new();
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("piped");
    std::io::BufReader::new(stdout).read_line(&mut ready).expect("the SMTP server says it is ready");
    assert_eq!(ready.trim(), "ready", "the SMTP test server did not start");
    Some(SmtpServer { port, dir: dir.to_owned(), child })
}
