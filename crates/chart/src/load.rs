//! Loading a chart from a directory or a `.tgz`, as Helm's loader does: `Chart.yaml`,
//! `values.yaml`, `templates/`, `charts/` (subcharts as directories or archives), and
//! every other file kept for `.Files`. `.helmignore` patterns are honoured.
//!
//! Charts are client input: sizes are capped ([`MAX_FILE_BYTES`], [`MAX_CHART_BYTES`],
//! [`MAX_ARCHIVE_BYTES`]) and subcharts may nest only [`MAX_DEPTH`] deep.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::model::{Chart, ChartFile, ChartType, Dependency, ImportValue, Maintainer, Metadata};
use crate::values::Values;
use crate::yaml;
use gotmpl::Value;

/// The largest single file of a chart.
pub const MAX_FILE_BYTES: usize = 5 * 1024 * 1024;
/// The most a whole chart (all files, subcharts included, uncompressed) may hold.
pub const MAX_CHART_BYTES: usize = 20 * 1024 * 1024;
/// The largest `.tgz` accepted.
pub const MAX_ARCHIVE_BYTES: usize = 10 * 1024 * 1024;
/// How deep subcharts may nest.
const MAX_DEPTH: usize = 10;
/// How many files a chart may have.
const MAX_FILES: usize = 10_000;

/// Why a chart could not be loaded. `path` names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Chart.yaml is missing or invalid (no name, no version, bad YAML).
    #[error("{path}: {message}")]
    Chart { path: String, message: String },
    /// values.yaml is not valid YAML.
    #[error("{path}: {message}")]
    Values { path: String, message: String },
    /// The chart or one of its files is larger than the caps allow.
    #[error("{0}")]
    TooLarge(String),
    /// The archive is not a gzip-compressed tar of one chart directory.
    #[error("chart archive: {0}")]
    Archive(String),
}

/// Loads the chart in directory `dir` (and its subcharts in `dir/charts`).
pub fn load_dir(dir: &Path) -> Result<Chart, LoadError> {
    let mut files = Vec::new();
    let mut total = 0usize;
    let inside = dir.canonicalize().map_err(|e| LoadError::Io { path: dir.display().to_string(), source: e })?;
    walk(&Walk { root: dir, inside: &inside }, dir, 0, &mut files, &mut total)?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let label = dir.display().to_string();
    from_files(&label, files, 0)
}

/// Deepest directory nesting read (a symbolic link may make a loop).
const MAX_DIR_DEPTH: usize = 32;

/// The chart directory as given (for relative names) and resolved (the bound every
/// symbolic link must stay within: a chart on the server is loaded from a checkout, and
/// a link to `/etc` or the data directory would publish the server's files).
struct Walk<'a> {
    root: &'a Path,
    inside: &'a Path,
}

