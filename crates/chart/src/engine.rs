//! The render itself: dependencies enabled or not, values coalesced, one template set
//! for the chart and its subcharts, each template executed with its chart's scope,
//! the output split into documents, hooks set apart, manifests sorted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use gotmpl::parse::{CommandNode, Expr, ListNode, Node, Parser, PipeNode, SmolStr};
use gotmpl::{FuncMap, Template, TemplateError, Value};

use crate::funcs::{self, go_string};
use crate::model::{Chart, ChartType};
use crate::render::{
    Crd, Hook, HookDeletePolicy, HookEvent, MAX_OUTPUT_BYTES, Manifest, RenderError, RenderOptions, Rendered,
};
use crate::values::{Map, Values};
use crate::yaml;

/// How deep `include`/`tpl` may nest (Helm refuses runaway recursion too).
const MAX_INCLUDE_DEPTH: usize = 100;

/// Go field-style calls that are methods on Helm's types (`.Files.Get "x"`,
/// `.Capabilities.APIVersions.Has "apps/v1"`): gotmpl has no methods, so calls are
/// rewritten to functions taking the receiver first.
const METHODS: &[&str] = &["Get", "GetBytes", "Glob", "Lines", "AsConfig", "AsSecrets", "Has"];

/// text/template's own functions (gotmpl registers them itself).
const GO_BUILTINS: &[&str] = &[
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or", "print", "printf",
    "println", "slice", "urlquery",
];

/// The most bytes all template executions of one render may write together (includes
/// count as they are produced and again where they are inserted), and how long a render
/// may take: a chart is client input, and a loop in it must not hold a server.
const MAX_WRITTEN_BYTES: usize = 4 * MAX_OUTPUT_BYTES;
const MAX_RENDER_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// What one render has spent; shared by the writers and the functions that recurse.
struct Budget {
    written: AtomicUsize,
    deadline: std::time::Instant,
    /// Set when a limit stopped the render (so the error says which).
    exceeded: std::sync::Mutex<Option<RenderError>>,
}

impl Budget {
    fn check(&self, more: usize) -> Result<(), RenderError> {
        if self.written.fetch_add(more, Ordering::Relaxed) + more > MAX_WRITTEN_BYTES {
            return Err(RenderError::TooLarge);
        }
        if std::time::Instant::now() > self.deadline {
            return Err(RenderError::TimedOut(MAX_RENDER_TIME.as_secs()));
        }
        Ok(())
    }

    fn stop(&self, why: RenderError) {
        if let Ok(mut slot) = self.exceeded.lock() {
            slot.get_or_insert(why);
        }
    }
}

/// A `String` that stops the template (a write error) once the render's budget is spent.
struct Capped<'a> {
    out: String,
    budget: &'a Budget,
}

impl std::fmt::Write for Capped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if let Err(why) = self.budget.check(s.len()) {
            self.budget.stop(why);
            return Err(std::fmt::Error);
        }
        self.out.push_str(s);
        Ok(())
    }
}

fn execute(set: &Template, name: &str, data: &Value, budget: &Budget) -> Result<String, TemplateError> {
    let mut w = Capped { out: String::new(), budget };
    set.execute_template_fmt(&mut w, name, data)?;
    Ok(w.out)
}

/// Marks an error message that already has Helm's final form.
const HELM_ERR: &str = "\u{1}helm:";

/// A chart in the render tree: its name as its parent calls it (alias), its path
/// prefix (`top/charts/sub`), its values scope and its enabled subcharts.
struct ChartNode<'a> {
    chart: &'a Chart,
    name: String,
    prefix: String,
    values: Value,
    subcharts: Vec<ChartNode<'a>>,
    is_root: bool,
    /// `.Chart` and `.Files`, built once per chart.
    chart_value: Value,
    files_value: Value,
}

