//! The server's notifier: when a run ends or an approval starts waiting (told by the
//! lifecycle), each of the pipeline's `notify` entries whose `on` matches is sent, on a
//! task of its own: webhooks through the outbound policy (signed with the webhook's
//! `secret`, a project secret, or the server's `notify_secret`), e-mail through the
//! server's SMTP settings, channel messages through the lifecycle's `publish` (as a
//! `send:` would, with the run's outputs and the facts). Every attempt is stored with
//! the run (the run page shows them); nothing here can change the run.

use std::sync::Arc;
use wharf_core::model::{NotifyOn, NotifyTarget, Pipeline};
use wharf_core::run::{Cause, RunRecord};
use wharf_core::status::Status;
use wharf_core::vars::{Scope, Template};
use wharf_lifecycle::notify::{Notifier, RunEvent, RunEventKind};
use wharf_notify::message::{Event, Facts, Waiting};
use wharf_notify::{Attempt, Retry, email::Mailer, webhook};
use wharf_store::Store;
use wharf_store::gates::NotificationAttempt;

/// Sends notifications; cheap to clone.
#[derive(Clone)]
pub struct ServerNotifier(Arc<Inner>);

struct Inner {
    store: Store,
    runs: wharf_lifecycle::Lifecycle,
    /// Built at the first webhook: building one reads the platform's trust store, which
    /// a server that sends none should not pay for at start (nor fail to start without).
    client: std::sync::OnceLock<Result<reqwest::Client, String>>,
    policy: wharf_outbound::Policy,
    mailer: Option<Mailer>,
    public_url: Option<String>,
    secret: Option<String>,
    retry: Retry,
}

impl ServerNotifier {
    pub fn new(
        config: &crate::ServerConfig,
        store: Store,
        runs: wharf_lifecycle::Lifecycle,
        policy: wharf_outbound::Policy,
    ) -> Result<ServerNotifier, crate::ServerError> {
        let mailer = match &config.smtp {
            Some(settings) => Some(
                Mailer::new(settings, config.notify_retry.timeout)
                    .map_err(|e| crate::ServerError::Config(e.to_string()))?,
            ),
            None => None,
        };
        Ok(ServerNotifier(Arc::new(Inner {
            store,
            runs,
            client: std::sync::OnceLock::new(),
            policy,
            mailer,
            public_url: config.public_url.clone(),
            secret: config.notify_secret.clone(),
            retry: config.notify_retry,
        })))
    }
}

impl Inner {
    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client.get_or_init(|| webhook::client(&self.policy)).as_ref().map_err(Clone::clone)
    }
}

impl Notifier for ServerNotifier {
    fn notify(&self, event: RunEvent) {
        let this = self.clone();
        tokio::spawn(async move { this.deliver(event).await });
    }
}

