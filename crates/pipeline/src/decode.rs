//! The YAML tree → the pipeline model, one field at a time, collecting every problem
//! with its position instead of stopping at the first.
//!
//! Besides the model, decoding records an [`Index`]: where each stage, task and
//! `${…}` reference was written, so that [`crate::check`] can report cross-references
//! (unknown variables, duplicate names) at the right line and column.

use crate::diag::{Diagnostic, Pos, did_you_mean};
use crate::limits::*;
use crate::yaml::{Kind, Node, Style};
use std::collections::BTreeMap;
use wharf_core::Duration;
use wharf_core::model::*;
use wharf_core::names::{PipelineName, StepName, VarName};
use wharf_core::pod::PodSettings;
use wharf_core::vars::{Template, VarRef};

/// Where a template is used, which decides the names it may refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// `variables.X`: built-ins known at start, parameters, earlier variables.
    Variable(usize),
    /// `parameters[i].default`: built-ins known at start only.
    ParameterDefault,
    /// `source.*`: built-ins known at start and parameters (variables are resolved after
    /// the checkout, so they cannot name what to check out).
    Source,
    /// A task field; `script` is true for the shell code.
    Task { stage: usize, task: usize, rollback: bool, script: bool },
    /// Notifications: everything, resolved when the run ends.
    Notify,
}

#[derive(Clone, Debug)]
pub struct RefUse {
    pub reference: VarRef,
    pub pos: Pos,
    pub path: String,
    pub place: Place,
}

#[derive(Clone, Debug)]
pub struct Declared {
    pub name: String,
    pub pos: Pos,
    pub path: String,
}

/// Positions recorded while decoding, for the cross-reference checks.
#[derive(Default, Debug)]
pub struct Index {
    pub refs: Vec<RefUse>,
    pub stages: Vec<Declared>,
    /// (stage index, rollback, task)
    pub tasks: Vec<(usize, bool, usize, Declared)>,
    pub variables: Vec<Declared>,
    pub parameters: Vec<Declared>,
    /// (task name, output)
    pub outputs: Vec<(String, Declared)>,
    pub secrets: Vec<Declared>,
    pub stages_pos: Pos,
    pub script_without_image: Vec<Declared>,
    /// Where `on_error: rollback` was written.
    pub rollback_policies: Vec<(Pos, String)>,
}

pub struct Decoder<'s> {
    source_lines: Vec<&'s str>,
    pub diags: Vec<Diagnostic>,
    pub index: Index,
    /// Tasks decoded so far, `on_failure` included (for [`MAX_TASKS`]).
    tasks_seen: usize,
}

/// A mapping whose keys were checked against the allowed fields.
struct Fields<'n> {
    pos: Pos,
    path: String,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    /// The value of `key`, treating an explicit null as absent.
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(k, v)| *k == key && !v.is_null()).map(|(_, v)| *v)
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

const PIPELINE_FIELDS: &[&str] = &[
    "name",
    "description",
    "project",
    "source",
    "variables",
    "parameters",
    "timeout",
    "concurrency",
    "executor",
    "default_image",
    "cluster",
    "resources",
    "node_selector",
    "tolerations",
    "service_account",
    "triggers",
    "notify",
    "send",
    "stages",
    "on_failure",
    "retry_on_restart",
    "retention",
];
const SOURCE_FIELDS: &[&str] = &["repo", "branch", "binding"];
const PARAMETER_FIELDS: &[&str] = &["name", "default", "description", "choices"];
const STAGE_FIELDS: &[&str] = &["name", "mode", "on_error", "timeout", "wait", "send", "tasks", "notify"];
const WAIT_FIELDS: &[&str] = &["for", "hook", "channels", "params", "timeout"];
const TASK_COMMON: &[&str] = &["name", "type", "env", "secrets", "timeout", "retries", "outputs"];
const WEBHOOK_FIELDS: &[&str] = &["url", "method", "headers", "params", "body", "secret"];
const TRIGGER_KINDS: &[&str] =
    &["events", "every_minutes", "every_hours", "daily", "weekly", "monthly", "cron", "channel"];

fn task_fields(task_type: &str) -> &'static [&'static str] {
    match task_type {
        "script" => &["image", "tag", "script", "resources", "node_selector", "tolerations", "service_account"],
        "image" => &["dockerfile", "context", "image", "tag", "workspace", "registry", "build_args"],
        "deploy-yaml" => &["file", "cluster", "namespace"],
        "chart-publish" => &["chart_dir", "chart", "version", "registry", "workspace"],
        "chart-deploy" => &["release", "chart", "version", "registry", "workspace", "cluster", "namespace", "values"],
        "approval" => &["approvers", "message", "required"],
        "canary" => &["deployment", "cluster", "namespace", "image", "steps", "pause", "approval"],
        _ => &[],
    }
}

/// Upper bound on an approval's `required`: distinct people, not a counter.
const MAX_APPROVALS: u32 = 20;

/// Upper bound on `retries`: more is almost always a mistake that hides a flaky task.
pub const MAX_RETRIES: u32 = 10;

impl<'s> Decoder<'s> {
    pub fn new(source: &'s str) -> Self {
        Decoder { source_lines: source.lines().collect(), diags: Vec::new(), index: Index::default(), tasks_seen: 0 }
    }

    fn error(&mut self, pos: Pos, path: &str, message: impl Into<String>) {
        self.diags.push(Diagnostic::new(pos, path, message));
    }

    fn expected(&mut self, node: &Node, path: &str, what: &str) {
        let found = node.describe();
        self.error(node.pos, path, format!("expected {what}, found {found}"));
    }