pub(crate) fn render(chart: &Chart, user: &Values, opts: &RenderOptions) -> Result<Rendered, RenderError> {
    if chart.metadata.chart_type == ChartType::Library {
        return Err(RenderError::Chart(format!(
            "{} is a library chart: library charts are not installable",
            chart.metadata.name
        )));
    }
    let kube = funcs::SemVer::parse(&normalize_kube_version(&opts.kube_version))
        .ok_or_else(|| RenderError::Chart(format!("invalid kube version {:?}", opts.kube_version)))?;
    if let Some(req) = chart.metadata.kube_version.as_deref().filter(|r| !r.is_empty())
        && !funcs::semver_matches(req, &kube).unwrap_or(true)
    {
        return Err(RenderError::Chart(format!(
            "chart requires kubeVersion: {req} which is incompatible with Kubernetes {}",
            normalize_kube_version(&opts.kube_version)
        )));
    }

    // Which subcharts are enabled is decided on the values coalesced with every subchart.
    let all = coalesce_all(chart, &user.0);
    let root_values = coalesce_tree(chart, &user.0, &all)?;
    let tree = build_tree(chart, chart.metadata.name.clone(), chart.metadata.name.clone(), root_values.clone(), true);

    let caps = capabilities(opts, &kube);
    let release = release_value(opts);

    // Every template of every chart in the tree, named as Helm names them.
    let mut sources: Vec<(String, &[u8], &ChartNode)> = Vec::new();
    collect(&tree, &mut sources);
    // Helm parses deepest paths first, then reverse by name: the top chart's and the
    // alphabetically first file's `define` wins.
    sources.sort_by(|a, b| {
        let (ca, cb) = (a.0.matches('/').count(), b.0.matches('/').count());
        cb.cmp(&ca).then_with(|| b.0.cmp(&a.0))
    });

    let cell: Arc<OnceLock<Template>> = Arc::new(OnceLock::new());
    let depth = Arc::new(AtomicUsize::new(0));
    let budget = Arc::new(Budget {
        written: AtomicUsize::new(0),
        deadline: std::time::Instant::now() + MAX_RENDER_TIME,
        exceeded: std::sync::Mutex::new(None),
    });
    let funcs = helm_funcs(&cell, &depth, &budget);
    let mut set = Template::new("").funcs(funcs.clone());
    for (name, data, _) in &sources {
        let text = String::from_utf8_lossy(data);
        let (tree, defines) = parse(name, &text, &funcs)?;
        set = set.add_parse_tree(name, tree);
        for (dname, body) in defines {
            if body.is_empty_tree() && set.lookup(&dname).is_some() {
                continue;
            }
            set = set.add_parse_tree(&dname, body);
        }
    }
    let _ = cell.set(set);
    let set = cell.get().ok_or_else(|| RenderError::Chart("template set unavailable".into()))?;

    // Execute in name order (as Helm lists them), skipping partials.
    let mut names: Vec<&(String, &[u8], &ChartNode)> = sources.iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut total = 0usize;
    let mut notes = None;
    for (name, _, node) in names {
        let base = name.rsplit('/').next().unwrap_or(name);
        // Partials only define; a library chart's templates only provide defines.
        if base.starts_with('_') || node.chart.metadata.chart_type == ChartType::Library {
            continue;
        }
        let data = template_data(node, name, &caps, &release);
        depth.store(0, Ordering::Relaxed);
        let out = execute(set, name, &data, &budget).map_err(|e| {
            match budget.exceeded.lock().ok().and_then(|mut s| s.take()) {
                Some(why) => why,
                None => exec_error(name, e),
            }
        })?;
        let out = out.replace("<no value>", "");
        total += out.len();
        if total > MAX_OUTPUT_BYTES {
            return Err(RenderError::TooLarge);
        }
        if base == "NOTES.txt" {
            if node.is_root && name == &format!("{}/templates/NOTES.txt", node.prefix) {
                notes = Some(out);
            }
            continue;
        }
        outputs.push((name.clone(), out));
    }

    let (manifests, hooks) = sort_manifests(&outputs)?;
    let mut crds = Vec::new();
    collect_crds(&tree, &mut crds);
    Ok(Rendered { manifests, hooks, notes, crds, config: user.clone(), values: Values(as_map(&root_values)) })
}

fn normalize_kube_version(v: &str) -> String {
    let v = v.trim();
    if v.starts_with('v') { v.to_string() } else { format!("v{v}") }
}

fn as_map(v: &Value) -> Arc<Map> {
    match v {
        Value::Map(m) => m.clone(),
        _ => Arc::new(Map::new()),
    }
}

fn collect<'a>(node: &'a ChartNode<'a>, out: &mut Vec<(String, &'a [u8], &'a ChartNode<'a>)>) {
    for t in &node.chart.templates {
        out.push((format!("{}/{}", node.prefix, t.path), &t.data, node));
    }
    for sub in &node.subcharts {
        collect(sub, out);
    }
}

fn collect_crds(node: &ChartNode<'_>, out: &mut Vec<Crd>) {
    for f in node.chart.crds() {
        out.push(Crd {
            path: format!("{}/{}", node.prefix, f.path),
            content: String::from_utf8_lossy(&f.data).into_owned(),
        });
    }
    for sub in &node.subcharts {
        collect_crds(sub, out);
    }
}

// ---- values ---------------------------------------------------------------------

fn key(s: &str) -> Arc<str> {
    Arc::from(s)
}

/// Helm's `CoalesceValues` over every subchart in charts/, enabled or not (what
/// conditions and tags are evaluated on): `user` over the chart's defaults, subcharts
/// coalesced into their sections with `global` handed down.
fn coalesce_all(chart: &Chart, user: &Map) -> Value {
    let mut dest = user.clone();
    coalesce_values(&mut dest, &chart.values.0);
    for sub in &chart.subcharts {
        for alias in aliases_of(chart, sub) {
            coalesce_sub(&mut dest, sub, &alias, |c, _, u| coalesce_all(c, u));
        }
    }
    Value::Map(Arc::new(dest))
}

fn coalesce_sub(dest: &mut Map, sub: &Chart, name: &str, mut f: impl FnMut(&Chart, &str, &Map) -> Value) {
    let mut section = match dest.get(name) {
        Some(Value::Map(m)) => (**m).clone(),
        _ => Map::new(),
    };
    // Parent globals win over the subchart's own.
    let parent_global = match dest.get("global") {
        Some(Value::Map(g)) => (**g).clone(),
        _ => Map::new(),
    };
    let mut global = match section.get("global") {
        Some(Value::Map(g)) => (**g).clone(),
        _ => Map::new(),
    };
    crate::values::merge_maps(&mut global, &parent_global);
    section.insert(key("global"), Value::Map(Arc::new(global)));
    let v = f(sub, name, &section);
    dest.insert(key(name), v);
}

/// Chart defaults under `dest` (user values win; a user `null` deletes the key).
fn coalesce_values(dest: &mut Map, defaults: &Map) {
    for (k, dv) in defaults {
        match dest.get_mut(k) {
            None => {
                dest.insert(k.clone(), dv.clone());
            }
            Some(Value::Nil) => {
                dest.remove(k);
            }
            Some(Value::Map(um)) => {
                if let Value::Map(dm) = dv {
                    coalesce_values(Arc::make_mut(um), dm);
                }
            }
            Some(_) => {}
        }
    }
}

/// The names a subchart is known by in `chart`: its aliases, or its own name.
fn aliases_of(chart: &Chart, sub: &Chart) -> Vec<String> {
    let deps: Vec<_> = chart.metadata.dependencies.iter().filter(|d| d.name == sub.metadata.name).collect();
    if deps.is_empty() {
        return vec![sub.metadata.name.clone()];
    }
    deps.iter().map(|d| d.alias.clone().unwrap_or_else(|| d.name.clone())).collect()
}

