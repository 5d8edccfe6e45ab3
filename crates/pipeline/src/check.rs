//! Cross-reference checks once every field has decoded: unique names, and every
//! `${…}` pointing at something that will have a value when it is used.
//!
//! Which names a field may use depends on where it is (see [`Place`]): variables are
//! resolved after the checkout, so they may use `GIT_*`; a task may use the outputs of
//! tasks that finish before it starts (earlier stages, or earlier in a sequential
//! stage), never those of a parallel sibling.

use crate::decode::{Declared, Index, Place};
use crate::diag::{Diagnostic, did_you_mean};
use std::collections::{BTreeMap, BTreeSet};
use wharf_core::model::{Mode, Pipeline};
use wharf_core::vars::{BUILTINS, VarRef, is_builtin};

/// Built-ins known before the checkout.
const AT_START: &[&str] = &["BUILD_ID", "SYS_TIMESTAMP", "SYS_INCREMENT", "PIPELINE_NAME", "RUN_CAUSE"];
const PER_TASK: &[&str] = &["WHARF_OUTPUT", "WHARF_WORKSPACE", "WHARF_RUN", "WHARF_STAGE", "WHARF_TASK", "CI"];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
struct At {
    rollback: bool,
    stage: usize,
    task: usize,
}

pub fn check(pipeline: &Pipeline, index: &Index) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    duplicates(&index.stages, "stage", &mut out);
    let task_decls: Vec<Declared> = index.tasks.iter().map(|(_, _, _, d)| d.clone()).collect();
    duplicates(&task_decls, "task", &mut out);

    // Variables, parameters, secrets and outputs share one namespace with the built-ins.
    let mut seen: BTreeMap<&str, &Declared> = BTreeMap::new();
    let named = index
        .variables
        .iter()
        .map(|d| ("variable", d))
        .chain(index.parameters.iter().map(|d| ("parameter", d)))
        .chain(index.outputs.iter().map(|(_, d)| ("output", d)));
    for (kind, decl) in named {
        if is_builtin(&decl.name) {
            out.push(Diagnostic::new(
                decl.pos,
                &decl.path,
                format!("`{}` is a built-in variable; choose another {kind} name", decl.name),
            ));
        } else if let Some(first) = seen.get(decl.name.as_str()) {
            out.push(Diagnostic::new(
                decl.pos,
                &decl.path,
                format!("`{}` is already defined at line {} ({})", decl.name, first.pos.line, first.path),
            ));
        } else {
            seen.insert(&decl.name, decl);
        }
    }
    for decl in &index.secrets {
        if is_builtin(&decl.name) {
            out.push(Diagnostic::new(
                decl.pos,
                &decl.path,
                format!("`{}` is a built-in variable; a secret cannot replace it", decl.name),
            ));
        } else if let Some(other) = seen.get(decl.name.as_str()) {
            out.push(Diagnostic::new(
                decl.pos,
                &decl.path,
                format!(
                    "the secret `{}` would hide the one defined at line {} ({})",
                    decl.name, other.pos.line, other.path
                ),
            ));
        }
    }

    let tasks: BTreeMap<&str, At> = index
        .tasks
        .iter()
        .map(|(stage, rollback, task, d)| (d.name.as_str(), At { rollback: *rollback, stage: *stage, task: *task }))
        .collect();
    let mut declared_outputs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut output_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (task, decl) in &index.outputs {
        declared_outputs.entry(task.as_str()).or_default().insert(decl.name.as_str());
        output_owner.entry(decl.name.as_str()).or_insert(task.as_str());
    }
    let variables: Vec<&str> = index.variables.iter().map(|d| d.name.as_str()).collect();
    let parameters: Vec<&str> = index.parameters.iter().map(|d| d.name.as_str()).collect();
    let mode = |at: At| -> Mode {
        let stages = if at.rollback { &pipeline.on_failure } else { &pipeline.stages };
        stages.get(at.stage).map_or(Mode::Sequential, |s| s.mode)
    };
    // Does a task at `before` finish before a task at `at` starts?
    let precedes = |before: At, at: At| -> bool {
        match (before.rollback, at.rollback) {
            (false, true) => true,
            (true, false) => false,
            _ => {
                before.stage < at.stage
                    || (before.stage == at.stage && mode(at) == Mode::Sequential && before.task < at.task)
            }
        }
    };

    for use_ in &index.refs {
        let mut candidates: Vec<&str> = Vec::new();
        let here = match use_.place {
            Place::Task { stage, task, rollback, .. } => Some(At { rollback, stage, task }),
            _ => None,
        };
        let problem = match &use_.reference {
            VarRef::Name(name) => {
                let name = name.as_str();
                let (mut known, after_checkout): (Vec<&str>, bool) = match use_.place {
                    Place::ParameterDefault => (AT_START.to_vec(), false),
                    Place::Source => (AT_START.iter().chain(&parameters).copied().collect(), false),
                    Place::Variable(i) => {
                        (AT_START.iter().chain(&parameters).chain(variables.iter().take(i)).copied().collect(), true)
                    }
                    Place::Task { .. } => {
                        (BUILTINS.iter().chain(&parameters).chain(&variables).copied().collect(), true)
                    }
                    Place::Notify => (
                        BUILTINS
                            .iter()
                            .filter(|b| !PER_TASK.contains(b))
                            .chain(&parameters)
                            .chain(&variables)
                            .copied()
                            .collect(),
                        true,
                    ),
                };
                if after_checkout {
                    known.extend(BUILTINS.iter().filter(|b| b.starts_with("GIT_")));
                }
                // A waiting stage's `params` are set when it starts, for it and the stages after it.
                let signalled_up_to = match use_.place {
                    Place::Task { stage, rollback: false, .. } => Some(stage + 1),
                    Place::Task { rollback: true, .. } | Place::Notify => Some(pipeline.stages.len()),
                    _ => None,
                };
                if let Some(up_to) = signalled_up_to {
                    let waits = pipeline.stages.iter().take(up_to).filter_map(|s| s.wait.as_ref());
                    known.extend(waits.flat_map(|w| w.params.iter().map(String::as_str)));
                }
                if let (Some(at), Place::Task { script: true, .. }) = (here, use_.place) {
                    // The shell sees the task's own env and secrets too.
                    let stages = if at.rollback { &pipeline.on_failure } else { &pipeline.stages };
                    if let Some(task) = stages.get(at.stage).and_then(|s| s.tasks.get(at.task)) {
                        known.extend(task.env.keys().map(String::as_str));
                        known.extend(task.secrets.iter().map(|s| s.as_str()));
                    }
                }
                candidates.extend(&known);
                if known.contains(&name) {
                    None
                } else if let Some(owner) = output_owner.get(name) {
                    let owner_at = tasks[owner];
                    match (here, use_.place) {
                        (_, Place::Notify) => None,
                        (Some(at), _) if precedes(owner_at, at) => None,
                        (Some(_), _) => Some(format!(
                            "`${{{name}}}` is an output of task `{owner}`, which does not finish before this task starts"
                        )),
                        (None, _) => Some(format!("`${{{name}}}` is a task output; outputs are not known here yet")),
                    }
                } else if BUILTINS.contains(&name) || parameters.contains(&name) || variables.contains(&name) {
                    Some(format!("`${{{name}}}` has no value yet at this point of the run"))
                } else {
                    let mut message = format!("unknown variable `${{{name}}}`");
                    candidates.extend(output_owner.keys());
                    match did_you_mean(name, candidates.iter().copied()) {
                        Some(near) => message.push_str(&format!("; did you mean `${{{near}}}`?")),
                        None => message.push_str(": not a built-in, variable, parameter or declared task output"),
                    }
                    if matches!(use_.place, Place::Task { script: true, .. }) {
                        message.push_str(&format!(" (for a shell variable write `${name}` or `$${{{name}}}`)"));
                    }
                    Some(message)
                }
            }
            VarRef::TaskOutput { task, key } => match tasks.get(task.as_str()) {
                None => Some(match did_you_mean(task, tasks.keys().copied()) {
                    Some(near) => format!("no task named `{task}`; did you mean `{near}`?"),
                    None => format!("no task named `{task}`"),
                }),
                Some(owner_at) => {
                    let ordered = match here {
                        Some(at) => precedes(*owner_at, at),
                        None => matches!(use_.place, Place::Notify),
                    };
                    if !ordered {
                        Some(format!(
                            "task `{task}` does not finish before this point, so its outputs are not known here"
                        ))
                    } else if let Some(keys) = declared_outputs.get(task.as_str())
                        && !keys.contains(key.as_str())
                    {
                        Some(format!(
                            "task `{task}` declares the outputs {}; `{key}` is not one of them",
                            keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                        ))
                    } else {
                        None
                    }
                }
            },
        };
        if let Some(message) = problem {
            out.push(Diagnostic::new(use_.pos, &use_.path, message));
        }
    }
    out
}

fn duplicates(decls: &[Declared], kind: &str, out: &mut Vec<Diagnostic>) {
    let mut first: BTreeMap<&str, &Declared> = BTreeMap::new();
    for decl in decls {
        match first.get(decl.name.as_str()) {
            Some(earlier) => out.push(Diagnostic::new(
                decl.pos,
                &decl.path,
                format!(
                    "duplicate {kind} name `{}` (also at line {}); {kind} names must be unique in a pipeline",
                    decl.name, earlier.pos.line
                ),
            )),
            None => {
                first.insert(&decl.name, decl);
            }
        }
    }
}