    /// Checks `node` is a mapping and that every key is one of `allowed`.
    fn fields<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str], what: &str) -> Option<Fields<'n>> {
        let Kind::Map(entries) = &node.kind else {
            self.expected(node, path, what);
            return None;
        };
        let mut fields = Fields { pos: node.pos, path: path.to_owned(), entries: Vec::new() };
        for (key, value) in entries {
            let Kind::Scalar(k) = &key.kind else { continue };
            if k.text.starts_with("x-") {
                // Extension fields (as in Compose files): a home for anchors, ignored.
                continue;
            }
            if !allowed.contains(&k.text.as_str()) {
                let hint = match did_you_mean(&k.text, allowed.iter().copied()) {
                    Some(near) => format!("; did you mean `{near}`?"),
                    None => format!("; expected one of: {}", allowed.join(", ")),
                };
                self.error(key.pos, &join(path, &k.text), format!("unknown field `{}`{hint}", k.text));
                continue;
            }
            fields.entries.push((k.text.as_str(), value));
        }
        Some(fields)
    }

    fn required<'n>(&mut self, fields: &Fields<'n>, key: &str) -> Option<&'n Node> {
        let node = fields.get(key);
        if node.is_none() {
            self.error(fields.pos, &fields.path, format!("missing required field `{key}`"));
        }
        node
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.kind {
            Kind::Scalar(s) if s.text.contains('\0') => {
                let pos = self.offset_pos(node, s.text.find('\0').unwrap_or(0));
                self.error(
                    pos,
                    path,
                    "contains a NUL byte (`\\0`), which no process argument or environment can carry",
                );
                None
            }
            Kind::Scalar(s) => Some(s.text.clone()),
            _ => {
                self.expected(node, path, "a string");
                None
            }
        }
    }

    /// Reports `text` (written at `node`) when it is longer than `max` bytes.
    fn at_most(&mut self, node: &Node, path: &str, text: &str, max: usize) {
        if text.len() > max {
            self.error(node.pos, path, format!("is {} bytes long; at most {max} bytes", text.len()));
        }
    }

    /// Reports the first item past `max` in a list of `what`.
    fn at_most_items(&mut self, items: &[Node], path: &str, max: usize, what: &str) {
        if let Some(first_over) = items.get(max) {
            self.error(
                first_over.pos,
                &format!("{path}[{max}]"),
                format!("{} {what}; at most {max} (see Limits in docs/pipeline-yaml.md)", items.len()),
            );
        }
    }

    /// Reports a map of more than `max` entries at its first entry past the limit.
    fn at_most_entries(&mut self, entries: &[(Node, Node)], path: &str, max: usize, what: &str) {
        if let Some((first_over, _)) = entries.get(max) {
            self.error(
                first_over.pos,
                path,
                format!("{} {what}; at most {max} (see Limits in docs/pipeline-yaml.md)", entries.len()),
            );
        }
    }

    /// A literal image reference (`image`, `image:tag`, `default_image`): it must be
    /// one by the OCI grammar, which also keeps out shell syntax and `-` options.
    /// Templated ones are checked once rendered, before the task starts.
    fn image_reference(&mut self, node: &Node, path: &str, reference: &str) {
        if reference.contains("${") {
            return;
        }
        if let Err(e) = wharf_core::reference::Reference::parse(reference) {
            self.error(node.pos, path, e.to_string());
        }
    }

    /// A string field that may hold `${…}`; its references are recorded for checking.
    fn template(&mut self, node: &Node, path: &str, place: Place) -> Option<String> {
        let text = self.string(node, path)?;
        match Template::parse(&text) {
            Ok(t) => {
                for (reference, offset) in refs_with_offsets(&text, &t) {
                    let pos = self.offset_pos(node, offset);
                    self.index.refs.push(RefUse { reference, pos, path: path.to_owned(), place });
                }
                Some(text)
            }
            Err(err) => {
                let pos = self.offset_pos(node, err.offset);
                self.error(pos, path, err.message);
                None
            }
        }
    }

    fn opt_template(&mut self, fields: &Fields<'_>, key: &str, place: Place) -> Option<String> {
        let node = fields.get(key)?;
        self.template(node, &fields.path(key), place)
    }

    fn req_template(&mut self, fields: &Fields<'_>, key: &str, place: Place) -> Option<String> {
        let node = self.required(fields, key)?;
        self.template(node, &fields.path(key), place)
    }

    /// Where byte `offset` of a scalar's value was written.
    fn offset_pos(&self, node: &Node, offset: usize) -> Pos {
        let Kind::Scalar(s) = &node.kind else { return node.pos };
        let before = &s.text[..offset.min(s.text.len())];
        match s.style {
            Style::Plain | Style::Quoted if !s.text.contains('\n') => {
                let quote = usize::from(s.style == Style::Quoted);
                Pos { line: node.pos.line, col: node.pos.col + quote + before.chars().count() }
            }
            Style::Literal => {
                // The span starts at the `|` indicator or at the content, by parser version.
                let at_indicator =
                    self.source_lines.get(node.pos.line - 1).and_then(|l| l.chars().nth(node.pos.col - 1)) == Some('|');
                let line = node.pos.line + usize::from(at_indicator) + before.matches('\n').count();
                let in_line = before.rsplit('\n').next().unwrap_or("");
                let indent = self.source_lines.get(line - 1).map_or(0, |l| l.chars().take_while(|c| *c == ' ').count());
                Pos { line, col: indent + 1 + in_line.chars().count() }
            }
            _ => node.pos,
        }
    }

    fn one_of(&mut self, node: &Node, path: &str, allowed: &[&str]) -> Option<String> {
        let text = self.string(node, path)?;
        if allowed.contains(&text.as_str()) {
            return Some(text);
        }
        let hint = match did_you_mean(&text, allowed.iter().copied()) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("expected one of: {}", allowed.join(", ")),
        };
        self.error(node.pos, path, format!("`{text}` is not allowed here; {hint}"));
        None
    }

    fn bool(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar(s) if s.style == Style::Plain && s.text == "true" => Some(true),
            Kind::Scalar(s) if s.style == Style::Plain && s.text == "false" => Some(false),
            _ => {
                self.expected(node, path, "true or false");
                None
            }
        }
    }

    fn uint(&mut self, node: &Node, path: &str, range: std::ops::RangeInclusive<u32>) -> Option<u32> {
        let parsed = match &node.kind {
            Kind::Scalar(s) if s.style == Style::Plain => s.text.parse::<u32>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                let (lo, hi) = (range.start(), range.end());
                match &node.kind {
                    Kind::Scalar(s) if s.style == Style::Plain && s.text.parse::<i64>().is_ok() => {
                        self.error(node.pos, path, format!("{} is out of range: expected {lo} to {hi}", s.text));
                    }
                    _ => self.expected(node, path, &format!("a whole number from {lo} to {hi}")),
                }
                None
            }
        }
    }

    /// A bare number is minutes; text is `90s`, `2m`, `1h`…
    fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let Kind::Scalar(s) = &node.kind else {
            self.expected(node, path, "a duration (minutes as a number, or text like `90s`, `2m`, `1h`)");
            return None;
        };
        let parsed = if s.style == Style::Plain
            && let Ok(minutes) = s.text.parse::<f64>()
        {
            Duration::from_minutes(minutes)
        } else {
            Duration::parse(&s.text)
        };
        parsed.map_err(|err| self.error(node.pos, path, err.to_string())).ok()
    }

    /// A positive duration for a stage or task; a pipeline's may be 0 (= the cap).
    fn limit(&mut self, fields: &Fields<'_>, key: &str) -> Option<Duration> {
        let node = fields.get(key)?;
        let path = fields.path(key);
        let d = self.duration(node, &path)?;
        if d.is_zero() {
            self.error(node.pos, &path, "a timeout must be more than 0 (leave it out to have no limit of its own)");
            return None;
        }
        Some(d)
    }

    /// A list of strings; a single string is taken as a list of one.
    fn strings(&mut self, node: &Node, path: &str) -> Vec<(String, Pos)> {
        match &node.kind {
            Kind::Scalar(s) => vec![(s.text.clone(), node.pos)],
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let text = self.string(item, &format!("{path}[{i}]"))?;
                    Some((text, item.pos))
                })
                .collect(),
            Kind::Map(_) => {
                self.expected(node, path, "a list of strings");
                Vec::new()
            }
        }
    }

    fn var_names(&mut self, node: &Node, path: &str) -> Vec<(VarName, Pos)> {
        let items = self.strings(node, path);
        items
            .into_iter()
            .filter_map(|(text, pos)| match VarName::new(text) {
                Ok(name) => Some((name, pos)),
                Err(err) => {
                    self.error(pos, path, err.to_string());
                    None
                }
            })
            .collect()
    }

    /// A mapping of names to scalar values (env, build args, headers).
    fn string_map(&mut self, node: &Node, path: &str, place: Option<Place>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Kind::Map(entries) = &node.kind else {
            self.expected(node, path, "a mapping of names to values");
            return out;
        };
        for (key, value_node) in entries {
            let Kind::Scalar(k) = &key.kind else { continue };
            let field = join(path, &k.text);
            let value = match place {
                Some(place) => self.template(value_node, &field, place),
                None => self.string(value_node, &field),
            };
            if let Some(value) = value {
                self.at_most(value_node, &field, &value, MAX_VALUE_BYTES);
                out.insert(k.text.clone(), value);
            }
        }
        out
    }

    /// `resources`, `node_selector`, `tolerations` and `service_account` of a pipeline or
    /// a `script` task (see [`PodSettings`]).
    fn pod_settings(&mut self, f: &Fields<'_>) -> PodSettings {
        use wharf_core::pod::{self, Quantities, Resources, TAINT_EFFECTS, TOLERATION_OPERATORS, Toleration};
        let mut out = PodSettings::default();
        if let Some(node) = f.get("resources") {
            let path = f.path("resources");
            if let Some(r) = self.fields(node, &path, &["requests", "limits"], "a mapping with `requests` and `limits`")
            {
                let quantities = |d: &mut Self, key: &str| -> Quantities {
                    let Some(node) = r.get(key) else { return Quantities::default() };
                    let path = r.path(key);
                    let Some(q) = d.fields(node, &path, &["cpu", "memory"], "a mapping with `cpu` and `memory`") else {
                        return Quantities::default();
                    };
                    let one = |d: &mut Self, name: &str| {
                        let node = q.get(name)?;
                        let text = d.string(node, &q.path(name))?;
                        match pod::quantity(&text) {
                            Ok(_) => Some(text),
                            Err(why) => {
                                d.error(node.pos, &q.path(name), why);
                                None
                            }
                        }
                    };
                    Quantities { cpu: one(d, "cpu"), memory: one(d, "memory") }
                };
                let requests = quantities(self, "requests");
                let limits = quantities(self, "limits");
                for (name, req, lim) in
                    [("cpu", &requests.cpu, &limits.cpu), ("memory", &requests.memory, &limits.memory)]
                {
                    if let (Some(req), Some(lim)) = (req, lim)
                        && let (Ok(a), Ok(b)) = (pod::quantity(req), pod::quantity(lim))
                        && a > b
                    {
                        self.error(
                            node.pos,
                            &format!("{path}.requests.{name}"),
                            format!("the {name} request `{req}` is more than its limit `{lim}`"),
                        );
                    }
                }
                out.resources = Resources { requests, limits };
            }
        }
        if let Some(node) = f.get("node_selector") {
            let path = f.path("node_selector");
            out.node_selector = self.string_map(node, &path, None);
            for (key, value) in &out.node_selector {
                if let Err(why) = pod::check_label_key(key).and_then(|()| pod::check_label_value(value)) {
                    self.error(node.pos, &join(&path, key), why);
                }
            }
        }
        if let Some(node) = f.get("tolerations") {
            let path = f.path("tolerations");
            match &node.kind {
                Kind::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let ipath = format!("{path}[{i}]");
                        let Some(t) = self.fields(
                            item,
                            &ipath,
                            &["key", "operator", "value", "effect"],
                            "a toleration (`key`, `operator`, `value`, `effect`)",
                        ) else {
                            continue;
                        };
                        let key = t.get("key").and_then(|n| self.string(n, &t.path("key")));
                        let operator =
                            t.get("operator").and_then(|n| self.one_of(n, &t.path("operator"), &TOLERATION_OPERATORS));
                        let value = t.get("value").and_then(|n| self.string(n, &t.path("value")));
                        let effect = t.get("effect").and_then(|n| self.one_of(n, &t.path("effect"), &TAINT_EFFECTS));
                        if let (Some(k), Some(n)) = (&key, t.get("key"))
                            && let Err(why) = pod::check_label_key(k)
                        {
                            self.error(n.pos, &t.path("key"), why);
                        }
                        let exists = operator.as_deref() == Some("Exists");
                        if exists && value.is_some() {
                            self.error(item.pos, &ipath, "a toleration with `operator: Exists` takes no `value`");
                        }
                        if key.is_none() && !exists {
                            self.error(item.pos, &ipath, "a toleration without `key` needs `operator: Exists`");
                        }
                        out.tolerations.push(Toleration { key, operator, value, effect });
                    }
                }
                _ => self.expected(node, &path, "a list of tolerations"),
            }
        }
        if let Some(node) = f.get("service_account") {
            let path = f.path("service_account");
            if let Some(name) = self.string(node, &path) {
                if pod::is_dns_subdomain(&name) {
                    out.service_account = Some(name);
                } else {
                    self.error(
                        node.pos,
                        &path,
                        format!(
                            "`{name}` is not a service account name: lowercase letters, digits, `-` and `.`, starting and \
                             ending with a letter or digit"
                        ),
                    );
                }
            }
        }
        out
    }

    pub fn pipeline(&mut self, root: &Node) -> Option<Pipeline> {
        let f = self.fields(root, "", PIPELINE_FIELDS, "a mapping with the pipeline's fields (`name`, `stages`, …)")?;
        let name = self.required(&f, "name").and_then(|node| {
            let text = self.string(node, "name")?;
            PipelineName::new(text).map_err(|err| self.error(node.pos, "name", err.to_string())).ok()
        });
        let description = f.get("description").and_then(|n| self.string(n, "description"));
        let project = f.get("project").and_then(|n| self.string(n, "project"));
        let source = f.get("source").and_then(|n| self.source(n));
        let variables = f.get("variables").map(|n| self.variables(n)).unwrap_or_default();
        let parameters = f.get("parameters").map(|n| self.parameters(n)).unwrap_or_default();
        let timeout = f.get("timeout").and_then(|n| self.duration(n, "timeout"));
        let concurrency = f.get("concurrency").and_then(|n| {
            Some(match self.one_of(n, "concurrency", &["allow", "queue", "cancel-previous"])?.as_str() {
                "allow" => Concurrency::Allow,
                "queue" => Concurrency::Queue,
                _ => Concurrency::CancelPrevious,
            })
        });
        let executor = f.get("executor").and_then(|n| {
            Some(match self.one_of(n, "executor", &["host", "docker", "kubernetes"])?.as_str() {
                "host" => ExecutorKind::Host,
                "docker" => ExecutorKind::Docker,
                _ => ExecutorKind::Kubernetes,
            })
        });
        let default_image = f.get("default_image").and_then(|n| {
            let image = self.string(n, "default_image")?;
            self.image_reference(n, "default_image", &image);
            Some(image)
        });
        let cluster = f.get("cluster").and_then(|n| self.string(n, "cluster"));
        let pod = self.pod_settings(&f);
        let triggers = f.get("triggers").map(|n| self.triggers(n)).unwrap_or_default();
        let notify = f.get("notify").map(|n| self.notifications(n, "notify")).unwrap_or_default();
        let send = f.get("send").and_then(|n| self.channel(n, "send"));
        self.index.stages_pos = f.pos;
        let stages = match self.required(&f, "stages") {
            Some(node) => {
                self.index.stages_pos = node.pos;
                self.stages(node, "stages", false)
            }
            None => Vec::new(),
        };
        let on_failure = f.get("on_failure").map(|n| self.stages(n, "on_failure", true)).unwrap_or_default();
        let retry_on_restart =
            f.get("retry_on_restart").and_then(|n| self.bool(n, "retry_on_restart")).unwrap_or(false);
        let retention = f.get("retention").and_then(|n| {
            let r = self.fields(n, "retention", &["runs", "days"], "a retention policy (`runs`, `days`)")?;
            let runs = r.get("runs").and_then(|v| self.uint(v, "retention.runs", 1..=1_000_000));
            let days = r.get("days").and_then(|v| self.uint(v, "retention.days", 1..=36_500));
            Some(Retention { runs, days })
        });
        if on_failure.is_empty() {
            for (pos, path) in std::mem::take(&mut self.index.rollback_policies) {
                self.error(
                    pos,
                    &path,
                    "`on_error: rollback` runs the pipeline's `on_failure` stages, and there are none",
                );
            }
        }

        if let (Some(executor), None) = (executor, &default_image)
            && executor != ExecutorKind::Host
        {
            for d in std::mem::take(&mut self.index.script_without_image) {
                self.error(
                    d.pos,
                    &d.path,
                    format!(
                        "a `script` task on the {} executor needs `image` (or set the pipeline's `default_image`)",
                        executor.as_str()
                    ),
                );
            }
        }
        Some(Pipeline {
            name: name?,
            description,
            project,
            source,
            variables,
            parameters,
            timeout,
            concurrency: concurrency.unwrap_or_default(),
            executor,
            default_image,
            cluster,
            pod,
            triggers,
            notify,
            send,
            stages,
            on_failure,
            retry_on_restart,
            retention,
        })
    }

    fn source(&mut self, node: &Node) -> Option<Source> {
        let f = self.fields(node, "source", SOURCE_FIELDS, "a mapping with `repo` and `branch`")?;
        let repo = self.req_template(&f, "repo", Place::Source);
        let branch = self.opt_template(&f, "branch", Place::Source);
        let binding = f.get("binding").and_then(|n| self.string(n, "source.binding"));
        if let (Some(repo), Some(node)) = (&repo, f.get("repo"))
            && let Err(why) = wharf_core::git::validate_repo_url(repo)
            && !repo.contains("${")
        {
            self.error(node.pos, "source.repo", format!("`{repo}` is not a usable repository address: {why}"));
        }
        if let (Some(branch), Some(node)) = (&branch, f.get("branch"))
            && !branch.contains("${")
            && let Err(why) = wharf_core::git::validate_branch_name(branch)
        {
            self.error(node.pos, "source.branch", format!("`{branch}` is not a valid branch name: {why}"));
        }
        Some(Source { repo: repo?, branch, binding })
    }

    fn variables(&mut self, node: &Node) -> Vec<Variable> {
        let Kind::Map(entries) = &node.kind else {
            self.expected(node, "variables", "a mapping of variable names to values");
            return Vec::new();
        };
        self.at_most_entries(entries, "variables", MAX_PARAMETERS, "variables");
        let mut out = Vec::new();
        for (key, value) in entries {
            let Kind::Scalar(k) = &key.kind else { continue };
            let path = join("variables", &k.text);
            let name = match VarName::new(k.text.clone()) {
                Ok(name) => name,
                Err(err) => {
                    self.error(key.pos, &path, err.to_string());
                    continue;
                }
            };
            self.index.variables.push(Declared { name: k.text.clone(), pos: key.pos, path: path.clone() });
            let text = if value.is_null() {
                Some(String::new())
            } else {
                self.template(value, &path, Place::Variable(out.len()))
            };
            if let Some(text) = text {
                self.at_most(value, &path, &text, MAX_VALUE_BYTES);
                out.push(Variable { name, value: text });
            }
        }
        out
    }

    fn parameters(&mut self, node: &Node) -> Vec<Parameter> {
        let Kind::Seq(items) = &node.kind else {
            self.expected(node, "parameters", "a list of parameters (`- name: TARGET`)");
            return Vec::new();
        };
        self.at_most_items(items, "parameters", MAX_PARAMETERS, "parameters");
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("parameters[{i}]");
            let (name_node, default, description, choices) = if matches!(item.kind, Kind::Scalar(_)) {
                (Some(item), None, None, Vec::new())
            } else {
                let Some(f) = self.fields(item, &path, PARAMETER_FIELDS, "a parameter (`name`, `default`)") else {
                    continue;
                };
                let default = f.get("default").and_then(|n| {
                    let text = self.template(n, &f.path("default"), Place::ParameterDefault)?;
                    self.at_most(n, &f.path("default"), &text, MAX_VALUE_BYTES);
                    Some(text)
                });
                let description = f.get("description").and_then(|n| self.string(n, &f.path("description")));
                let choices = f.get("choices").map(|n| self.choices(n, &f.path("choices"), default.as_deref()));
                (self.required(&f, "name"), default, description, choices.unwrap_or_default())
            };
            let Some(name_node) = name_node else { continue };
            let Some(text) = self.string(name_node, &join(&path, "name")) else { continue };
            match VarName::new(text.clone()) {
                Ok(name) => {
                    self.index.parameters.push(Declared { name: text, pos: name_node.pos, path: path.clone() });
                    out.push(Parameter { name, default, description, choices });
                }
                Err(err) => self.error(name_node.pos, &join(&path, "name"), err.to_string()),
            }
        }
        out
    }

    /// A parameter's `choices`: distinct strings, at least one, and its literal
    /// `default` among them.
    fn choices(&mut self, node: &Node, path: &str, default: Option<&str>) -> Vec<String> {
        if let Kind::Seq(items) = &node.kind {
            self.at_most_items(items, path, MAX_PARAMETERS, "choices");
        }
        let mut choices: Vec<String> = Vec::new();
        for (i, (text, pos)) in self.strings(node, path).into_iter().enumerate() {
            self.at_most(node, &format!("{path}[{i}]"), &text, MAX_VALUE_BYTES);
            if choices.contains(&text) {
                self.error(pos, &format!("{path}[{i}]"), format!("`{text}` is listed twice"));
            } else {
                choices.push(text);
            }
        }
        if choices.is_empty() {
            self.error(node.pos, path, "list at least one choice (or leave `choices` out to take any value)");
        }
        if let Some(default) = default
            && !default.contains("${")
            && !choices.is_empty()
            && !choices.iter().any(|c| c == default)
        {
            self.error(node.pos, path, format!("the default `{default}` is not one of the choices"));
        }
        choices
    }

    fn stages(&mut self, node: &Node, path: &str, rollback: bool) -> Vec<Stage> {
        let Kind::Seq(items) = &node.kind else {
            self.expected(node, path, "a list of stages");
            return Vec::new();
        };
        if items.is_empty() && !rollback {
            self.error(node.pos, path, "a pipeline needs at least one stage");
        }
        self.at_most_items(items, path, MAX_STAGES, "stages");
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(stage) = self.stage(item, &format!("{path}[{i}]"), i, rollback) {
                out.push(stage);
            }
        }
        out
    }

    fn step_name(&mut self, f: &Fields<'_>) -> Option<(StepName, Pos)> {
        let node = self.required(f, "name")?;
        let path = f.path("name");
        let text = self.string(node, &path)?;
        match StepName::new(text) {
            Ok(name) => Some((name, node.pos)),
            Err(err) => {
                self.error(node.pos, &path, err.to_string());
                None
            }
        }
    }

    fn stage(&mut self, node: &Node, path: &str, index: usize, rollback: bool) -> Option<Stage> {
        let f = self.fields(node, path, STAGE_FIELDS, "a stage (`name`, `tasks`, …)")?;
        let name = self.step_name(&f);
        if let Some((name, pos)) = &name {
            self.index.stages.push(Declared { name: name.to_string(), pos: *pos, path: f.path("name") });
        }
        let mode = f.get("mode").and_then(|n| {
            Some(match self.one_of(n, &f.path("mode"), &["sequential", "parallel"])?.as_str() {
                "parallel" => Mode::Parallel,
                _ => Mode::Sequential,
            })
        });
        let on_error = f.get("on_error").and_then(|n| {
            Some(match self.one_of(n, &f.path("on_error"), &["stop", "ignore", "rollback"])?.as_str() {
                "ignore" => ErrorPolicy::Ignore,
                "rollback" => ErrorPolicy::Rollback,
                _ => ErrorPolicy::Stop,
            })
        });
        if on_error == Some(ErrorPolicy::Rollback) && !rollback {
            self.index.rollback_policies.push((f.get("on_error").map_or(f.pos, |n| n.pos), f.path("on_error")));
        }
        if rollback && on_error == Some(ErrorPolicy::Rollback) {
            self.error(
                f.get("on_error").map_or(f.pos, |n| n.pos),
                &f.path("on_error"),
                "an `on_failure` stage cannot itself roll back",
            );
        }
        let timeout = self.limit(&f, "timeout");
        let wait = f.get("wait").and_then(|n| self.stage_wait(n, &f.path("wait")));
        if wait.is_some() && rollback {
            self.error(f.pos, &f.path("wait"), "an `on_failure` stage cannot wait for signals");
        }
        let send = f.get("send").and_then(|n| self.channel(n, &f.path("send")));
        let mut tasks = Vec::new();
        let written = f.entries.iter().find(|(k, _)| *k == "tasks").map(|(_, v)| *v);
        if let Some(list) = written.filter(|n| n.is_null()) {
            self.error(list.pos, &f.path("tasks"), "a stage needs at least one task");
        } else if let Some(list) = self.required(&f, "tasks") {
            match &list.kind {
                Kind::Seq(items) if items.is_empty() => {
                    self.error(list.pos, &f.path("tasks"), "a stage needs at least one task");
                }
                Kind::Seq(items) => {
                    self.at_most_items(items, &f.path("tasks"), MAX_TASKS_PER_STAGE, "tasks in this stage");
                    for (t, item) in items.iter().enumerate() {
                        let task_path = format!("{}[{t}]", f.path("tasks"));
                        if let Some(task) = self.task(item, &task_path, index, t, rollback) {
                            tasks.push(task);
                        }
                    }
                }
                _ => self.expected(list, &f.path("tasks"), "a list of tasks"),
            }
        }
        let notify = f.get("notify").map(|n| self.notifications(n, &f.path("notify"))).unwrap_or_default();
        Some(Stage {
            name: name?.0,
            mode: mode.unwrap_or_default(),
            on_error: on_error.unwrap_or_default(),
            timeout,
            wait,
            send,
            tasks,
            notify,
        })
    }

    /// A channel's name: 1 to 64 of `A-Z a-z 0-9 _ . -`.
    fn channel(&mut self, node: &Node, path: &str) -> Option<String> {
        let name = self.string(node, path)?;
        let fine = (1..=64).contains(&name.len())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !fine {
            self.error(
                node.pos,
                path,
                format!("`{name}` is not a channel name: 1 to 64 letters, digits, `_`, `.` or `-`"),
            );
            return None;
        }
        Some(name)
    }

    fn stage_wait(&mut self, node: &Node, path: &str) -> Option<StageWait> {
        let f = self.fields(node, path, WAIT_FIELDS, "the signals a stage waits for (`hook`, `channels`, …)")?;
        let need = match f.get("for").and_then(|n| self.one_of(n, &f.path("for"), &["any", "all"])).as_deref() {
            Some("all") => WaitFor::All,
            _ => WaitFor::Any,
        };
        let hook = f.get("hook").and_then(|n| self.bool(n, &f.path("hook"))).unwrap_or(false);
        let mut channels = Vec::new();
        if let Some(list) = f.get("channels") {
            let lpath = f.path("channels");
            match &list.kind {
                Kind::Seq(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(c) = self.channel(item, &format!("{lpath}[{i}]"))
                            && !channels.contains(&c)
                        {
                            channels.push(c);
                        }
                    }
                }
                _ => self.expected(list, &lpath, "a list of channel names"),
            }
        }
        let mut params = Vec::new();
        if let Some(list) = f.get("params") {
            for (name, pos) in self.strings(list, &f.path("params")) {
                if VarName::new(&name).is_err() {
                    self.error(pos, &f.path("params"), format!("`{name}` is not a variable name"));
                } else if !params.contains(&name) {
                    params.push(name);
                }
            }
        }
        if !hook && channels.is_empty() {
            self.error(f.pos, path, "a stage waits for at least one signal: `hook: true` or `channels: [..]`");
            return None;
        }
        let timeout = self.limit(&f, "timeout");
        Some(StageWait { need, hook, channels, params, timeout })
    }

    fn task(&mut self, node: &Node, path: &str, stage: usize, index: usize, rollback: bool) -> Option<Task> {
        self.tasks_seen += 1;
        if self.tasks_seen == MAX_TASKS + 1 {
            self.error(
                node.pos,
                path,
                format!(
                    "this is task {} of the pipeline; a pipeline has at most {MAX_TASKS} tasks in all, \
                     `on_failure` included (see Limits in docs/pipeline-yaml.md)",
                    MAX_TASKS + 1
                ),
            );
        }
        // The type decides the allowed fields, so read it before checking the rest.
        let task_type = match &node.kind {
            Kind::Map(entries) => {
                entries.iter().find(|(k, _)| matches!(&k.kind, Kind::Scalar(s) if s.text == "type")).map(|(_, v)| v)
            }
            _ => None,
        };
        let task_type = match task_type {
            Some(t) => Some(self.one_of(t, &join(path, "type"), &TASK_TYPES)?),
            None => None,
        };
        let allowed: Vec<&str> =
            TASK_COMMON.iter().chain(task_fields(task_type.as_deref().unwrap_or(""))).copied().collect();
        let f = self.fields(node, path, &allowed, "a task (`name`, `type`, …)")?;
        let name = self.step_name(&f);
        let task_name = name.as_ref().map(|(n, _)| n.to_string()).unwrap_or_default();
        if let Some((name, pos)) = &name {
            self.index.tasks.push((
                stage,
                rollback,
                index,
                Declared { name: name.to_string(), pos: *pos, path: f.path("name") },
            ));
        }
        if task_type.is_none() {
            self.error(
                f.pos,
                path,
                format!("missing required field `type`; expected one of: {}", TASK_TYPES.join(", ")),
            );
        }
        let place = Place::Task { stage, task: index, rollback, script: false };
        let env = f.get("env").map(|n| self.string_map(n, &f.path("env"), Some(place))).unwrap_or_default();
        if let Some(Kind::Map(entries)) = f.get("env").map(|n| &n.kind) {
            self.at_most_entries(entries, &f.path("env"), MAX_ENV_ENTRIES, "variables in `env`");
        }
        for key in env.keys() {
            let pos = f.get("env").map_or(f.pos, |n| n.pos);
            if VarName::new(key.clone()).is_err() {
                self.error(pos, &f.path("env"), format!("`{key}` is not a valid environment variable name"));
            } else if wharf_core::vars::is_builtin(key) || key.starts_with("WHARF_") {
                self.error(pos, &f.path("env"), format!("`{key}` is set by Wharf; choose another name"));
            }
        }
        let secrets = match f.get("secrets") {
            Some(n) => self.var_names(n, &f.path("secrets")),
            None => Vec::new(),
        };
        for (secret, pos) in &secrets {
            self.index.secrets.push(Declared { name: secret.to_string(), pos: *pos, path: f.path("secrets") });
        }
        let timeout = self.limit(&f, "timeout");
        let retries = f.get("retries").and_then(|n| self.uint(n, &f.path("retries"), 0..=MAX_RETRIES));
        let outputs = match f.get("outputs") {
            Some(n) => self.var_names(n, &f.path("outputs")),
            None => Vec::new(),
        };
        for (output, pos) in &outputs {
            self.index
                .outputs
                .push((task_name.clone(), Declared { name: output.to_string(), pos: *pos, path: f.path("outputs") }));
        }
        let kind = self.task_kind(&f, task_type.as_deref()?, place)?;
        Some(Task {
            name: name?.0,
            kind,
            env,
            secrets: secrets.into_iter().map(|(s, _)| s).collect(),
            timeout,
            retries: retries.unwrap_or(0),
            outputs: outputs.into_iter().map(|(o, _)| o).collect(),
        })
    }

    fn task_kind(&mut self, f: &Fields<'_>, task_type: &str, place: Place) -> Option<TaskKind> {
        let req = |d: &mut Self, key: &str| d.req_template(f, key, place);
        let opt = |d: &mut Self, key: &str| d.opt_template(f, key, place);
        Some(match task_type {
            "script" => {
                let script_place = match place {
                    Place::Task { stage, task, rollback, .. } => Place::Task { stage, task, rollback, script: true },
                    other => other,
                };
                let image = opt(self, "image");
                let tag = opt(self, "tag");
                if image.is_none() {
                    self.index.script_without_image.push(Declared {
                        name: String::new(),
                        pos: f.pos,
                        path: f.path.clone(),
                    });
                }
                if tag.is_some() && image.is_none() {
                    self.error(f.get("tag").map_or(f.pos, |n| n.pos), &f.path("tag"), "`tag` needs `image`");
                }
                if let (Some(image), Some(node)) = (&image, f.get("image")) {
                    let reference = match &tag {
                        Some(tag) => format!("{image}:{tag}"),
                        None => image.clone(),
                    };
                    self.image_reference(node, &f.path("image"), &reference);
                }
                let script = self.req_template(f, "script", script_place);
                if let (Some(script), Some(node)) = (&script, f.get("script")) {
                    self.at_most(node, &f.path("script"), script, MAX_SCRIPT_BYTES);
                }
                let pod = self.pod_settings(f);
                TaskKind::Script(ScriptTask { image, tag, script: script?, pod })
            }
            "image" => {
                let dockerfile = opt(self, "dockerfile").unwrap_or_else(|| "Dockerfile".to_owned());
                if let Some(node) = f.get("dockerfile")
                    && let Err(why) = inside_checkout(&dockerfile)
                {
                    self.error(node.pos, &f.path("dockerfile"), why);
                }
                let context = opt(self, "context").unwrap_or_else(|| ".".to_owned());
                if let Some(node) = f.get("context")
                    && let Err(why) = inside_checkout(&context)
                {
                    self.error(node.pos, &f.path("context"), why);
                }
                let image = req(self, "image");
                let tag = req(self, "tag");
                let workspace = req(self, "workspace");
                // Names without `${…}` are checked against the OCI reference grammar
                // now; templated ones once rendered, before anything is built.
                type Check = fn(&str) -> Result<(), wharf_core::reference::ReferenceError>;
                let checks: [(&str, &Option<String>, Check); 3] = [
                    ("image", &image, wharf_core::reference::check_component),
                    ("tag", &tag, wharf_core::reference::check_tag),
                    ("workspace", &workspace, wharf_core::reference::check_component),
                ];
                for (key, value, check) in checks {
                    if let (Some(value), Some(node)) = (value, f.get(key))
                        && !value.contains("${")
                        && let Err(e) = check(value)
                    {
                        self.error(node.pos, &f.path(key), e.to_string());
                    }
                }
                let registry = f.get("registry").and_then(|n| self.string(n, &f.path("registry")));
                let build_args = f
                    .get("build_args")
                    .map(|n| self.string_map(n, &f.path("build_args"), Some(place)))
                    .unwrap_or_default();
                if let Some(Kind::Map(entries)) = f.get("build_args").map(|n| &n.kind) {
                    self.at_most_entries(entries, &f.path("build_args"), MAX_ENV_ENTRIES, "entries in `build_args`");
                }
                TaskKind::Image(ImageTask {
                    dockerfile,
                    context,
                    image: image?,
                    tag: tag?,
                    workspace: workspace?,
                    registry,
                    build_args,
                })
            }
            "deploy-yaml" => {
                let file = req(self, "file");
                if let (Some(file), Some(node)) = (&file, f.get("file"))
                    && let Err(why) = inside_checkout(file)
                {
                    self.error(node.pos, &f.path("file"), why);
                }
                let cluster = req(self, "cluster");
                let namespace = req(self, "namespace");
                TaskKind::DeployYaml(DeployYamlTask { file: file?, cluster: cluster?, namespace: namespace? })
            }
            "chart-publish" => {
                let chart_dir = req(self, "chart_dir");
                if let (Some(dir), Some(node)) = (&chart_dir, f.get("chart_dir"))
                    && let Err(why) = inside_checkout(dir)
                {
                    self.error(node.pos, &f.path("chart_dir"), why);
                }
                let chart = req(self, "chart");
                let version = req(self, "version");
                let registry = f.get("registry").and_then(|n| self.string(n, &f.path("registry")));
                let workspace = req(self, "workspace");
                TaskKind::ChartPublish(ChartPublishTask {
                    chart_dir: chart_dir?,
                    chart: chart?,
                    version: version?,
                    registry,
                    workspace: workspace?,
                })
            }
            "chart-deploy" => {
                let release = req(self, "release");
                let chart = req(self, "chart");
                let version = req(self, "version");
                let registry = f.get("registry").and_then(|n| self.string(n, &f.path("registry")));
                let workspace = req(self, "workspace");
                let cluster = req(self, "cluster");
                let namespace = req(self, "namespace");
                let values = match f.get("values") {
                    Some(node) => match to_json(node) {
                        serde_json::Value::Object(map) => map,
                        _ => {
                            self.expected(node, &f.path("values"), "a mapping of chart values");
                            serde_json::Map::new()
                        }
                    },
                    None => serde_json::Map::new(),
                };
                TaskKind::ChartDeploy(ChartDeployTask {
                    release: release?,
                    chart: chart?,
                    version: version?,
                    registry,
                    workspace: workspace?,
                    cluster: cluster?,
                    namespace: namespace?,
                    values,
                })
            }
            "approval" => {
                let approvers = self.required(f, "approvers").map(|n| self.strings(n, &f.path("approvers")));
                if let (Some(list), Some(node)) = (&approvers, f.get("approvers"))
                    && list.is_empty()
                {
                    self.error(node.pos, &f.path("approvers"), "name at least one approver (a user, or `role:<name>`)");
                }
                let message = opt(self, "message");
                let required =
                    f.get("required").map(|n| self.uint(n, &f.path("required"), 1..=MAX_APPROVALS)).unwrap_or(Some(1));
                TaskKind::Approval(ApprovalTask {
                    approvers: approvers?.into_iter().map(|(s, _)| s).collect(),
                    message,
                    required: required?,
                })
            }
            "canary" => {
                let deployment = req(self, "deployment");
                let cluster = req(self, "cluster");
                let namespace = req(self, "namespace");
                let image = req(self, "image");
                let steps = self.required(f, "steps").and_then(|n| self.canary_steps(n, &f.path("steps")));
                let pause = f.get("pause").and_then(|n| self.duration(n, &f.path("pause")));
                let approval = f.get("approval").and_then(|n| self.bool(n, &f.path("approval"))).unwrap_or(false);
                TaskKind::Canary(CanaryTask {
                    deployment: deployment?,
                    cluster: cluster?,
                    namespace: namespace?,
                    image: image?,
                    steps: steps?,
                    pause,
                    approval,
                })
            }
            _ => return None,
        })
    }

    fn canary_steps(&mut self, node: &Node, path: &str) -> Option<Vec<u8>> {
        let Kind::Seq(items) = &node.kind else {
            self.expected(node, path, "a list of traffic percentages such as [10, 50, 100]");
            return None;
        };
        let mut steps = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let step = self.uint(item, &format!("{path}[{i}]"), 1..=100)? as u8;
            if steps.last().is_some_and(|last| *last >= step) {
                self.error(item.pos, &format!("{path}[{i}]"), "steps must rise: each percentage above the one before");
                return None;
            }
            steps.push(step);
        }
        if steps.last() != Some(&100) {
            self.error(node.pos, path, "the last step must be 100 (all traffic on the new version)");
            return None;
        }
        Some(steps)
    }

    fn triggers(&mut self, node: &Node) -> Vec<Trigger> {
        let Kind::Seq(items) = &node.kind else {
            self.expected(node, "triggers", "a list of triggers");
            return Vec::new();
        };
        items.iter().enumerate().filter_map(|(i, item)| self.trigger(item, &format!("triggers[{i}]"))).collect()
    }

    fn trigger(&mut self, node: &Node, path: &str) -> Option<Trigger> {
        let Kind::Map(entries) = &node.kind else {
            self.expected(node, path, "a trigger mapping (`events:`, `every_minutes:`, `daily:`, `cron:`, …)");
            return None;
        };
        let kinds: Vec<&str> = entries
            .iter()
            .filter_map(|(k, _)| match &k.kind {
                Kind::Scalar(s) if TRIGGER_KINDS.contains(&s.text.as_str()) => Some(s.text.as_str()),
                _ => None,
            })
            .collect();
        let kind = match kinds.as_slice() {
            [one] => *one,
            [] => {
                self.error(node.pos, path, format!("a trigger needs one of: {}", TRIGGER_KINDS.join(", ")));
                return None;
            }
            many => {
                self.error(node.pos, path, format!("a trigger has exactly one kind; found {}", many.join(" and ")));
                return None;
            }
        };
        let mut allowed: Vec<&str> = match kind {
            "events" => vec!["events", "branches"],
            "every_hours" => vec!["every_hours", "at_minute"],
            "weekly" | "monthly" => vec![kind, "at"],
            _ => vec![kind],
        };
        if kind != "events" && kind != "channel" {
            allowed.extend(["timezone", "missed"]);
        }
        let f = self.fields(node, path, &allowed, "a trigger")?;
        let value = f.get(kind)?;
        let vpath = f.path(kind);
        let at = |d: &mut Self| -> Option<ClockTime> {
            let node = d.required(&f, "at")?;
            d.clock_time(node, &f.path("at"))
        };
        let trigger_kind = match kind {
            "events" => {
                let mut events = Vec::new();
                for (text, pos) in self.strings(value, &vpath) {
                    match text.as_str() {
                        "push" => events.push(GitEvent::Push),
                        "merge" => events.push(GitEvent::Merge),
                        "tag" => events.push(GitEvent::Tag),
                        other => {
                            self.error(pos, &vpath, format!("`{other}` is not an event; expected push, merge or tag"))
                        }
                    }
                }
                if events.is_empty() {
                    self.error(value.pos, &vpath, "name at least one event: push, merge or tag");
                }
                let branches = match f.get("branches") {
                    Some(n) => self.strings(n, &f.path("branches")).into_iter().map(|(b, _)| b).collect(),
                    None => Vec::new(),
                };
                TriggerKind::Events { events, branches }
            }
            "every_minutes" => TriggerKind::EveryMinutes { every_minutes: self.uint(value, &vpath, 1..=1440)? },
            "every_hours" => {
                let every_hours = self.uint(value, &vpath, 1..=24)?;
                let at_minute = match f.get("at_minute") {
                    Some(n) => self.uint(n, &f.path("at_minute"), 0..=59)?,
                    None => 0,
                };
                TriggerKind::EveryHours { every_hours, at_minute }
            }
            "daily" => TriggerKind::Daily { daily: self.clock_time(value, &vpath)? },
            "weekly" => {
                let mut days = Vec::new();
                for (text, pos) in self.strings(value, &vpath) {
                    match weekday(&text) {
                        Some(day) => days.push(day),
                        None => self.error(
                            pos,
                            &vpath,
                            format!("`{text}` is not a weekday; expected mon, tue, wed, thu, fri, sat or sun"),
                        ),
                    }
                }
                if days.is_empty() {
                    self.error(value.pos, &vpath, "name at least one weekday");
                }
                days.sort();
                days.dedup();
                TriggerKind::Weekly { weekly: days, at: at(self)? }
            }
            "monthly" => TriggerKind::Monthly { monthly: self.uint(value, &vpath, 1..=31)?, at: at(self)? },
            "channel" => TriggerKind::Channel { channel: self.channel(value, &vpath)? },
            _ => {
                let expr = self.string(value, &vpath)?;
                if let Err(why) = check_cron(&expr) {
                    self.error(value.pos, &vpath, why);
                    return None;
                }
                TriggerKind::Cron { cron: expr }
            }
        };
        let timezone = f.get("timezone").and_then(|n| {
            let zone = self.string(n, &f.path("timezone"))?;
            match jiff::tz::TimeZone::get(&zone) {
                Ok(_) => Some(zone),
                Err(_) => {
                    self.error(
                        n.pos,
                        &f.path("timezone"),
                        format!("`{zone}` is not a known IANA time zone (e.g. `Asia/Shanghai`, `UTC`)"),
                    );
                    None
                }
            }
        });
        let missed = f.get("missed").and_then(|n| {
            Some(match self.one_of(n, &f.path("missed"), &["once", "skip"])?.as_str() {
                "skip" => Missed::Skip,
                _ => Missed::Once,
            })
        });
        Some(Trigger { kind: trigger_kind, timezone, missed })
    }

    fn clock_time(&mut self, node: &Node, path: &str) -> Option<ClockTime> {
        let text = self.string(node, path)?;
        let time = ClockTime::parse(&text);
        if time.is_none() {
            self.error(
                node.pos,
                path,
                format!("`{text}` is not a time of day: expected HH:MM, 00:00 to 23:59 (quote it: \"02:30\")"),
            );
        }
        time
    }

    fn notifications(&mut self, node: &Node, base: &str) -> Vec<Notification> {
        let Kind::Seq(items) = &node.kind else {
            self.expected(node, base, "a list of notifications");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{base}[{i}]");
            let Some(f) = self.fields(item, &path, &["on", "webhook", "channel", "email"], "a notification") else {
                continue;
            };
            let mut on = Vec::new();
            if let Some(n) = f.get("on") {
                for (text, pos) in self.strings(n, &f.path("on")) {
                    match text.as_str() {
                        "success" => on.push(NotifyOn::Success),
                        "failure" => on.push(NotifyOn::Failure),
                        "waiting" => on.push(NotifyOn::Waiting),
                        other => self.error(
                            pos,
                            &f.path("on"),
                            format!("`{other}` is not an outcome; expected success, failure or waiting"),
                        ),
                    }
                }
            } else {
                on = vec![NotifyOn::Failure];
            }
            if let Some(target) = self.notify_target(&f, &path) {
                out.push(Notification { on, target });
            }
        }
        out
    }

    fn notify_target(&mut self, f: &Fields<'_>, path: &str) -> Option<NotifyTarget> {
        let targets: Vec<&str> = ["webhook", "channel", "email"].into_iter().filter(|k| f.has(k)).collect();
        match targets.as_slice() {
            ["webhook"] => self.webhook(f.get("webhook")?, &f.path("webhook")).map(NotifyTarget::Webhook),
            ["channel"] => self.string(f.get("channel")?, &f.path("channel")).map(NotifyTarget::Channel),
            ["email"] => {
                let n = f.get("email")?;
                let list: Vec<String> = self.strings(n, &f.path("email")).into_iter().map(|(s, _)| s).collect();
                for address in &list {
                    if !address.contains('@') || address.chars().any(char::is_whitespace) {
                        self.error(n.pos, &f.path("email"), format!("`{address}` is not an email address"));
                    }
                }
                Some(NotifyTarget::Email(list))
            }
            [] => {
                self.error(f.pos, path, "a notification needs one of: webhook, channel, email");
                None
            }
            _ => {
                self.error(f.pos, path, "a notification has exactly one of: webhook, channel, email");
                None
            }
        }
    }

    fn webhook(&mut self, node: &Node, path: &str) -> Option<Webhook> {
        let f = self.fields(node, path, WEBHOOK_FIELDS, "a webhook (`url`, `method`, …)")?;
        let url = self.req_template(&f, "url", Place::Notify)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.error(
                f.get("url").map_or(f.pos, |n| n.pos),
                &f.path("url"),
                "a webhook URL starts with http:// or https://",
            );
        }
        let method = match f.get("method") {
            Some(n) => match self.one_of(n, &f.path("method"), &["GET", "POST"])?.as_str() {
                "GET" => HttpMethod::Get,
                _ => HttpMethod::Post,
            },
            None => HttpMethod::Post,
        };
        let headers =
            f.get("headers").map(|n| self.string_map(n, &f.path("headers"), Some(Place::Notify))).unwrap_or_default();
        let params =
            f.get("params").map(|n| self.string_map(n, &f.path("params"), Some(Place::Notify))).unwrap_or_default();
        let body = self.opt_template(&f, "body", Place::Notify);
        let secret = f.get("secret").and_then(|n| self.string(n, &f.path("secret")));
        Some(Webhook { url, method, headers, params, body, secret })
    }
}