fn walk(w: &Walk, dir: &Path, depth: usize, out: &mut Vec<ChartFile>, total: &mut usize) -> Result<(), LoadError> {
    let root = w.root;
    let io = |path: &Path, source| LoadError::Io { path: path.display().to_string(), source };
    if depth > MAX_DIR_DEPTH {
        return Err(LoadError::TooLarge(format!(
            "{}: directories nested more than {MAX_DIR_DEPTH} deep (a symbolic link loop?)",
            dir.display()
        )));
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| io(dir, e))?;
    entries.sort();
    for path in entries {
        if std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?.file_type().is_symlink() {
            let target = path.canonicalize().map_err(|e| io(&path, e))?;
            if !target.starts_with(w.inside) {
                let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
                return Err(LoadError::Chart {
                    path: rel,
                    message: format!(
                        "a symbolic link to {}, outside the chart; only links within the chart directory are followed",
                        target.display()
                    ),
                });
            }
        }
        let meta = std::fs::metadata(&path).map_err(|e| io(&path, e))?;
        if meta.is_dir() {
            walk(w, &path, depth + 1, out, total)?;
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        let len = meta.len() as usize;
        if len > MAX_FILE_BYTES {
            return Err(LoadError::TooLarge(format!(
                "{rel}: {len} bytes, more than the {MAX_FILE_BYTES} a chart file may have"
            )));
        }
        *total += len;
        if *total > MAX_CHART_BYTES {
            return Err(LoadError::TooLarge(format!("the chart holds more than {MAX_CHART_BYTES} bytes")));
        }
        if out.len() >= MAX_FILES {
            return Err(LoadError::TooLarge(format!("the chart has more than {MAX_FILES} files")));
        }
        let data = std::fs::read(&path).map_err(|e| io(&path, e))?;
        out.push(ChartFile { path: rel, data });
    }
    Ok(())
}

/// Loads a chart from a `.tgz` (what `helm package` writes: one top directory).
pub fn load_archive(bytes: &[u8]) -> Result<Chart, LoadError> {
    load_archive_at(bytes, 0, "chart archive")
}

fn load_archive_at(bytes: &[u8], depth: usize, label: &str) -> Result<Chart, LoadError> {
    if bytes.len() > MAX_ARCHIVE_BYTES {
        return Err(LoadError::TooLarge(format!(
            "{label}: {} bytes, more than the {MAX_ARCHIVE_BYTES} a chart archive may have",
            bytes.len()
        )));
    }
    let gz = flate2::read::GzDecoder::new(bytes);
    // The cap on the decompressed size guards against gzip bombs.
    let mut tar = tar::Archive::new(gz.take(MAX_CHART_BYTES as u64 + 1));
    let mut files: Vec<ChartFile> = Vec::new();
    let mut total = 0usize;
    let mut top: Option<String> = None;
    let entries = tar.entries().map_err(|e| LoadError::Archive(format!("{label}: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| LoadError::Archive(format!("{label}: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name =
            entry.path().map_err(|e| LoadError::Archive(format!("{label}: {e}")))?.to_string_lossy().replace('\\', "/");
        let name = name.trim_start_matches("./").to_string();
        if name.split('/').any(|part| part == "..") {
            return Err(LoadError::Archive(format!("{label}: the entry {name:?} points outside the chart")));
        }
        let Some((first, rest)) = name.split_once('/') else {
            // Helm ignores a pax_global_header and loose files at the top.
            continue;
        };
        match &top {
            None => top = Some(first.to_string()),
            Some(t) if t != first => {
                return Err(LoadError::Archive(format!(
                    "{label}: more than one top directory ({t:?} and {first:?}); a chart archive holds one chart"
                )));
            }
            Some(_) => {}
        }
        let size = entry.header().size().unwrap_or(0) as usize;
        if size > MAX_FILE_BYTES {
            return Err(LoadError::TooLarge(format!(
                "{rest}: more than the {MAX_FILE_BYTES} bytes a chart file may have"
            )));
        }
        total += size;
        if total > MAX_CHART_BYTES || files.len() >= MAX_FILES {
            return Err(LoadError::TooLarge(format!(
                "{label}: the chart is larger than {MAX_CHART_BYTES} bytes or {MAX_FILES} files"
            )));
        }
        let mut data = Vec::with_capacity(size);
        entry.read_to_end(&mut data).map_err(|e| LoadError::Archive(format!("{label}: {rest}: {e}")))?;
        files.push(ChartFile { path: rest.to_string(), data });
    }
    if files.is_empty() {
        return Err(LoadError::Archive(format!("{label}: no chart files in it")));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    from_files(label, files, depth)
}

/// Builds a chart from its files (paths relative to the chart root, sorted).
fn from_files(label: &str, files: Vec<ChartFile>, depth: usize) -> Result<Chart, LoadError> {
    if depth > MAX_DIR_DEPTH {
        return Err(LoadError::TooLarge(format!("{label}: subcharts nest more than {MAX_DEPTH} deep")));
    }
    let ignore =
        files.iter().find(|f| f.path == ".helmignore").map(|f| HelmIgnore::parse(&String::from_utf8_lossy(&f.data)));
    let mut metadata = None;
    let mut values = Values::default();
    let mut values_yaml = None;
    let mut templates = Vec::new();
    let mut other = Vec::new();
    let mut sub_dirs: Vec<(String, Vec<ChartFile>)> = Vec::new();
    let mut sub_archives: Vec<ChartFile> = Vec::new();
    for file in files {
        if let Some(ig) = &ignore
            && ig.ignored(&file.path)
        {
            continue;
        }
        match file.path.as_str() {
            "Chart.yaml" => metadata = Some(parse_metadata(label, &file.data)?),
            "values.yaml" => {
                let text = String::from_utf8_lossy(&file.data);
                values = Values::from_yaml(&text)
                    .map_err(|e| LoadError::Values { path: format!("{label}/values.yaml"), message: e.to_string() })?;
                values_yaml = Some(file);
            }
            "requirements.yaml" | "requirements.lock" | "Chart.lock" | "values.schema.json" => other.push(file),
            p if p.starts_with("templates/") => templates.push(file),
            p if p.starts_with("charts/") => {
                let rest = &p["charts/".len()..];
                match rest.split_once('/') {
                    Some((dir, inner)) => {
                        let inner = ChartFile { path: inner.to_string(), data: file.data };
                        match sub_dirs.iter_mut().find(|(d, _)| d == dir) {
                            Some((_, v)) => v.push(inner),
                            None => sub_dirs.push((dir.to_string(), vec![inner])),
                        }
                    }
                    None if rest.ends_with(".tgz") || rest.ends_with(".tar.gz") => sub_archives.push(file),
                    None => {}
                }
            }
            _ => other.push(file),
        }
    }
    let mut metadata = metadata.ok_or_else(|| LoadError::Chart {
        path: format!("{label}/Chart.yaml"),
        message: "missing: a chart needs a Chart.yaml".into(),
    })?;
    // apiVersion v1 charts list their dependencies in requirements.yaml.
    if metadata.api_version == "v1"
        && metadata.dependencies.is_empty()
        && let Some(req) = other.iter().find(|f| f.path == "requirements.yaml")
    {
        let text = String::from_utf8_lossy(&req.data);
        let doc = yaml::from_yaml(&text)
            .map_err(|e| LoadError::Chart { path: format!("{label}/requirements.yaml"), message: e.to_string() })?;
        if let Some(Value::List(l)) = doc.field("dependencies") {
            metadata.dependencies = l.iter().filter_map(parse_dependency).collect();
        }
    }
    let mut subcharts = Vec::new();
    // Helm loads charts/ in file order; archives and directories alike.
    let mut subs: Vec<(String, Result<Chart, LoadError>)> = Vec::new();
    for (dir, files) in sub_dirs {
        if !files.iter().any(|f| f.path == "Chart.yaml") {
            continue;
        }
        let sub_label = format!("{label}/charts/{dir}");
        subs.push((format!("charts/{dir}"), from_files(&sub_label, files, depth + 1)));
    }
    for archive in sub_archives {
        let sub_label = format!("{label}/{}", archive.path);
        subs.push((archive.path.clone(), load_archive_at(&archive.data, depth + 1, &sub_label)));
    }
    subs.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, sub) in subs {
        subcharts.push(sub?);
    }
    Ok(Chart { metadata, templates, values, values_yaml, files: other, subcharts })
}

fn parse_metadata(label: &str, data: &[u8]) -> Result<Metadata, LoadError> {
    let path = format!("{label}/Chart.yaml");
    let fail = |message: String| LoadError::Chart { path: path.clone(), message };
    let text = String::from_utf8_lossy(data);
    let doc = yaml::from_yaml(&text).map_err(|e| fail(e.to_string()))?;
    let Value::Map(m) = doc else {
        return Err(fail("expected a mapping".into()));
    };
    let s = |k: &str| m.get(k).and_then(scalar_string);
    let list = |k: &str| -> Vec<String> {
        match m.get(k) {
            Some(Value::List(l)) => l.iter().filter_map(scalar_string).collect(),
            _ => Vec::new(),
        }
    };
    let name = s("name").filter(|n| !n.is_empty()).ok_or_else(|| fail("chart.metadata.name is required".into()))?;
    let version =
        s("version").filter(|v| !v.is_empty()).ok_or_else(|| fail("chart.metadata.version is required".into()))?;
    let api_version = s("apiVersion").unwrap_or_default();
    if api_version.is_empty() {
        return Err(fail("chart.metadata.apiVersion is required".into()));
    }
    let chart_type = match s("type").as_deref() {
        None | Some("") | Some("application") => ChartType::Application,
        Some("library") => ChartType::Library,
        Some(other) => return Err(fail(format!("chart type {other:?} is not valid (application or library)"))),
    };
    let maintainers = match m.get("maintainers") {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|v| match v {
                Value::Map(mm) => Some(Maintainer {
                    name: mm.get("name").and_then(scalar_string).unwrap_or_default(),
                    email: mm.get("email").and_then(scalar_string),
                    url: mm.get("url").and_then(scalar_string),
                }),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let annotations = match m.get("annotations") {
        Some(Value::Map(a)) => a.iter().map(|(k, v)| (k.to_string(), scalar_string(v).unwrap_or_default())).collect(),
        _ => Vec::new(),
    };
    let dependencies = match m.get("dependencies") {
        Some(Value::List(l)) => l.iter().filter_map(parse_dependency).collect(),
        _ => Vec::new(),
    };
    Ok(Metadata {
        api_version,
        name,
        version,
        app_version: s("appVersion"),
        description: s("description"),
        kube_version: s("kubeVersion"),
        chart_type,
        home: s("home"),
        icon: s("icon"),
        sources: list("sources"),
        keywords: list("keywords"),
        maintainers,
        deprecated: matches!(m.get("deprecated"), Some(Value::Bool(true))),
        annotations,
        dependencies,
    })
}

fn parse_dependency(v: &Value) -> Option<Dependency> {
    let Value::Map(m) = v else { return None };
    let s = |k: &str| m.get(k).and_then(scalar_string);
    let import_values = match m.get("import-values") {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|iv| match iv {
                Value::String(s) => Some(ImportValue::Exports(s.to_string())),
                Value::Map(im) => Some(ImportValue::Map {
                    child: im.get("child").and_then(scalar_string)?,
                    parent: im.get("parent").and_then(scalar_string)?,
                }),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(Dependency {
        name: s("name")?,
        version: s("version"),
        repository: s("repository"),
        condition: s("condition"),
        tags: match m.get("tags") {
            Some(Value::List(l)) => l.iter().filter_map(scalar_string).collect(),
            _ => Vec::new(),
        },
        alias: s("alias"),
        import_values,
    })
}

/// A scalar as the string Go would have unmarshalled into a `string` field.
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Float(_) | Value::Int(_) => Some(yaml::json_number(v)),
        _ => None,
    }
}

/// `.helmignore`: one pattern a line, `#` comments, `!` negation, a trailing `/` for
/// directories, globs matched against the path and against each of its base names.
struct HelmIgnore {
    rules: Vec<(bool, bool, String)>,
}

impl HelmIgnore {
    fn parse(text: &str) -> Self {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, line),
            };
            let dir_only = pat.ends_with('/');
            rules.push((negate, dir_only, pat.trim_end_matches('/').trim_start_matches("./").to_string()));
        }
        HelmIgnore { rules }
    }

    fn ignored(&self, path: &str) -> bool {
        if path == "Chart.yaml" {
            return false;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let mut ignored = false;
        for (negate, dir_only, pat) in &self.rules {
            // A path is ignored when it, or one of the directories above it, matches.
            let mut hit = false;
            for n in 1..=parts.len() {
                let is_dir = n < parts.len();
                if *dir_only && !is_dir {
                    continue;
                }
                let prefix = parts[..n].join("/");
                let base = parts[n - 1];
                if glob_match(pat, &prefix) || (!pat.contains('/') && glob_match(pat, base)) {
                    hit = true;
                    break;
                }
            }
            if hit {
                ignored = !negate;
            }
        }
        ignored
    }
}

/// Go's `filepath.Match`: `*` (not across `/`), `?`, `[…]` classes.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        if p.is_empty() {
            return n.is_empty();
        }
        match p[0] {
            '*' => (0..=n.len()).take_while(|&i| i == 0 || n[i - 1] != '/').any(|i| go(&p[1..], &n[i..])),
            '?' => !n.is_empty() && n[0] != '/' && go(&p[1..], &n[1..]),
            '[' => {
                let Some(end) = p.iter().skip(1).position(|&c| c == ']').map(|i| i + 1) else {
                    return !n.is_empty() && n[0] == '[' && go(&p[1..], &n[1..]);
                };
                if n.is_empty() {
                    return false;
                }
                let class = &p[1..end];
                let (neg, class) = match class.first() {
                    Some('^') | Some('!') => (true, &class[1..]),
                    _ => (false, class),
                };
                let c = n[0];
                let mut i = 0;
                let mut hit = false;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != neg && go(&p[end + 1..], &n[1..])
            }
            '\\' if p.len() > 1 => !n.is_empty() && n[0] == p[1] && go(&p[2..], &n[1..]),
            c => !n.is_empty() && n[0] == c && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}
