//! E-mail against a real SMTP server (Python's aiosmtpd on 127.0.0.1, started here):
//! a login that works delivers, a wrong one is a permanent failure tried once, and
//! nothing shows the password.

use std::time::{Duration, Instant};
use wharf_notify::email::{Mailer, Security, SmtpSettings};
use wharf_notify::message::{Event, Facts};
use wharf_notify::{Attempt, Retry};

fn facts() -> Facts {
    let at = jiff::Timestamp::now();
    let mut progress = wharf_core::run::Progress::new(at);
    progress.advance(wharf_core::status::Status::Running, at).unwrap();
    progress.advance(wharf_core::status::Status::Succeeded, at).unwrap();
    let record = wharf_core::run::RunRecord {
        pipeline: "mailed".into(),
        number: 4,
        cause: wharf_core::run::Cause::Manual { user: "ann".into() },
        parameters: Default::default(),
        progress,
        reason: None,
        checkout: None,
        stages: vec![],
    };
    Facts::of(&record, 9, Event::Success, None, None)
}

fn settings(port: u16, password: &str) -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: Some("wharf".into()),
        password: Some(password.into()),
        from: "ci@example.com".into(),
    }
}

#[tokio::test]
async fn a_login_that_works_delivers_and_a_wrong_one_fails_once_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let Some(smtp) = wharf_testenv::smtp_server_or_fail_in_ci(dir.path(), Some(("wharf", "right-password"))) else {
        return;
    };
    let retry = Retry { attempts: 3, first_delay: Duration::from_millis(20), timeout: Duration::from_secs(5) };
    let mut seen: Vec<Attempt> = Vec::new();
    let good = Mailer::new(&settings(smtp.port, "right-password"), retry.timeout).unwrap();
    assert!(good.send(&["dev@example.com".into()], &facts(), retry, &mut |a| seen.push(a)).await, "{seen:?}");
    assert!(seen[0].detail.starts_with("250"), "{seen:?}");
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("Subject: [Wharf] mailed #4 succeeded"), "{}", mail[0]);

    let mut seen: Vec<Attempt> = Vec::new();
    let bad = Mailer::new(&settings(smtp.port, "wrong-password-value"), retry.timeout).unwrap();
    let started = Instant::now();
    assert!(!bad.send(&["dev@example.com".into()], &facts(), retry, &mut |a| seen.push(a)).await);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}: {seen:?}", started.elapsed());
    assert_eq!(seen.len(), 1, "a refused login is not retried: {seen:?}");
    assert!(!seen[0].detail.contains("wrong-password-value"), "{seen:?}");
    assert!(!format!("{bad:?} {:?}", settings(1, "wrong-password-value")).contains("wrong-password-value"));
}