fn weekday(text: &str) -> Option<Weekday> {
    let lower = text.to_ascii_lowercase();
    let short = lower.get(..3)?;
    let day = match short {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    };
    const FULL: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
    (lower.len() == 3 || FULL.contains(&lower.as_str())).then_some(day)
}

/// A path inside the checkout: relative, and never climbing out with `..`.
/// Templated paths are checked again once resolved.
pub fn inside_checkout(path: &str) -> Result<(), String> {
    if path.contains("${") {
        return Ok(());
    }
    if path.is_empty() {
        return Err("the path is empty".to_owned());
    }
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(format!("`{path}` must be a path inside the repository, not an absolute path"));
    }
    let mut depth: i32 = 0;
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("`{path}` leaves the repository (`..` climbs above its root)"));
                }
            }
            _ => depth += 1,
        }
    }
    if path.chars().any(char::is_control) {
        return Err(format!("`{}` contains control characters", path.escape_debug()));
    }
    Ok(())
}

/// Checks a 5-field cron expression: minute hour day-of-month month day-of-week, each
/// `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those.
pub fn check_cron(expr: &str) -> Result<(), String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "`{expr}` has {} fields; a cron expression has 5: minute hour day-of-month month day-of-week",
            fields.len()
        ));
    }
    const SPECS: [(&str, u32, u32, &[&str]); 5] = [
        ("minute", 0, 59, &[]),
        ("hour", 0, 23, &[]),
        ("day-of-month", 1, 31, &[]),
        ("month", 1, 12, &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]),
        ("day-of-week", 0, 7, &["sun", "mon", "tue", "wed", "thu", "fri", "sat"]),
    ];
    for (field, (name, lo, hi, names)) in fields.iter().zip(SPECS) {
        let value = |s: &str| -> Option<u32> {
            if let Ok(n) = s.parse::<u32>() {
                return (lo..=hi).contains(&n).then_some(n);
            }
            let idx = names.iter().position(|n| n.eq_ignore_ascii_case(s))? as u32;
            Some(if name == "month" { idx + 1 } else { idx })
        };
        let bad = || {
            format!("`{field}` is not a valid {name} field (values {lo} to {hi}; `*`, `a-b`, `*/n`, lists with `,`)")
        };
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if let Some(step) = step
                && !matches!(step.parse::<u32>(), Ok(n) if n >= 1 && n <= hi.max(1))
            {
                return Err(bad());
            }
            if range == "*" {
                continue;
            }
            match range.split_once('-') {
                Some((a, b)) => match (value(a), value(b)) {
                    (Some(a), Some(b)) if a <= b => {}
                    _ => return Err(bad()),
                },
                None => {
                    value(range).ok_or_else(bad)?;
                }
            }
        }
    }
    Ok(())
}