/// The values after enabled/disabled subcharts are settled, coalesced again.
fn coalesce_tree(chart: &Chart, user: &Map, all: &Value) -> Result<Value, RenderError> {
    let mut dest = user.clone();
    coalesce_values(&mut dest, &chart.values.0);
    for (sub, alias, enabled) in subcharts_of(chart, all, all) {
        if !enabled {
            continue;
        }
        let section_all = match all {
            Value::Map(m) => m.get(alias.as_str()).cloned().unwrap_or(Value::Nil),
            _ => Value::Nil,
        };
        let mut err = None;
        coalesce_sub(&mut dest, sub, &alias, |c, _, u| match coalesce_tree(c, u, &section_all) {
            Ok(v) => v,
            Err(e) => {
                err = Some(e);
                Value::Nil
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
        import_values(chart, sub, &mut dest);
    }
    Ok(Value::Map(Arc::new(dest)))
}

/// `import-values`: a subchart's own defaults (`exports.NAME`, or `child` → `parent`)
/// under the parent's values; the parent's values (its defaults and the user's) win.
fn import_values(chart: &Chart, sub: &Chart, dest: &mut Map) {
    let source = Value::Map(sub.values.0.clone());
    for dep in chart.metadata.dependencies.iter().filter(|d| d.name == sub.metadata.name) {
        for iv in &dep.import_values {
            let (child, parent) = match iv {
                crate::model::ImportValue::Exports(name) => (format!("exports.{name}"), String::new()),
                crate::model::ImportValue::Map { child, parent } => (child.clone(), parent.clone()),
            };
            let Some(Value::Map(imported)) = lookup_path(&source, &child) else { continue };
            if parent.is_empty() {
                coalesce_values(dest, &imported);
                continue;
            }
            let mut target: &mut Map = dest;
            let parts: Vec<&str> = parent.split('.').collect();
            for part in &parts[..parts.len() - 1] {
                let entry = target.entry(key(part)).or_insert_with(|| Value::Map(Arc::new(Map::new())));
                if !matches!(entry, Value::Map(_)) {
                    *entry = Value::Map(Arc::new(Map::new()));
                }
                let Value::Map(m) = entry else { return };
                target = Arc::make_mut(m);
            }
            let last = key(parts[parts.len() - 1]);
            match target.get_mut(&last) {
                Some(Value::Map(existing)) => coalesce_values(Arc::make_mut(existing), &imported),
                Some(_) => {}
                None => {
                    target.insert(last, Value::Map(imported.clone()));
                }
            }
        }
    }
}

/// The subcharts of `chart` with the name they have here and whether `condition`/`tags`
/// enable them (evaluated on `vals`, the coalesced values of `chart`; tags on `root`).
fn subcharts_of<'a>(chart: &'a Chart, vals: &Value, root: &Value) -> Vec<(&'a Chart, String, bool)> {
    let mut out = Vec::new();
    for sub in &chart.subcharts {
        let deps: Vec<_> = chart.metadata.dependencies.iter().filter(|d| d.name == sub.metadata.name).collect();
        if deps.is_empty() {
            out.push((sub, sub.metadata.name.clone(), true));
            continue;
        }
        for dep in deps {
            let name = dep.alias.clone().unwrap_or_else(|| dep.name.clone());
            let mut enabled = true;
            let mut decided = false;
            if let Some(cond) = &dep.condition {
                for path in cond.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    if let Some(Value::Bool(b)) = lookup_path(vals, path) {
                        enabled = b;
                        decided = true;
                        break;
                    }
                }
            }
            if !decided && !dep.tags.is_empty() {
                let tags = lookup_path(root, "tags");
                let states: Vec<bool> = dep
                    .tags
                    .iter()
                    .filter_map(|t| match tags.as_ref().and_then(|m| m.field(t).cloned()) {
                        Some(Value::Bool(b)) => Some(b),
                        _ => None,
                    })
                    .collect();
                if !states.is_empty() {
                    enabled = states.iter().any(|b| *b);
                }
            }
            out.push((sub, name, enabled));
        }
    }
    out
}

fn lookup_path(v: &Value, path: &str) -> Option<Value> {
    let mut cur = v.clone();
    for part in path.split('.') {
        cur = match &cur {
            Value::Map(m) => m.get(part)?.clone(),
            _ => return None,
        };
    }
    Some(cur)
}

fn build_tree<'a>(chart: &'a Chart, name: String, prefix: String, values: Value, is_root: bool) -> ChartNode<'a> {
    let mut subcharts = Vec::new();
    for (sub, alias, enabled) in subcharts_of(chart, &values, &values) {
        if !enabled {
            continue;
        }
        let sv = lookup_path(&values, &alias).unwrap_or(Value::Nil);
        subcharts.push(build_tree(sub, alias.clone(), format!("{prefix}/charts/{alias}"), sv, false));
    }
    let mut node = ChartNode {
        chart,
        name,
        prefix,
        values,
        subcharts,
        is_root,
        chart_value: Value::Nil,
        files_value: files_value(chart),
    };
    node.chart_value = chart_value(&node);
    node
}

// ---- the objects templates see -------------------------------------------------------

