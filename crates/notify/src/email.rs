//! E-mail notifications over SMTP (lettre): the server's [`SmtpSettings`] (plain,
//! STARTTLS or TLS from the first byte; a login when a user name is set), one message
//! per notification to all its addresses, retried with backoff on transient errors.
//! The password never shows in `Debug`, logs or attempts.

use crate::message::Facts;
use crate::{Attempt, Retry, error_chain};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Security {
    /// Plain text (a relay on this machine or a trusted network only).
    None,
    /// Plain, then `STARTTLS` (required): port 587.
    #[default]
    StartTls,
    /// TLS from the first byte: port 465.
    Tls,
}

impl Security {
    pub fn parse(text: &str) -> Option<Security> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" | "plain" => Some(Security::None),
            "starttls" => Some(Security::StartTls),
            "tls" | "ssl" => Some(Security::Tls),
            _ => None,
        }
    }
}

/// The server's SMTP settings.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The sender, `Wharf <ci@example.com>` or `ci@example.com`.
    pub from: String,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .finish()
    }
}

/// Why the settings cannot send anything (said at start, before any run).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("smtp from: `{0}` is not an e-mail address (`ci@example.com` or `Wharf <ci@example.com>`)")]
    From(String),
    #[error("smtp host `{host}`: {why}")]
    Host { host: String, why: String },
}

/// A transport and sender made from the settings, checked once.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    target: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("server", &self.target).field("from", &self.from.to_string()).finish()
    }
}

impl Mailer {
    pub fn new(settings: &SmtpSettings, timeout: Duration) -> Result<Mailer, SettingsError> {
        let from: Mailbox = settings.from.parse().map_err(|_| SettingsError::From(settings.from.clone()))?;
        let host = settings.host.trim();
        let bad = |e: lettre::transport::smtp::Error| SettingsError::Host { host: host.to_owned(), why: e.to_string() };
        let builder = match settings.security {
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            Security::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(bad)?,
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(bad)?,
        };
        let mut builder = builder.port(settings.port).timeout(Some(timeout));
        if let Some(user) = settings.username.as_ref().filter(|u| !u.is_empty()) {
            builder = builder
                .credentials(Credentials::new(user.clone(), settings.password.clone().unwrap_or_default()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(Mailer { transport: builder.build(), from, target: format!("{host}:{}", settings.port) })
    }

    /// Sends `facts` to `to`, reporting every attempt; true when the server took it.
    pub async fn send(
        &self,
        to: &[String],
        facts: &Facts,
        retry: Retry,
        report: &mut (dyn FnMut(Attempt) + Send),
    ) -> bool {
        let message = match self.message(to, facts) {
            Ok(message) => message,
            Err(why) => {
                report(Attempt { number: 1, delivered: false, detail: why });
                return false;
            }
        };
        for number in 1..=retry.attempts.max(1) {
            // lettre bounds each command by the timeout; this bounds the whole exchange.
            let sent = tokio::time::timeout(retry.timeout * 3, self.transport.send(message.clone())).await;
            let (delivered, again, detail) = match sent {
                Err(_) => (false, true, format!("SMTP {}: no answer within {:?}", self.target, retry.timeout * 3)),
                Ok(Ok(response)) => {
                    let words: Vec<&str> = response.message().collect();
                    (true, false, format!("{} {}", response.code(), words.join(" ")).trim().to_owned())
                }
                Ok(Err(e)) => (false, !e.is_permanent(), format!("SMTP {}: {}", self.target, error_chain(&e))),
            };
            report(Attempt { number, delivered, detail });
            if delivered {
                return true;
            }
            if !again || number == retry.attempts {
                return false;
            }
            tokio::time::sleep(retry.delay_after(number)).await;
        }
        false
    }

    fn message(&self, to: &[String], facts: &Facts) -> Result<Message, String> {
        let mut builder = Message::builder().from(self.from.clone()).subject(facts.subject());
        for address in to {
            let mailbox: Mailbox = address.parse().map_err(|_| format!("`{address}` is not an e-mail address"))?;
            builder = builder.to(mailbox);
        }
        builder.header(ContentType::TEXT_PLAIN).body(facts.text()).map_err(|e| format!("cannot build the e-mail: {e}"))
    }
}