impl ServerNotifier {
    async fn deliver(&self, event: RunEvent) {
        let inner = &self.0;
        let Ok(model) = inner.runs.pipeline_version(event.pipeline_id, event.version).await else { return };
        // The pipeline's own notifications, or the stage's for a stage's end; a
        // waiting approval is told to both.
        let stage_of = |name: &str| model.all_stages().find(|s| s.name.as_str() == name).map(|s| s.notify.clone());
        let (notifications, status) = match &event.kind {
            RunEventKind::Ended => (model.notify.clone(), event.record.progress.status),
            RunEventKind::StageEnded { stage } => {
                let status = event.record.stages.iter().find(|s| &s.name == stage).map(|s| s.progress.status);
                (stage_of(stage).unwrap_or_default(), status.unwrap_or(Status::Failed))
            }
            RunEventKind::Waiting { stage, .. } => {
                let mut all = model.notify.clone();
                all.extend(stage_of(stage).unwrap_or_default());
                (all, event.record.progress.status)
            }
        };
        if notifications.is_empty() {
            return;
        }
        let Ok(pipeline) = inner.store.pipeline(event.pipeline_id).await else { return };
        let (on, kind, waiting) = match &event.kind {
            RunEventKind::Ended | RunEventKind::StageEnded { .. } if status == Status::Succeeded => {
                (NotifyOn::Success, Event::Success, None)
            }
            RunEventKind::Ended | RunEventKind::StageEnded { .. } => (NotifyOn::Failure, Event::Failure, None),
            RunEventKind::Waiting { stage, task } => {
                let approval = event
                    .record
                    .stages
                    .iter()
                    .flat_map(|s| &s.tasks)
                    .find(|t| &t.name == task)
                    .and_then(|t| t.approval.clone());
                let waiting = Waiting {
                    stage: stage.clone(),
                    task: task.clone(),
                    message: approval.as_ref().and_then(|a| a.message.clone()),
                    approvers: approval.map(|a| a.approvers).unwrap_or_default(),
                };
                (NotifyOn::Waiting, Event::Waiting, Some(waiting))
            }
        };
        let mut facts = Facts::of(&event.record, event.run_id, kind, waiting, inner.public_url.as_deref());
        if let RunEventKind::StageEnded { stage } = &event.kind {
            facts.stage = Some(stage.clone());
            facts.status = status;
        }
        let secrets = if event.record.cause.gets_secrets() {
            inner.store.secret_values(&pipeline.project).await.unwrap_or_default()
        } else {
            Default::default()
        };
        let scope = scope(&model, &event.record);
        for (i, notification) in notifications.iter().enumerate() {
            if !notification.on.contains(&on) {
                continue;
            }
            let delivery =
                format!("{}-{}-{}-{i}", event.run_id, kind.as_str(), jiff::Timestamp::now().as_millisecond());
            let (channel, target) = match &notification.target {
                NotifyTarget::Webhook(w) => ("webhook", webhook::shown_target(&w.url)),
                NotifyTarget::Email(to) => ("email", to.join(", ")),
                NotifyTarget::Channel(name) => ("channel", name.clone()),
            };
            let store = inner.store.clone();
            let run_id = event.run_id;
            let (attempts_tx, mut attempts_rx) = tokio::sync::mpsc::unbounded_channel::<Attempt>();
            let target_shown = target.clone();
            let writer = tokio::spawn(async move {
                while let Some(a) = attempts_rx.recv().await {
                    let row = NotificationAttempt {
                        event: kind.as_str().to_owned(),
                        channel: channel.to_owned(),
                        target: target_shown.clone(),
                        attempt: a.number,
                        outcome: if a.delivered { "delivered" } else { "failed" }.to_owned(),
                        detail: a.detail,
                        at: wharf_store::now_ms(),
                    };
                    if let Err(e) = store.add_notification_attempt(run_id, &row).await {
                        tracing::error!(run = run_id, error = %e, "cannot store a notification attempt");
                    }
                }
            });
            let mut report = move |a: Attempt| {
                tracing::info!(run = run_id, channel, attempt = a.number, delivered = a.delivered, detail = %a.detail, "notification");
                let _ = attempts_tx.send(a);
            };
            match &notification.target {
                NotifyTarget::Webhook(w) => {
                    let rendered = render_webhook(&scope, w, &secrets, inner.secret.as_deref());
                    match rendered.and_then(|hook| Ok((hook, inner.client()?))) {
                        Ok((hook, client)) => {
                            webhook::send(client, &inner.policy, &hook, &facts, &delivery, inner.retry, &mut report)
                                .await;
                        }
                        Err(why) => report(Attempt { number: 1, delivered: false, detail: why }),
                    }
                }
                NotifyTarget::Email(to) => match &inner.mailer {
                    Some(mailer) => {
                        mailer.send(to, &facts, inner.retry, &mut report).await;
                    }
                    None => report(Attempt {
                        number: 1,
                        delivered: false,
                        detail: "this server has no SMTP settings (`[smtp]` in its config file, or --smtp-host)"
                            .to_owned(),
                    }),
                },
                NotifyTarget::Channel(name) => {
                    // A message on the project's channel: the run's outputs and the
                    // facts; waiting stages get it, triggered pipelines start.
                    let mut values = outputs(&event.record);
                    values.extend(facts.values());
                    let cause = Cause::Channel {
                        channel: name.clone(),
                        pipeline: pipeline.name.clone(),
                        number: event.record.number,
                    };
                    let attempt = match inner.runs.publish(&pipeline.project, name, &values, cause).await {
                        Ok(sent) => Attempt { number: 1, delivered: true, detail: sent.describe(name, values.len()) },
                        Err(e) => Attempt { number: 1, delivered: false, detail: format!("cannot publish: {e}") },
                    };
                    report(attempt);
                }
            }
            drop(report);
            let _ = writer.await;
        }
    }
}