const API_VERSIONS: &[&str] = &[
    "v1",
    "admissionregistration.k8s.io/v1",
    "admissionregistration.k8s.io/v1alpha1",
    "admissionregistration.k8s.io/v1beta1",
    "internal.apiserver.k8s.io/v1alpha1",
    "apps/v1",
    "apps/v1beta1",
    "apps/v1beta2",
    "authentication.k8s.io/v1",
    "authentication.k8s.io/v1alpha1",
    "authentication.k8s.io/v1beta1",
    "authorization.k8s.io/v1",
    "authorization.k8s.io/v1beta1",
    "autoscaling/v1",
    "autoscaling/v2",
    "autoscaling/v2beta1",
    "autoscaling/v2beta2",
    "batch/v1",
    "batch/v1beta1",
    "certificates.k8s.io/v1",
    "certificates.k8s.io/v1beta1",
    "certificates.k8s.io/v1alpha1",
    "coordination.k8s.io/v1alpha2",
    "coordination.k8s.io/v1beta1",
    "coordination.k8s.io/v1",
    "discovery.k8s.io/v1",
    "discovery.k8s.io/v1beta1",
    "events.k8s.io/v1",
    "events.k8s.io/v1beta1",
    "extensions/v1beta1",
    "flowcontrol.apiserver.k8s.io/v1",
    "flowcontrol.apiserver.k8s.io/v1beta1",
    "flowcontrol.apiserver.k8s.io/v1beta2",
    "flowcontrol.apiserver.k8s.io/v1beta3",
    "networking.k8s.io/v1",
    "networking.k8s.io/v1beta1",
    "node.k8s.io/v1",
    "node.k8s.io/v1alpha1",
    "node.k8s.io/v1beta1",
    "policy/v1",
    "policy/v1beta1",
    "rbac.authorization.k8s.io/v1",
    "rbac.authorization.k8s.io/v1beta1",
    "rbac.authorization.k8s.io/v1alpha1",
    "resource.k8s.io/v1",
    "resource.k8s.io/v1beta2",
    "resource.k8s.io/v1beta1",
    "resource.k8s.io/v1alpha3",
    "scheduling.k8s.io/v1alpha1",
    "scheduling.k8s.io/v1beta1",
    "scheduling.k8s.io/v1",
    "storage.k8s.io/v1beta1",
    "storage.k8s.io/v1",
    "storage.k8s.io/v1alpha1",
    "storagemigration.k8s.io/v1beta1",
    "apiextensions.k8s.io/v1beta1",
    "apiextensions.k8s.io/v1",
];

fn m(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(Arc::new(entries.into_iter().map(|(k, v)| (key(k), v)).collect()))
}

fn st(s: &str) -> Value {
    Value::String(s.into())
}

fn capabilities(opts: &RenderOptions, kube: &funcs::SemVer) -> Value {
    let version = normalize_kube_version(&opts.kube_version);
    let (major, minor) = kube.major_minor();
    let mut apis: Vec<Value> = API_VERSIONS.iter().map(|a| st(a)).collect();
    apis.extend(opts.api_versions.iter().map(|a| st(a)));
    m(vec![
        (
            "KubeVersion",
            m(vec![
                ("Version", st(&version)),
                ("GitVersion", st(&version)),
                ("Major", st(&major.to_string())),
                ("Minor", st(&minor.to_string())),
            ]),
        ),
        ("APIVersions", Value::List(apis.into())),
        (
            "HelmVersion",
            m(vec![
                ("Version", st("v4.1.4")),
                ("GitCommit", st("")),
                ("GitTreeState", st("")),
                ("GoVersion", st("")),
                ("KubeClientVersion", st("v1.35")),
            ]),
        ),
    ])
}

fn release_value(opts: &RenderOptions) -> Value {
    m(vec![
        ("IsInstall", Value::Bool(!opts.is_upgrade)),
        ("IsUpgrade", Value::Bool(opts.is_upgrade)),
        ("Name", st(&opts.release_name)),
        ("Namespace", st(&opts.namespace)),
        ("Revision", Value::Int(i64::from(opts.revision))),
        ("Service", st("Helm")),
    ])
}

fn chart_value(node: &ChartNode<'_>) -> Value {
    let md = &node.chart.metadata;
    let opt = |o: &Option<String>| st(o.as_deref().unwrap_or(""));
    let strs = |l: &[String]| Value::List(l.iter().map(|x| st(x)).collect::<Vec<_>>().into());
    m(vec![
        ("APIVersion", st(&md.api_version)),
        ("Annotations", m(md.annotations.iter().map(|(k, v)| (k.as_str(), st(v))).collect())),
        ("AppVersion", opt(&md.app_version)),
        ("Condition", st("")),
        (
            "Dependencies",
            Value::List(
                md.dependencies
                    .iter()
                    .map(|d| {
                        m(vec![
                            ("Name", st(&d.name)),
                            ("Version", opt(&d.version)),
                            ("Repository", opt(&d.repository)),
                            ("Condition", opt(&d.condition)),
                            ("Alias", opt(&d.alias)),
                            ("Tags", strs(&d.tags)),
                        ])
                    })
                    .collect::<Vec<_>>()
                    .into(),
            ),
        ),
        ("Deprecated", Value::Bool(md.deprecated)),
        ("Description", opt(&md.description)),
        ("Home", opt(&md.home)),
        ("Icon", opt(&md.icon)),
        ("IsRoot", Value::Bool(node.is_root)),
        ("Keywords", strs(&md.keywords)),
        ("KubeVersion", opt(&md.kube_version)),
        (
            "Maintainers",
            Value::List(
                md.maintainers
                    .iter()
                    .map(|mt| m(vec![("Name", st(&mt.name)), ("Email", opt(&mt.email)), ("URL", opt(&mt.url))]))
                    .collect::<Vec<_>>()
                    .into(),
            ),
        ),
        ("Name", st(&node.name)),
        ("Sources", strs(&md.sources)),
        ("Tags", st("")),
        (
            "Type",
            st(match md.chart_type {
                ChartType::Application => {
                    if md.api_version == "v1" {
                        ""
                    } else {
                        "application"
                    }
                }
                ChartType::Library => "library",
            }),
        ),
        ("Version", st(&md.version)),
    ])
}

