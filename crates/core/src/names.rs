//! Names that cross crate boundaries, each with its grammar checked once, here.
//!
//! Names end up in file paths, URLs, log prefixes and environment variables, so the
//! grammars are narrow on purpose: no `/`, no `..`, no control characters.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a name was refused; the message states the grammar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind}: {rule}")]
pub struct NameError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $rule:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            pub const RULE: &'static str = $rule;

            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                if $check(&value) {
                    Ok($ty(value))
                } else {
                    Err(NameError { kind: $kind, value, rule: $rule })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                $ty::new(value)
            }
        }

        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A pipeline's name: unique within a project, safe in URLs and paths.
    PipelineName,
    "pipeline name",
    "1 to 64 of A-Z a-z 0-9 `_` `.` `-`, not starting with `.` or `-`",
    is_pipeline_name
);

name_type!(
    /// A stage's or a task's name. Spaces are allowed ("Unit tests"); path separators are not.
    StepName,
    "stage or task name",
    "1 to 64 characters of letters, digits, spaces and `_` `.` `-`, not starting or ending with a space, `.` or `-`",
    is_step_name
);

name_type!(
    /// A variable, parameter or output name: also an environment variable name.
    VarName,
    "variable name",
    "a letter or `_`, then letters, digits or `_` (at most 128)",
    is_var_name
);

fn is_pipeline_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with(['.', '-'])
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn is_step_name(s: &str) -> bool {
    (1..=64).contains(&s.chars().count())
        && !s.starts_with([' ', '.', '-'])
        && !s.ends_with([' ', '.', '-'])
        && s.chars().all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '.' | '-'))
}

pub(crate) fn is_var_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && s.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_names() {
        for ok in ["deploy-2048", "a", "web_app.v2", &"x".repeat(64)] {
            assert!(PipelineName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".hidden", "a/b", "a b", "ä", &"x".repeat(65), "../etc"] {
            assert!(PipelineName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn step_names_refuse_paths() {
        for ok in ["Build", "Unit tests", "build-2048-game", "v1.2", "构建"] {
            assert!(StepName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", "..", ".", "a\\b", " lead", "trail ", "tab\there", "x\n"] {
            let err = StepName::new(bad).unwrap_err();
            assert_eq!(err.kind, "stage or task name");
        }
    }

    #[test]
    fn var_names_are_env_names() {
        for ok in ["BUILD_ID", "_x", "reponame", "A1"] {
            assert!(VarName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "a-b", "a.b", "tasks.x.y", "$X"] {
            assert!(VarName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_error_states_the_rule() {
        let err = PipelineName::new("a/b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`a/b` is not a valid pipeline name: 1 to 64 of A-Z a-z 0-9 `_` `.` `-`, not starting with `.` or `-`"
        );
    }
}