/// Every task output of `record` as stored (secrets masked); a later task's value wins.
fn outputs(record: &RunRecord) -> std::collections::BTreeMap<String, String> {
    record.stages.iter().flat_map(|s| &s.tasks).flat_map(|t| t.outputs.clone()).collect()
}

/// The names a notification's templates may use: the built-ins known after the run
/// (not `WHARF_OUTPUT`, `WHARF_WORKSPACE`), the parameters, the variables and every
/// task's outputs.
fn scope(model: &Pipeline, record: &RunRecord) -> Scope {
    let mut scope = Scope::default();
    let checkout = record.checkout.as_ref();
    let names = &mut scope.names;
    names.insert("BUILD_ID".into(), record.number.to_string());
    names.insert("PIPELINE_NAME".into(), record.pipeline.clone());
    names.insert("RUN_CAUSE".into(), record.cause.describe());
    names.insert("CI".into(), "true".into());
    for (key, value) in [
        ("GIT_URL", checkout.map(|c| c.repo.clone())),
        ("GIT_BRANCH", checkout.and_then(|c| c.branch.clone())),
        ("GIT_TAG", checkout.and_then(|c| c.tag.clone())),
        ("GIT_COMMIT", checkout.and_then(|c| c.commit.clone())),
    ] {
        names.insert(key.into(), value.unwrap_or_default());
    }
    for (k, v) in &record.parameters {
        names.insert(k.clone(), v.clone());
    }
    for stage in &record.stages {
        for task in &stage.tasks {
            scope.outputs.insert(task.name.clone(), task.outputs.clone());
            for (k, v) in &task.outputs {
                scope.names.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    for v in &model.variables {
        let value = Template::parse(&v.value).ok().and_then(|t| scope.render(&t).ok()).unwrap_or_default();
        scope.names.insert(v.name.to_string(), value);
    }
    scope
}

fn render(scope: &Scope, field: &str, text: &str) -> Result<String, String> {
    let template = Template::parse(text).map_err(|e| format!("{field}: {e}"))?;
    scope.render(&template).map_err(|e| format!("{field}: {e}"))
}

fn render_webhook(
    scope: &Scope,
    w: &wharf_core::model::Webhook,
    secrets: &std::collections::BTreeMap<String, String>,
    server_secret: Option<&str>,
) -> Result<webhook::Webhook, String> {
    let pairs = |field: &str, map: &std::collections::BTreeMap<String, String>| {
        map.iter()
            .map(|(k, v)| Ok((k.clone(), render(scope, &format!("{field}.{k}"), v)?)))
            .collect::<Result<Vec<_>, String>>()
    };
    let secret = match &w.secret {
        Some(name) => Some(
            secrets
                .get(name)
                .cloned()
                .ok_or_else(|| format!("secret: the project has no secret `{name}` to sign with"))?,
        ),
        None => server_secret.map(str::to_owned),
    };
    Ok(webhook::Webhook {
        url: render(scope, "url", &w.url)?,
        method: w.method,
        headers: pairs("headers", &w.headers)?,
        params: pairs("params", &w.params)?,
        body: w.body.as_deref().map(|b| render(scope, "body", b)).transpose()?,
        secret,
    })
}