fn files_value(chart: &Chart) -> Value {
    Value::Map(Arc::new(
        chart.files.iter().map(|f| (key(&f.path), Value::String(String::from_utf8_lossy(&f.data).into()))).collect(),
    ))
}

fn template_data(node: &ChartNode<'_>, name: &str, caps: &Value, release: &Value) -> Value {
    m(vec![
        ("Capabilities", caps.clone()),
        ("Chart", node.chart_value.clone()),
        ("Files", node.files_value.clone()),
        ("Release", release.clone()),
        ("Subcharts", m(Vec::new())),
        ("Template", m(vec![("BasePath", st(&format!("{}/templates", node.prefix))), ("Name", st(name))])),
        ("Values", node.values.clone()),
    ])
}

// ---- parsing --------------------------------------------------------------------------

fn parse(name: &str, text: &str, funcs: &FuncMap) -> Result<(ListNode, Vec<(String, ListNode)>), RenderError> {
    let parser = Parser::with_name(Some(name), text, "{{", "}}").map_err(|e| parse_error(name, e))?;
    let (mut tree, defines) = parser.parse().map_err(|e| parse_error(name, e))?;
    let mut rw = Rewriter { name, text, funcs: Some(funcs), error: None, exec: name.to_string() };
    rw.list(&mut tree);
    let mut out = Vec::new();
    for mut d in defines {
        rw.exec = d.name.to_string();
        rw.list(&mut d.body);
        out.push((d.name.to_string(), d.body));
    }
    if let Some(e) = rw.error {
        return Err(e);
    }
    Ok((tree, out))
}

fn parse_error(name: &str, e: TemplateError) -> RenderError {
    match e {
        TemplateError::Parse { line, message, .. } | TemplateError::Lex { line, message, .. } => {
            RenderError::Template(format!("parse error at ({name}:{line}): {message}"))
        }
        other => RenderError::Template(format!("parse error in {name}: {other}")),
    }
}

/// Rewrites a parsed template for Helm's semantics on gotmpl: method calls become
/// functions, `required`/`fail` learn their call site, printed values go through Go's
/// `%v`, and unknown functions fail at parse time as in Go.
struct Rewriter<'a> {
    name: &'a str,
    text: &'a str,
    /// The functions a call may name; `None`: not checked (`tpl`, where gotmpl reports it).
    funcs: Option<&'a FuncMap>,
    error: Option<RenderError>,
    /// The template being executed as Go names it: the file, or the `define`.
    exec: String,
}

impl Rewriter<'_> {
    fn list(&mut self, l: &mut ListNode) {
        for n in &mut l.nodes {
            self.node(n);
        }
    }

    fn node(&mut self, n: &mut Node) {
        match n {
            Node::List(l) => self.list(l),
            Node::Action(a) => {
                // `$_ := set $d "k" v` changes `$d` in Go; gotmpl maps are values, so
                // the call becomes `$d = set $d "k" v`.
                if let Some(var) = mutated_variable(&a.pipe) {
                    a.pipe.decl = vec![var];
                    a.pipe.is_assign = true;
                }
                self.pipe(&mut a.pipe);
                if a.pipe.decl.is_empty() {
                    let pos = a.pipe.pos;
                    a.pipe
                        .commands
                        .push(CommandNode { pos, args: vec![Expr::Identifier(pos, SmolStr::new("__print"))] });
                }
            }
            Node::If(b) | Node::Range(b) | Node::With(b) => {
                self.pipe(&mut b.pipe);
                self.list(&mut b.body);
                if let Some(e) = &mut b.else_body {
                    self.list(e);
                }
            }
            Node::Template(t) => {
                if let Some(p) = &mut t.pipe {
                    self.pipe(p);
                }
            }
            Node::Define(d) => self.list(&mut d.body),
            _ => {}
        }
    }

    fn pipe(&mut self, p: &mut PipeNode) {
        for c in &mut p.commands {
            self.command(c);
        }
    }

    fn command(&mut self, c: &mut CommandNode) {
        for a in c.args.iter_mut().skip(1) {
            self.expr(a);
        }
        if let Some(head) = c.args.first_mut() {
            if let Expr::Identifier(pos, name) = head {
                let pos = *pos;
                match name.as_str() {
                    "required" | "fail" => {
                        let site = self.site(pos.offset, pos.line);
                        *name = SmolStr::new(format!("__{name}"));
                        c.args.insert(1, Expr::String(pos, site.into()));
                    }
                    n if self.funcs.is_some_and(|f| !f.contains_key(n))
                        && !GO_BUILTINS.contains(&n)
                        && self.error.is_none() =>
                    {
                        self.error = Some(RenderError::Template(format!(
                            "parse error at ({}:{}): function {:?} not defined",
                            self.name, pos.line, n
                        )));
                    }
                    _ => {}
                }
                return;
            }
            if let Some((function, recv)) = self.method_call(head) {
                let mut args = vec![function, recv];
                args.extend(c.args.drain(1..));
                c.args = args;
                return;
            }
            self.expr(head);
        }
    }

    /// `file:line:col` as Helm prints a call site (col: byte offset in the line).
    fn site(&self, offset: usize, line: usize) -> String {
        let start = self.text[..offset.min(self.text.len())].rfind('\n').map_or(0, |i| i + 1);
        format!("{}:{}:{}", self.name, line, offset.saturating_sub(start))
    }

    /// A command head `recv.Method` (no more fields after the method): the function
    /// and the receiver.
    fn method_call(&mut self, head: &mut Expr) -> Option<(Expr, Expr)> {
        let (pos, fields) = match head {
            Expr::Field(p, f) | Expr::Variable(p, _, f) | Expr::Chain(p, _, f) => (*p, f.clone()),
            _ => return None,
        };
        let i = fields.iter().position(|f| METHODS.contains(&f.as_str()))?;
        if i != fields.len() - 1 {
            self.expr(head);
            return None;
        }
        let recv = receiver(head, &fields[..i]);
        let mut recv = recv;
        self.expr(&mut recv);
        Some((Expr::Identifier(pos, SmolStr::new(format!("__m_{}", fields[i]))), recv))
    }

    /// Any expression: a method in a field chain is called (with no arguments), other
    /// field walks become strict ([`Self::strict_fields`]).
    fn expr(&mut self, e: &mut Expr) {
        match e {
            Expr::Pipe(_, p) => self.pipe(p),
            Expr::Chain(_, inner, _) => self.expr(inner),
            _ => {}
        }
        let (pos, fields) = match e {
            Expr::Field(p, f) | Expr::Variable(p, _, f) | Expr::Chain(p, _, f) => (*p, f.clone()),
            _ => return,
        };
        let Some(i) = fields.iter().position(|f| METHODS.contains(&f.as_str())) else {
            self.strict_fields(e);
            return;
        };
        let recv = receiver(e, &fields[..i]);
        let call = PipeNode {
            pos,
            decl: Vec::new(),
            commands: vec![CommandNode {
                pos,
                args: vec![Expr::Identifier(pos, SmolStr::new(format!("__m_{}", fields[i]))), recv],
            }],
            is_assign: false,
        };
        let rest: Vec<SmolStr> = fields[i + 1..].to_vec();
        *e = if rest.is_empty() {
            Expr::Pipe(pos, call)
        } else {
            Expr::Chain(pos, Box::new(Expr::Pipe(pos, call)), rest)
        };
        self.expr(e);
    }
}

