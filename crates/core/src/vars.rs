//! The `${NAME}` language: parsing templates, the built-in names, and rendering.
//!
//! A template is text with references: `${NAME}` (a built-in, pipeline variable, run
//! parameter or declared task output) and `${tasks.<task>.<KEY>}` (an output of a named
//! earlier task). `$${X}` is the escape for a literal `${X}`. A `$` not followed by `{`
//! is plain text, so `$HOME` and `$$` reach a shell untouched.
//!
//! In `script` fields nothing is pasted into the code: the shell expands `${NAME}`
//! from the environment, and task-output references become references to generated
//! environment variables ([`Template::render_for_shell`]). A branch name such as
//! `$(touch /tmp/pwned)` therefore stays data.

use std::collections::BTreeMap;
use std::fmt;

/// Names every run defines. `WHARF_*` and `CI` are per task (set in task fields and
/// scripts only).
pub const BUILTINS: &[&str] = &[
    "BUILD_ID",
    "SYS_TIMESTAMP",
    "SYS_INCREMENT",
    "GIT_URL",
    "GIT_BRANCH",
    "GIT_TAG",
    "GIT_COMMIT",
    "PIPELINE_NAME",
    "RUN_CAUSE",
    "WHARF_OUTPUT",
    "WHARF_WORKSPACE",
    "WHARF_RUN",
    "WHARF_STAGE",
    "WHARF_TASK",
    "CI",
];

pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

/// One reference inside a template.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VarRef {
    /// `${NAME}`
    Name(String),
    /// `${tasks.<task>.<KEY>}`
    TaskOutput { task: String, key: String },
}

impl fmt::Display for VarRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VarRef::Name(name) => write!(f, "${{{name}}}"),
            VarRef::TaskOutput { task, key } => write!(f, "${{tasks.{task}.{key}}}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Text(String),
    Ref(VarRef),
}

/// A parsed string field.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Template {
    segments: Vec<Segment>,
}

/// A template that does not parse; `offset` is the byte offset of the `$` at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub offset: usize,
    pub message: String,
}

/// A reference with no value at render time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0} has no value")]
pub struct Unresolved(pub VarRef);

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let after = &rest[dollar..];
            let at = offset + dollar;
            if let Some(escaped) = after.strip_prefix("$${") {
                literal.push_str("${");
                rest = escaped;
                offset = at + 3;
                continue;
            }
            if !after.starts_with("${") {
                literal.push('$');
                rest = &after[1..];
                offset = at + 1;
                continue;
            }
            let close = after.find('}').ok_or_else(|| TemplateError {
                offset: at,
                message: "`${` is not closed by `}` (write `$${` for a literal `${`)".to_owned(),
            })?;
            let inner = &after[2..close];
            let reference = parse_ref(inner).ok_or_else(|| TemplateError {
                offset: at,
                message: format!(
                    "`${{{inner}}}` is not a variable reference: expected `${{NAME}}` or `${{tasks.<task>.<KEY>}}` (write `$${{` for a literal `${{`)"
                ),
            })?;
            if !literal.is_empty() {
                segments.push(Segment::Text(std::mem::take(&mut literal)));
            }
            segments.push(Segment::Ref(reference));
            rest = &after[close + 1..];
            offset = at + close + 1;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Text(literal));
        }
        Ok(Template { segments })
    }

    /// The references, in order of appearance.
    pub fn refs(&self) -> impl Iterator<Item = &VarRef> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Ref(r) => Some(r),
            Segment::Text(_) => None,
        })
    }

    pub fn has_refs(&self) -> bool {
        self.refs().next().is_some()
    }

    /// Substitutes every reference with its value (for non-code fields: names, tags, env).
    pub fn render(&self, lookup: impl Fn(&VarRef) -> Option<String>) -> Result<String, Unresolved> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Ref(r) => out.push_str(&lookup(r).ok_or_else(|| Unresolved(r.clone()))?),
            }
        }
        Ok(out)
    }

    /// Renders a shell script without pasting values into it: `${NAME}` stays for the
    /// shell to expand from the environment, a task-output reference becomes `${ENV}`
    /// with the environment name that `env_name` gives, and `$${X}` becomes `${X}`,
    /// which the shell expands (the way to reach shell variables such as `${HOME}`).
    pub fn render_for_shell(&self, env_name: impl Fn(&str, &str) -> String) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.push_str(text),
                Segment::Ref(VarRef::Name(name)) => {
                    out.push_str("${");
                    out.push_str(name);
                    out.push('}');
                }
                Segment::Ref(VarRef::TaskOutput { task, key }) => {
                    out.push_str("${");
                    out.push_str(&env_name(task, key));
                    out.push('}');
                }
            }
        }
        out
    }
}

