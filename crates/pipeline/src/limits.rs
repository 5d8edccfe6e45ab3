//! The size limits of a pipeline, in one place. They bound what one saved pipeline
//! can cost the server (the run record grows with the tasks, every process gets the
//! script and env) and sit far above what a real pipeline needs. `docs/pipeline-yaml.md`
//! (Limits) lists them; a test there keeps the two in step.

/// Stages in `stages`, and again in `on_failure`.
pub const MAX_STAGES: usize = 100;
/// Tasks in one stage.
pub const MAX_TASKS_PER_STAGE: usize = 100;
/// Tasks in the whole pipeline, `on_failure` included.
pub const MAX_TASKS: usize = 500;
/// Bytes of one task's `script`.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Entries of one task's `env` (and of an `image` task's `build_args`).
pub const MAX_ENV_ENTRIES: usize = 100;
/// Entries of `parameters`, and of `variables`.
pub const MAX_PARAMETERS: usize = 100;
/// Bytes of one value: an `env` or `build_args` value, a variable, a parameter's
/// default, and a parameter value given when a run starts.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;

/// What is wrong with a value given for a parameter (or any value that reaches a
/// task's environment): too long, or holding a NUL byte, which no process
/// environment can carry. `None` when it is fine.
pub fn value_problem(value: &str) -> Option<String> {
    if value.contains('\0') {
        return Some("contains a NUL byte, which no environment variable can carry".to_owned());
    }
    if value.len() > MAX_VALUE_BYTES {
        return Some(format!("is {} bytes long; a value may be at most {MAX_VALUE_BYTES} bytes", value.len()));
    }
    None
}
