//! The contract of Wharf's REST API under `/api/v1`: every request body the server
//! reads and every JSON answer it gives, as plain serde types. The server builds its
//! answers from these types (converting its store rows in one place), the OpenAPI
//! document takes its schemas from them (feature `openapi`, which derives
//! `utoipa::ToSchema`; only the server turns it on), and the CLI client reads the
//! answers into them. Start with [`pipelines`] and [`runs`]; [`Error`] is the body of
//! every error.
//!
//! Times are epoch milliseconds (`*_at: i64`) unless a field says otherwise; run
//! records keep RFC 3339 timestamps as `wharf-core` writes them. Changing a field here
//! changes the wire: the snapshot tests in `tests/` and the server's show it.

pub mod bindings;
pub mod clusters;
pub mod deliveries;
pub mod gates;
pub mod pipelines;
pub mod registries;
pub mod releases;
pub mod runs;
pub mod schedule;
pub mod secrets;
pub mod signals;
pub mod tenancy;

#[cfg(feature = "openapi")]
mod schema;
#[cfg(feature = "openapi")]
pub use schema::schemas;

use serde::{Deserialize, Serialize};

/// A page of items with what a client needs to ask for the next one
/// (`?limit=1..200`, default 50, and `?page=` from 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub page: i64,
    pub limit: i64,
    /// How many there are on all pages.
    pub total: i64,
}

/// A whole list (not paginated): its items and how many.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Listed<T> {
    pub total: usize,
    pub items: Vec<T>,
}

impl<T> Listed<T> {
    pub fn new(items: Vec<T>) -> Self {
        Listed { total: items.len(), items }
    }
}

/// The body of every error answer: `{"error": {"status", "message", "details"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Error {
    pub error: ErrorInfo,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorInfo {
    /// The HTTP status, again.
    pub status: u16,
    /// What went wrong, for a person.
    pub message: String,
    /// Each problem with where it is (invalid bodies, pipelines, queries).
    #[serde(default)]
    pub details: Vec<Detail>,
}

/// One problem: the field path (`stages[0].tasks[1].image`), and for YAML and JSON
/// bodies the line and column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Detail {
    #[serde(default)]
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    pub message: String,
}

/// `path (line:col): message`, leaving out what is not known.
impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = match (self.line, self.column) {
            (Some(line), Some(col)) => format!("({line}:{col})"),
            (Some(line), None) => format!("(line {line})"),
            _ => String::new(),
        };
        match (self.path.is_empty(), at.is_empty()) {
            (true, true) => write!(f, "{}", self.message),
            (true, false) => write!(f, "{at}: {}", self.message),
            (false, true) => write!(f, "{}: {}", self.path, self.message),
            (false, false) => write!(f, "{} {at}: {}", self.path, self.message),
        }
    }
}

impl Detail {
    /// A problem at a field, without a position.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Detail {
        Detail { path: path.into(), line: None, column: None, message: message.into() }
    }

    /// A body that is not the JSON expected, at the line and column serde saw.
    pub fn of_json(e: &serde_json::Error) -> Detail {
        Detail { path: String::new(), line: Some(e.line()), column: Some(e.column()), message: e.to_string() }
    }
}
