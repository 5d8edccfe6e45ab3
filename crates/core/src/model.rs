//! The pipeline as written: what the YAML, the API and the card editor agree on
//! (DESIGN.md §8). String fields keep their `${…}` text; they are resolved per run.
//!
//! A [`Pipeline`] that exists has passed validation (`wharf-pipeline` is the only way
//! to build one from text), so the engine trusts names to be unique and references
//! to point backwards.

use crate::duration::Duration;
use crate::names::{PipelineName, StepName, VarName};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The stages a pipeline created from scratch starts with, after its Source (seed 002:
/// "Source", "Build", "Test" and "Deploy", where Source is the code source every run
/// checks out: the pipeline's `source:`, the editor's Source card, not a stage of tasks).
pub const DEFAULT_STAGES: [&str; 3] = ["Build", "Test", "Deploy"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: PipelineName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Static variables with their values, in the order written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    /// Whole-run limit of running time. `None` in the YAML (or 0) means the 14-day cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub concurrency: Concurrency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorKind>,
    /// Image for `script` tasks that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_image: Option<String>,
    /// The registered cluster whose `ecp-devops-<id>` namespace runs the tasks on the
    /// kubernetes executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// How every task's pod is scheduled on the kubernetes executor (`resources`,
    /// `node_selector`, `tolerations`, `service_account`), over the cluster's defaults.
    #[serde(flatten)]
    pub pod: crate::pod::PodSettings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notification>,
    /// The channel every task output of a succeeded run goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    pub stages: Vec<Stage>,
    /// Stages run when a stage with `on_error: rollback` fails (seed 001: "roll back to
    /// the initial node"); the run then ends `failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Stage>,
    /// Start the run again (as a new record) when the server restarts under it,
    /// instead of failing it with "interrupted by server restart".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_on_restart: bool,
    /// How many finished runs (and for how long) the server keeps; the server's global
    /// policy applies where this says nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// A retention policy: finished runs beyond `runs` (newest kept) or older than `days`
/// are deleted with their logs and workspaces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
}

impl Pipeline {
    /// The effective whole-run timeout: the 14-day cap when unset or 0.
    pub fn effective_timeout(&self) -> Duration {
        match self.timeout {
            Some(t) if !t.is_zero() => t,
            _ => crate::duration::MAX,
        }
    }

    /// Every stage, the rollback stages last.
    pub fn all_stages(&self) -> impl Iterator<Item = &Stage> {
        self.stages.iter().chain(&self.on_failure)
    }

    /// The channels this pipeline sends to (its own `send` and its stages', and the
    /// `channel` targets of its and its stages' `notify`).
    pub fn sends(&self) -> Vec<&str> {
        let notified =
            self.notify.iter().chain(self.all_stages().flat_map(|s| &s.notify)).filter_map(|n| match &n.target {
                NotifyTarget::Channel(channel) => Some(channel),
                _ => None,
            });
        let mut out: Vec<&str> = self
            .send
            .iter()
            .chain(self.all_stages().filter_map(|s| s.send.as_ref()))
            .chain(notified)
            .map(String::as_str)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The channels whose messages start this pipeline.
    pub fn channel_triggers(&self) -> Vec<&str> {
        self.triggers
            .iter()
            .filter_map(|t| match &t.kind {
                TriggerKind::Channel { channel } => Some(channel.as_str()),
                _ => None,
            })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// A git URL: `https://…`, `ssh://…`, `git@host:path`, `file:///…`.
    pub repo: String,
    /// The branch to check out; the repository's default branch when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub name: VarName,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: VarName,
    /// A parameter without a default must be given when the run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The values it may take (a choice, as Jenkins' choice parameter); empty: any.
    /// Without a `default`, the first choice is the default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<String>,
}

impl Parameter {
    /// The value a run gets when none is given: `default`, else the first choice.
    pub fn default_value(&self) -> Option<&str> {
        self.default.as_deref().or(self.choices.first().map(String::as_str))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Concurrency {
    Allow,
    #[default]
    Queue,
    CancelPrevious,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    Host,
    Docker,
    Kubernetes,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Host => "host",
            ExecutorKind::Docker => "docker",
            ExecutorKind::Kubernetes => "kubernetes",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: StepName,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub on_error: ErrorPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Signals the stage waits for before it starts (seed 001 "阶段触发").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<StageWait>,
    /// The channel this stage's task outputs go to when it succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    pub tasks: Vec<Task>,
    /// Sent when this stage ends (`success`, `failure`) or one of its approval tasks
    /// waits (`waiting`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notification>,
}

/// What a stage waits for before it starts: a call to its own URL (`hook`), messages
/// on named channels, the first of them (`any`) or every one (`all`), bounded by its
/// own `timeout` (waiting is not running time).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageWait {
    #[serde(default, rename = "for")]
    pub need: WaitFor,
    /// `POST /hooks/stages/{token}` is one of the signals.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hook: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// Names taken from the signals' values as variables (`${NAME}`) of the stage and
    /// the stages after it; a name no signal gave is empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl StageWait {
    /// The signals waited for, as stored and shown: `hook` and `channel:<name>`.
    pub fn sources(&self) -> Vec<String> {
        let hook = self.hook.then(|| "hook".to_owned());
        hook.into_iter().chain(self.channels.iter().map(|c| format!("channel:{c}"))).collect()
    }

    /// Whether signals from `came` (sources as [`sources`](Self::sources) spells them)
    /// start the stage: one of them (`any`) or each (`all`).
    pub fn satisfied_by<'a>(&self, came: impl IntoIterator<Item = &'a str>) -> bool {
        let came: Vec<&str> = came.into_iter().collect();
        let sources = self.sources();
        let mut got = sources.iter().filter(|s| came.contains(&s.as_str()));
        match self.need {
            WaitFor::Any => got.next().is_some(),
            WaitFor::All => got.count() == sources.len(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitFor {
    /// The first signal starts the stage.
    #[default]
    Any,
    /// The stage starts once every signal has come.
    All,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Sequential,
    Parallel,
}

/// What a failed stage does to the run (seed 001's error handling).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorPolicy {
    /// The run fails; later stages are skipped.
    #[default]
    Stop,
    /// The stage is marked failed and the run carries on.
    Ignore,
    /// The pipeline's `on_failure` stages run, then the run ends with the stage's status
    /// (`failed` or `timed_out`).
    Rollback,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub name: StepName,
    #[serde(flatten)]
    pub kind: TaskKind,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of stored secrets, given to the task as environment variables and masked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<VarName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Extra attempts after a failure (not after a stop or a timeout of the run).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: u32,
    /// Output keys this task promises to write to `$WHARF_OUTPUT`; later tasks may then
    /// use `${KEY}`. A task that declares none may write any keys, reachable as
    /// `${tasks.<task>.<KEY>}`; one that declares some must write those and is held to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<VarName>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The seven task types of DESIGN.md §2, each with its own fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TaskKind {
    Script(ScriptTask),
    Image(ImageTask),
    DeployYaml(DeployYamlTask),
    ChartPublish(ChartPublishTask),
    ChartDeploy(ChartDeployTask),
    Approval(ApprovalTask),
    Canary(CanaryTask),
}

impl TaskKind {
    /// The YAML `type:` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            TaskKind::Script(_) => "script",
            TaskKind::Image(_) => "image",
            TaskKind::DeployYaml(_) => "deploy-yaml",
            TaskKind::ChartPublish(_) => "chart-publish",
            TaskKind::ChartDeploy(_) => "chart-deploy",
            TaskKind::Approval(_) => "approval",
            TaskKind::Canary(_) => "canary",
        }
    }
}

pub const TASK_TYPES: [&str; 7] =
    ["script", "image", "deploy-yaml", "chart-publish", "chart-deploy", "approval", "canary"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptTask {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    pub script: String,
    /// This task's pod settings on the kubernetes executor, over the pipeline's.
    #[serde(flatten)]
    pub pod: crate::pod::PodSettings,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageTask {
    /// Path of the Dockerfile inside the checkout; case-sensitive.
    pub dockerfile: String,
    pub context: String,
    pub image: String,
    pub tag: String,
    pub workspace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub build_args: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployYamlTask {
    pub file: String,
    pub cluster: String,
    pub namespace: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartPublishTask {
    pub chart_dir: String,
    pub chart: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    pub workspace: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChartDeployTask {
    pub release: String,
    pub chart: String,
    pub version: String,
    /// A registered registry; the server's default registry when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The registry workspace the chart was published to.
    pub workspace: String,
    pub cluster: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub values: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalTask {
    /// Users or `role:<name>` entries allowed to decide.
    pub approvers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Distinct approvals needed (1 when the YAML says nothing).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub required: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryTask {
    pub deployment: String,
    pub cluster: String,
    pub namespace: String,
    pub image: String,
    /// Traffic percentages, rising, ending at 100.
    pub steps: Vec<u8>,
    /// Wait between steps; `None` with `approval: true` waits for a person instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Duration>,
    #[serde(default)]
    pub approval: bool,
}

/// What starts a pipeline by itself (DESIGN.md §4). Parsed and validated now; fired by
/// the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    #[serde(flatten)]
    pub kind: TriggerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// What to do with due times missed while the server was down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<Missed>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Events {
        events: Vec<GitEvent>,
        branches: Vec<String>,
    },
    EveryMinutes {
        every_minutes: u32,
    },
    EveryHours {
        every_hours: u32,
        at_minute: u32,
    },
    Daily {
        daily: ClockTime,
    },
    Weekly {
        weekly: Vec<Weekday>,
        at: ClockTime,
    },
    Monthly {
        monthly: u32,
        at: ClockTime,
    },
    Cron {
        cron: String,
    },
    /// A message on this channel (another pipeline's `send`) starts a run with the
    /// message's values as parameters.
    Channel {
        channel: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GitEvent {
    Push,
    Merge,
    Tag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missed {
    /// Run once for the missed times, within the grace window (the default).
    Once,
    Skip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A wall-clock time `HH:MM`, 00:00 to 23:59.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClockTime {
    pub hour: u8,
    pub minute: u8,
}

impl TryFrom<String> for ClockTime {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ClockTime::parse(&s).ok_or_else(|| format!("`{s}` is not a time of day: expected HH:MM, 00:00 to 23:59"))
    }
}

impl From<ClockTime> for String {
    fn from(t: ClockTime) -> String {
        format!("{:02}:{:02}", t.hour, t.minute)
    }
}

impl ClockTime {
    pub fn parse(s: &str) -> Option<ClockTime> {
        let (h, m) = s.split_once(':')?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return None;
        }
        let hour: u8 = h.parse().ok()?;
        let minute: u8 = m.parse().ok()?;
        (hour < 24 && minute < 60).then_some(ClockTime { hour, minute })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub on: Vec<NotifyOn>,
    #[serde(flatten)]
    pub target: NotifyTarget,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyOn {
    Success,
    Failure,
    /// An `approval` task started waiting for people.
    Waiting,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyTarget {
    Webhook(Webhook),
    Channel(String),
    Email(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub url: String,
    pub method: HttpMethod,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The name of a project secret whose value signs the requests (HMAC-SHA256);
    /// `None`: the server's `notify_secret`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_times() {
        assert_eq!(ClockTime::parse("02:30"), Some(ClockTime { hour: 2, minute: 30 }));
        assert_eq!(ClockTime::parse("9:05"), Some(ClockTime { hour: 9, minute: 5 }));
        for bad in ["24:00", "12:60", "1230", "12:5", ":30", "aa:bb", "-1:30"] {
            assert_eq!(ClockTime::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn zero_or_no_timeout_means_the_cap() {
        let mut p = Pipeline {
            name: PipelineName::new("p").unwrap(),
            description: None,
            project: None,
            source: None,
            variables: vec![],
            parameters: vec![],
            timeout: None,
            concurrency: Concurrency::Queue,
            executor: None,
            default_image: None,
            cluster: None,
            pod: Default::default(),
            triggers: vec![],
            notify: vec![],
            send: None,
            stages: vec![],
            on_failure: vec![],
            retry_on_restart: false,
            retention: None,
        };
        assert_eq!(p.effective_timeout(), crate::duration::MAX);
        p.timeout = Some(Duration::ZERO);
        assert_eq!(p.effective_timeout(), crate::duration::MAX);
        p.timeout = Some(Duration::from_secs(60));
        assert_eq!(p.effective_timeout(), Duration::from_secs(60));
    }
}