/// The functions that change the map they are given (sprig's `set`, `unset`, `merge`…).
const MUTATORS: &[&str] = &["set", "unset", "merge", "mergeOverwrite", "mustMerge", "mustMergeOverwrite"];

/// `$_ := set $d …` (and the other mutators): the variable whose map it changes.
fn mutated_variable(p: &PipeNode) -> Option<SmolStr> {
    if p.is_assign || p.decl.len() != 1 || p.decl[0].as_str() != "$_" || p.commands.len() != 1 {
        return None;
    }
    let args = &p.commands[0].args;
    match (args.first(), args.get(1)) {
        (Some(Expr::Identifier(_, f)), Some(Expr::Variable(_, var, fields)))
            if MUTATORS.contains(&f.as_str()) && fields.is_empty() && var.as_str() != "$" =>
        {
            Some(var.clone())
        }
        _ => None,
    }
}

impl Rewriter<'_> {
    /// Go's field walk with Helm's `missingkey=zero`: a field of a missing (nil) value
    /// is an error (`nil pointer evaluating interface {}.b`), where gotmpl would give
    /// nil. `.a.b…` and `$x.a…` become `__field SITE RECEIVER "a" "b"…`.
    fn strict_fields(&mut self, e: &mut Expr) {
        let (pos, recv, recv_text, walked) = match e {
            Expr::Field(p, f) if f.len() >= 2 => {
                (*p, Expr::Field(*p, vec![f[0].clone()]), format!(".{}", f[0]), f[1..].to_vec())
            }
            Expr::Variable(p, name, f) if f.len() >= 2 || (!f.is_empty() && name.as_str() != "$") => {
                (*p, Expr::Variable(*p, name.clone(), Vec::new()), name.to_string(), f.clone())
            }
            _ => return,
        };
        let text = format!("{recv_text}.{}", walked.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("."));
        let site = self.site(pos.offset + recv_text.len(), pos.line);
        let header = format!("{site}\n  executing {:?} at <{text}>:\n    ", self.exec);
        let mut args = vec![Expr::Identifier(pos, SmolStr::new("__field")), Expr::String(pos, header.into()), recv];
        args.extend(walked.iter().map(|f| Expr::String(pos, f.as_str().into())));
        *e = Expr::Pipe(
            pos,
            PipeNode { pos, decl: Vec::new(), commands: vec![CommandNode { pos, args }], is_assign: false },
        );
    }
}

/// The same expression with only `fields` (the receiver of a method).
fn receiver(e: &Expr, fields: &[SmolStr]) -> Expr {
    match e {
        Expr::Field(p, _) if fields.is_empty() => Expr::Dot(*p),
        Expr::Field(p, _) => Expr::Field(*p, fields.to_vec()),
        Expr::Variable(p, n, _) => Expr::Variable(*p, n.clone(), fields.to_vec()),
        Expr::Chain(_, inner, _) if fields.is_empty() => (**inner).clone(),
        Expr::Chain(p, inner, _) => Expr::Chain(*p, inner.clone(), fields.to_vec()),
        other => other.clone(),
    }
}

// ---- functions needing the template set ---------------------------------------------------

fn helm_err(msg: String) -> TemplateError {
    TemplateError::Exec(format!("{HELM_ERR}{msg}"))
}