/// Chart values and other free-form data, typed as YAML 1.2 core would.
fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match &node.kind {
        Kind::Scalar(s) if s.style == Style::Plain => {
            if crate::yaml::is_null(&s.text) {
                Value::Null
            } else if s.text == "true" || s.text == "false" {
                Value::Bool(s.text == "true")
            } else if let Ok(n) = s.text.parse::<i64>() {
                Value::from(n)
            } else if let Some(n) = s.text.parse::<f64>().ok().filter(|f| f.is_finite()) {
                Value::from(n)
            } else {
                Value::String(s.text.clone())
            }
        }
        Kind::Scalar(s) => Value::String(s.text.clone()),
        Kind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Kind::Map(entries) => Value::Object(
            entries
                .iter()
                .filter_map(|(k, v)| match &k.kind {
                    Kind::Scalar(s) => Some((s.text.clone(), to_json(v))),
                    _ => None,
                })
                .collect(),
        ),
    }
}

/// References of a parsed template with the byte offset of each `${` in `text`.
fn refs_with_offsets(text: &str, template: &Template) -> Vec<(VarRef, usize)> {
    let mut out = Vec::new();
    let mut refs = template.refs();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') && bytes.get(i + 2) == Some(&b'{') {
            i += 3;
            continue;
        }
        if bytes[i] == b'$' && bytes[i + 1] == b'{' {
            if let Some(r) = refs.next() {
                out.push((r.clone(), i));
            }
            i += 2;
            continue;
        }
        i += 1;
    }
    out
}
