//! The client commands against a Wharf server's REST API (`/api/v1`, DESIGN.md §9),
//! with a bearer token, one file per resource: [`pipelines`], [`runs`], [`logs`],
//! [`registries`], [`clusters`], [`tenancy`] (users, tokens, secrets, login). [`http`] sends the
//! calls; every answer is read into the types of the API contract, `wharf_api`.
//!
//! Exit codes: 0 done, 1 the run ended unsuccessfully (`--follow`; 124 timed out and 130
//! stopped, as `wharf run`), the server failed (5xx) or cannot be reached, 2 the input or
//! the request was refused (4xx: unknown pipeline, invalid YAML, wrong token, conflict).

pub mod clusters;
mod http;
mod logs;
mod pipelines;
pub mod registries;
pub mod releases;
mod runs;
pub mod tenancy;

pub use http::{ApiError, Client, Unreachable, exit_code};
pub use logs::{LogsArgs, logs};
pub use pipelines::{PipelinesArgs, pipelines};
pub use runs::{RunsArgs, runs};

use anyhow::{Result, bail};
use reqwest::Url;
use std::io::Write;

/// Which server, and the token to show it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Conn {
    /// The server's URL [default: http://127.0.0.1:8080].
    #[arg(long, env = "WHARF_SERVER", value_name = "URL", global = true)]
    pub server: Option<String>,
    /// The API token (sent as `Authorization: Bearer TOKEN`).
    #[arg(long, env = "WHARF_TOKEN", value_name = "TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

/// A pipeline name or id as a path segment (`.` and `..` would move the path).
fn key(text: &str) -> Result<&str> {
    if text.is_empty() || text == "." || text == ".." {
        bail!("`{text}` is not a pipeline name or id");
    }
    Ok(text)
}

pub(crate) fn with_query(mut url: Url, pairs: &[(&str, String)]) -> Url {
    if !pairs.is_empty() {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
    }
    url
}

/// Milliseconds since the epoch as local time.
pub(crate) fn when(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => "-".into(),
    }
}

fn write_out(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::Detail;

    #[test]
    fn details_show_path_and_position() {
        let error = ApiError {
            status: 422,
            message: "the pipeline is not valid (2 problem(s))".into(),
            details: vec![
                Detail {
                    path: "stages[0].tasks[0].type".into(),
                    line: Some(7),
                    column: Some(15),
                    message: "bad".into(),
                },
                Detail { path: "parameters".into(), line: None, column: None, message: "missing X".into() },
            ],
        };
        assert_eq!(
            error.to_string(),
            "the pipeline is not valid (2 problem(s))\n  stages[0].tasks[0].type (7:15): bad\n  parameters: missing X"
        );
        assert_eq!(exit_code(&anyhow::Error::new(error)), 2);
        let server = ApiError { status: 500, message: "internal".into(), details: vec![] };
        assert_eq!(exit_code(&anyhow::Error::new(server).context("while saving")), 1);
    }

    #[test]
    fn urls_encode_each_segment_under_the_base_path() {
        let conn = Conn { server: Some("http://example.test:9/wharf/".into()), token: None };
        let client = Client::new(&conn).unwrap();
        let url = client.url(&["runs", "7", "tasks", "Unit tests", "log"]);
        assert_eq!(url.as_str(), "http://example.test:9/wharf/api/v1/runs/7/tasks/Unit%20tests/log");
        let bare = Client::new(&Conn { server: Some("http://h:1".into()), token: None }).unwrap();
        assert_eq!(bare.url(&["pipelines"]).as_str(), "http://h:1/api/v1/pipelines");
        assert!(Client::new(&Conn { server: Some("ftp://h".into()), token: None }).is_err());
    }

    #[test]
    fn an_error_body_that_is_not_the_contract_is_shown_as_text() {
        let error = ApiError::from_body(reqwest::StatusCode::BAD_GATEWAY, b"<html>proxy down</html>");
        assert_eq!(error.message, "the server answered 502 Bad Gateway: <html>proxy down</html>");
        let body = br#"{"error": {"status": 409, "message": "busy", "details": []}}"#;
        assert_eq!(ApiError::from_body(reqwest::StatusCode::CONFLICT, body).message, "busy");
    }
}