fn helm_funcs(cell: &Arc<OnceLock<Template>>, depth: &Arc<AtomicUsize>, budget: &Arc<Budget>) -> FuncMap {
    let mut f = funcs::pure();
    f.insert(
        "__print".into(),
        Arc::new(|a: &[Value]| {
            Ok(match a.last() {
                None | Some(Value::Nil) => Value::Nil,
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(v) => Value::String(go_string(v).into()),
            })
        }),
    );
    f.insert(
        "__required".into(),
        Arc::new(|a: &[Value]| {
            let site = a.first().map(go_string).unwrap_or_default();
            let msg = a.get(1).map(go_string).unwrap_or_default();
            match a.get(2) {
                None | Some(Value::Nil) => Err(helm_err(format!("execution error at ({site}): {msg}"))),
                Some(Value::String(s)) if s.is_empty() => Err(helm_err(format!("execution error at ({site}): {msg}"))),
                Some(v) => Ok(v.clone()),
            }
        }),
    );
    f.insert(
        "__fail".into(),
        Arc::new(|a: &[Value]| {
            let site = a.first().map(go_string).unwrap_or_default();
            let msg = a.get(1).map(go_string).unwrap_or_default();
            Err(helm_err(format!("execution error at ({site}): {msg}")))
        }),
    );
    f.insert(
        "__field".into(),
        Arc::new(|a: &[Value]| {
            let header = a.first().map(go_string).unwrap_or_default();
            let mut cur = a.get(1).cloned().unwrap_or(Value::Nil);
            for f in a.iter().skip(2) {
                let f = go_string(f);
                cur = match &cur {
                    Value::Map(m) => m.get(f.as_str()).cloned().unwrap_or(Value::Nil),
                    Value::Nil => return Err(helm_err(format!("{header}nil pointer evaluating interface {{}}.{f}"))),
                    _ => return Err(helm_err(format!("{header}can't evaluate field {f} in type interface {{}}"))),
                };
            }
            Ok(cur)
        }),
    );
    f.insert("__m_Get".into(), Arc::new(|a: &[Value]| method(a, "Get")));
    f.insert("__m_GetBytes".into(), Arc::new(|a: &[Value]| method(a, "GetBytes")));
    f.insert("__m_Glob".into(), Arc::new(|a: &[Value]| method(a, "Glob")));
    f.insert("__m_Lines".into(), Arc::new(|a: &[Value]| method(a, "Lines")));
    f.insert("__m_AsConfig".into(), Arc::new(|a: &[Value]| method(a, "AsConfig")));
    f.insert("__m_AsSecrets".into(), Arc::new(|a: &[Value]| method(a, "AsSecrets")));
    f.insert("__m_Has".into(), Arc::new(|a: &[Value]| method(a, "Has")));

    // Weak: the template set holds these functions; a strong handle would be a cycle.
    let (c, d, b) = (Arc::downgrade(cell), depth.clone(), Arc::downgrade(budget));
    f.insert(
        "include".into(),
        Arc::new(move |a: &[Value]| {
            let name = a.first().map(go_string).unwrap_or_default();
            let data = a.get(1).cloned().unwrap_or(Value::Nil);
            let cell = c.upgrade().ok_or_else(|| TemplateError::Exec("include: the render is over".into()))?;
            let set = cell.get().ok_or_else(|| TemplateError::Exec("include: templates not ready".into()))?;
            if set.lookup(&name).is_none() {
                return Err(TemplateError::Exec(format!(
                    "error calling include: template: no template {name:?} associated with template \"gotpl\""
                )));
            }
            if d.fetch_add(1, Ordering::Relaxed) >= MAX_INCLUDE_DEPTH {
                d.fetch_sub(1, Ordering::Relaxed);
                return Err(helm_err(format!(
                    "rendering template has a nested reference name: {name}: unable to execute template"
                )));
            }
            let budget = b.upgrade().ok_or_else(|| TemplateError::Exec("include: the render is over".into()))?;
            let r = execute(set, &name, &data, &budget);
            d.fetch_sub(1, Ordering::Relaxed);
            r.map(|s| Value::String(s.into()))
        }),
    );
    let (c, d, b) = (Arc::downgrade(cell), depth.clone(), Arc::downgrade(budget));
    f.insert(
        "tpl".into(),
        Arc::new(move |a: &[Value]| {
            let text = a.first().map(funcs::strval).unwrap_or_default();
            let data = a.get(1).cloned().unwrap_or(Value::Nil);
            let cell = c.upgrade().ok_or_else(|| TemplateError::Exec("tpl: the render is over".into()))?;
            let set = cell.get().ok_or_else(|| TemplateError::Exec("tpl: templates not ready".into()))?;
            if d.fetch_add(1, Ordering::Relaxed) >= MAX_INCLUDE_DEPTH {
                d.fetch_sub(1, Ordering::Relaxed);
                return Err(helm_err(
                    "rendering template has a nested reference name: tpl: unable to execute template".into(),
                ));
            }
            let result = (|| {
                let parser = Parser::with_name(Some("gotpl"), &text, "{{", "}}")?;
                let (mut tree, defines) = parser.parse()?;
                let mut rw = Rewriter { name: "gotpl", text: &text, funcs: None, error: None, exec: "gotpl".into() };
                rw.list(&mut tree);
                let mut t = set.clone().add_parse_tree("\u{1}tpl", tree);
                for mut def in defines {
                    rw.list(&mut def.body);
                    t = t.add_parse_tree(def.name.as_str(), def.body);
                }
                let budget = b.upgrade().ok_or_else(|| TemplateError::Exec("tpl: the render is over".into()))?;
                execute(&t, "\u{1}tpl", &data, &budget)
            })();
            d.fetch_sub(1, Ordering::Relaxed);
            result.map(|s| Value::String(s.replace("<no value>", "").into()))
        }),
    );
    f
}

