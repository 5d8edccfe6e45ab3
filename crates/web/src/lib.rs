//! The web UI, compiled into the binary: one HTML shell for every page (the pages are
//! plain JavaScript modules that call the REST API under `/api/v1`) and its assets
//! under `/ui/`. Nothing is built at run time and nothing is fetched from elsewhere.
//!
//! Reading order: [`router`] (which paths are pages), then `assets/js/app.js` (the
//! client-side router), `assets/js/auth.js` (the one place that knows how requests
//! are authenticated), `assets/js/i18n.js` (the language: `t(key, params)` over one
//! message catalogue per language, `i18n/en.js` and `i18n/zh-CN.js`, and the dates,
//! durations and sizes written the language's way), and one module per page: `pipelines.js`, `details.js`,
//! `registries.js`, `clusters.js`, `instances.js`, `repositories.js`, `users.js`,
//! `run.js` (with the live log view `log.js`) and `editor.js` (the card editor).
//!
//! Every answer carries a strict Content-Security-Policy: scripts and styles only from
//! this origin, no inline script, so log text or names can never run as code even if
//! a page forgot to escape them (the pages set text, never HTML, from data).

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// One compiled-in file: its name under `/ui/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset { name: $name, content_type: $type, body: include_str!(concat!("../assets/", $name)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("js/app.js", JS),
    asset!("js/auth.js", JS),
    asset!("js/ui.js", JS),
    asset!("js/pipelines.js", JS),
    asset!("js/details.js", JS),
    asset!("js/run.js", JS),
    asset!("js/approvals.js", JS),
    asset!("js/log.js", JS),
    asset!("js/ansi.js", JS),
    asset!("js/editor.js", JS),
    asset!("js/dialogs.js", JS),
    asset!("js/registries.js", JS),
    asset!("js/clusters.js", JS),
    asset!("js/instances.js", JS),
    asset!("js/repositories.js", JS),
    asset!("js/users.js", JS),
    asset!("js/i18n.js", JS),
    asset!("js/i18n/en.js", JS),
    asset!("js/i18n/zh-CN.js", JS),
];

const SHELL: &str = include_str!("../assets/index.html");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The UI's routes: `/` (to the pipeline list), the pages, and `/ui/{asset}`. Merged
/// into the server's router; none of them needs a token (the data comes from the API).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/pipelines") }))
        .route("/login", get(shell))
        .route("/pipelines", get(shell))
        .route("/pipelines/{*rest}", get(shell))
        .route("/runs/{*rest}", get(shell))
        .route("/approvals", get(shell))
        .route("/registries", get(shell))
        .route("/repositories", get(shell))
        .route("/users", get(shell))
        .route("/registries/{*rest}", get(shell))
        .route("/clusters", get(shell))
        .route("/clusters/{*rest}", get(shell))
        .route("/instances", get(shell))
        .route("/instances/{*rest}", get(shell))
        .route("/ui/{*file}", get(asset))
}

fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

async fn shell() -> Response {
    secured(
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], SHELL)
            .into_response(),
    )
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        // `no-cache` revalidates on each load; the files are small and compressed by nobody.
        Some(a) => secured(
            ([(header::CONTENT_TYPE, a.content_type), (header::CACHE_CONTROL, "no-cache")], a.body).into_response(),
        ),
        None => (StatusCode::NOT_FOUND, format!("no UI file `{file}`\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    /// Every module a page imports is served, so a missing `ASSETS` line fails here,
    /// not in a browser.
    #[test]
    fn every_imported_module_is_served() {
        for asset in super::ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in asset.body.lines().filter(|l| l.starts_with("import ")) {
                let Some(target) = line.split(['\'', '"']).nth(1) else { continue };
                let name = format!("js/{}", target.trim_start_matches("./"));
                assert!(super::ASSETS.iter().any(|a| a.name == name), "{} imports {target}, not served", asset.name);
            }
        }
        assert!(super::SHELL.contains("/ui/js/app.js"));
    }
}