fn parse_ref(inner: &str) -> Option<VarRef> {
    if crate::names::is_var_name(inner) {
        return Some(VarRef::Name(inner.to_owned()));
    }
    let path = inner.strip_prefix("tasks.")?;
    let (task, key) = path.rsplit_once('.')?;
    (!task.is_empty() && crate::names::is_var_name(key))
        .then(|| VarRef::TaskOutput { task: task.to_owned(), key: key.to_owned() })
}

/// Values known to a run at one point: names and task outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub names: BTreeMap<String, String>,
    /// task name → key → value
    pub outputs: BTreeMap<String, BTreeMap<String, String>>,
}

impl Scope {
    pub fn lookup(&self, r: &VarRef) -> Option<String> {
        match r {
            VarRef::Name(name) => self.names.get(name).cloned(),
            VarRef::TaskOutput { task, key } => self.outputs.get(task)?.get(key).cloned(),
        }
    }

    pub fn render(&self, template: &Template) -> Result<String, Unresolved> {
        template.render(|r| self.lookup(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> Vec<String> {
        Template::parse(text).unwrap().refs().map(|r| r.to_string()).collect()
    }

    #[test]
    fn finds_names_and_task_outputs() {
        assert_eq!(refs("alpha-${BUILD_ID}"), ["${BUILD_ID}"]);
        assert_eq!(
            refs("${a}${tasks.unit-tests.VERSION} and ${tasks.v1.2.K}"),
            ["${a}", "${tasks.unit-tests.VERSION}", "${tasks.v1.2.K}"]
        );
        assert!(refs("$HOME $$ $ {x} $${NOT_A_REF}").is_empty());
    }

    #[test]
    fn renders_values_and_escapes() {
        let mut scope = Scope::default();
        scope.names.insert("BUILD_ID".into(), "7".into());
        scope.outputs.entry("build".into()).or_default().insert("V".into(), "1.2".into());
        let t = Template::parse("alpha-${BUILD_ID} v${tasks.build.V} $${BUILD_ID} $$ $x").unwrap();
        assert_eq!(scope.render(&t).unwrap(), "alpha-7 v1.2 ${BUILD_ID} $$ $x");
        let missing = Template::parse("${NOPE}").unwrap();
        assert_eq!(scope.render(&missing).unwrap_err().to_string(), "${NOPE} has no value");
    }

    #[test]
    fn shell_rendering_never_pastes_values() {
        let t = Template::parse("echo \"${GIT_BRANCH}\" ${tasks.build.V} '$${LITERAL}'").unwrap();
        assert_eq!(
            t.render_for_shell(|task, key| format!("OUT_{task}_{key}")),
            "echo \"${GIT_BRANCH}\" ${OUT_build_V} '${LITERAL}'"
        );
    }

    #[test]
    fn malformed_references_point_at_the_dollar() {
        let err = Template::parse("ok ${unclosed").unwrap_err();
        assert_eq!(err.offset, 3);
        assert!(err.message.contains("not closed"));
        let err = Template::parse("x ${a b}").unwrap_err();
        assert_eq!(err.offset, 2);
        assert!(err.message.contains("`${a b}` is not a variable reference"), "{}", err.message);
        assert!(Template::parse("${tasks.x}").is_err());
        assert!(Template::parse("${}").is_err());
    }
}