/// Helm's methods on `.Files` and `.Capabilities.APIVersions`; on anything else, a
/// field of that name (so `.Values.Get` still reads a value called `Get`).
fn method(a: &[Value], name: &str) -> Result<Value, TemplateError> {
    let recv = a.first().cloned().unwrap_or(Value::Nil);
    let args = &a[1.min(a.len())..];
    let files = |v: &Value| match v {
        Value::Map(m) => (**m).clone(),
        _ => Map::new(),
    };
    match (name, &recv, args.first()) {
        ("Has", Value::List(l), Some(want)) => Ok(Value::Bool(l.iter().any(|v| v == want))),
        ("Get" | "GetBytes", Value::Map(m), Some(path)) => {
            Ok(m.get(go_string(path).as_str()).cloned().unwrap_or(Value::String("".into())))
        }
        ("Lines", Value::Map(m), Some(path)) => {
            let text = m.get(go_string(path).as_str()).map(go_string).unwrap_or_default();
            if text.is_empty() {
                return Ok(Value::List(Vec::new().into()));
            }
            let text = text.strip_suffix('\n').unwrap_or(&text);
            Ok(Value::List(text.split('\n').map(|l| Value::String(l.into())).collect::<Vec<_>>().into()))
        }
        ("Glob", Value::Map(m), Some(pattern)) => {
            let p = go_string(pattern);
            Ok(Value::Map(Arc::new(
                m.iter().filter(|(k, _)| glob_double_star(&p, k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
            )))
        }
        ("AsConfig" | "AsSecrets", Value::Map(m), None) if !m.contains_key(name) => {
            let fm = files(&recv);
            let mut out: BTreeMap<Arc<str>, Value> = BTreeMap::new();
            for (k, v) in fm {
                let base = k.rsplit('/').next().unwrap_or(&k).to_string();
                let content = go_string(&v);
                let value = if name == "AsSecrets" {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(content.as_bytes())
                } else {
                    content
                };
                out.insert(Arc::from(base), Value::String(value.into()));
            }
            if out.is_empty() {
                return Ok(Value::String("".into()));
            }
            Ok(Value::String(yaml::to_yaml(&Value::Map(Arc::new(out))).into()))
        }
        (_, Value::Map(m), None) => Ok(m.get(name).cloned().unwrap_or(Value::Nil)),
        (_, Value::Nil, None) => Ok(Value::Nil),
        _ => Err(TemplateError::Exec(format!("can't evaluate field {name} in type {}", recv.type_name()))),
    }
}

/// `.Files.Glob` patterns (gobwas/glob with `/` separators: `**` crosses directories).
fn glob_double_star(pattern: &str, path: &str) -> bool {
    if let Some((pre, post)) = pattern.split_once("**") {
        let post = post.trim_start_matches('/');
        if !path.starts_with(pre) {
            return false;
        }
        let rest = &path[pre.len()..];
        if post.is_empty() {
            return true;
        }
        let parts: Vec<&str> = rest.split('/').collect();
        return (0..parts.len()).any(|i| glob_double_star(post, &parts[i..].join("/")));
    }
    crate::load::glob_match(pattern, path)
}

fn exec_error(name: &str, e: TemplateError) -> RenderError {
    let text = e.to_string();
    if let Some(i) = text.find(HELM_ERR) {
        return RenderError::Template(text[i + HELM_ERR.len()..].to_string());
    }
    RenderError::Template(format!("template: {name}: executing {name:?}: {text}"))
}

// ---- output ---------------------------------------------------------------------------

/// Helm's `SplitManifests`: documents separated by `---` lines, each trimmed.
pub(crate) fn split_manifests(text: &str) -> Vec<String> {
    let re = sep_regex();
    re.split(text.trim()).filter(|d| !d.is_empty()).map(|d| d.trim().to_string()).collect()
}

fn sep_regex() -> &'static regex::Regex {
    static SEP: OnceLock<regex::Regex> = OnceLock::new();
    SEP.get_or_init(|| regex::Regex::new(r"(?:^|\s*\n)---\s*").unwrap_or_else(|_| unreachable_regex()))
}

#[expect(clippy::panic, reason = "the separator pattern is a constant that compiles")]
fn unreachable_regex() -> regex::Regex {
    panic!("constant regex")
}

type Sorted = (Vec<Manifest>, Vec<Hook>);

fn sort_manifests(outputs: &[(String, String)]) -> Result<Sorted, RenderError> {
    let mut manifests = Vec::new();
    let mut hooks = Vec::new();
    for (path, content) in outputs {
        if content.trim().is_empty() {
            continue;
        }
        for doc in split_manifests(content) {
            let head = yaml::from_yaml(&doc).map_err(|e| RenderError::Yaml {
                path: path.clone(),
                message: format!("error converting YAML to JSON: yaml: {e}"),
            })?;
            let get = |v: &Value, p: &str| lookup_path(v, p).map(|x| funcs::strval(&x)).unwrap_or_default();
            let manifest = Manifest {
                path: path.clone(),
                api_version: get(&head, "apiVersion"),
                kind: get(&head, "kind"),
                name: get(&head, "metadata.name"),
                content: doc.clone(),
            };
            let annotations = lookup_path(&head, "metadata.annotations");
            let hook_ann = annotations.as_ref().and_then(|a| a.field("helm.sh/hook").cloned());
            let Some(hook_types) = hook_ann else {
                manifests.push(manifest);
                continue;
            };
            let mut events = Vec::new();
            let mut unknown = false;
            for t in funcs::strval(&hook_types).split(',') {
                match HookEvent::parse(&t.trim().to_lowercase()) {
                    Some(e) => events.push(e),
                    None => unknown = true,
                }
            }
            if unknown {
                continue;
            }
            let weight = annotations
                .as_ref()
                .and_then(|a| a.field("helm.sh/hook-weight").cloned())
                .and_then(|w| funcs::strval(&w).trim().parse().ok())
                .unwrap_or(0);
            let delete_policies = annotations
                .as_ref()
                .and_then(|a| a.field("helm.sh/hook-delete-policy").cloned())
                .map(|p| funcs::strval(&p).split(',').filter_map(|x| HookDeletePolicy::parse(x.trim())).collect())
                .unwrap_or_default();
            hooks.push(Hook { manifest, events, weight, delete_policies });
        }
    }
    crate::sort::by_kind(&mut manifests, |m| m.kind.as_str());
    crate::sort::by_kind(&mut hooks, |h| h.manifest.kind.as_str());
    Ok((manifests, hooks))
}
