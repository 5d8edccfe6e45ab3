//! The HTTP side of the client: the connection, the server's errors as [`ApiError`]
//! (read from `wharf_api::Error`), an absent server as [`Unreachable`], and calls whose
//! answers are read into `wharf_api` types.

use super::Conn;
use anyhow::{Context, Result, bail};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::Duration;
use wharf_api::Detail;

/// Where the client looks when neither `--server` nor `WHARF_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

const TOKEN_HINT: &str = "set WHARF_TOKEN or --token";

/// How long one ordinary call may take.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The server said no: its status, message and details.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub details: Vec<Detail>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        for detail in &self.details {
            write!(f, "\n  {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Reads `{"error": {"status", "message", "details"}}`, or makes do with the text.
    pub(crate) fn from_body(status: StatusCode, body: &[u8]) -> ApiError {
        match serde_json::from_slice::<wharf_api::Error>(body) {
            Ok(wharf_api::Error { error }) => {
                ApiError { status: status.as_u16(), message: error.message, details: error.details }
            }
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let text: String = text.chars().take(500).collect();
                let message = if text.is_empty() {
                    format!("the server answered {status}")
                } else {
                    format!("the server answered {status}: {text}")
                };
                ApiError { status: status.as_u16(), message, details: vec![] }
            }
        }
    }
}

/// The server could not be reached at all.
#[derive(Debug)]
pub struct Unreachable {
    pub server: String,
    pub cause: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the server at {}: {} (is `wharf serve` running there? set --server or WHARF_SERVER)",
            self.server, self.cause
        )
    }
}

impl std::error::Error for Unreachable {}

/// The exit code for an error: 1 when the server failed or is away, 2 for the rest
/// (what was asked is wrong or refused).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return if api.status >= 500 { 1 } else { 2 };
        }
        if cause.downcast_ref::<Unreachable>().is_some() {
            return 1;
        }
    }
    2
}

/// The innermost cause's words ("Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    base: Url,
    /// The server as given, for messages.
    pub(crate) shown: String,
    token: Option<String>,
}

impl Client {
    pub fn new(conn: &Conn) -> Result<Client> {
        let given = conn.server.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or(DEFAULT_SERVER);
        let base = Url::parse(given).with_context(|| format!("--server `{given}` is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--server `{given}`: expected an http:// URL such as {DEFAULT_SERVER}");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot set up the HTTP client")?;
        let token = conn.token.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
        Ok(Client { http, base, shown: given.trim_end_matches('/').to_owned(), token })
    }

    /// `<server>/api/v1/<segments…>`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("checked in Client::new");
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> Unreachable {
        Unreachable { server: self.shown.clone(), cause: root_cause(e) }
    }

    /// Sends; a transport failure is [`Unreachable`], an error status an [`ApiError`].
    pub(crate) async fn send(&self, request: RequestBuilder) -> Result<Response> {
        self.send_reading(request, |_, _| None).await
    }

    /// As [`Client::send`], but an error answer goes to `special` first: an answer body
    /// of its own shape (`ClusterInUse`) becomes its error; `None` leaves it to the
    /// common error body.
    pub(crate) async fn send_reading(
        &self,
        request: RequestBuilder,
        special: impl FnOnce(StatusCode, &[u8]) -> Option<anyhow::Error>,
    ) -> Result<Response> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        if status != StatusCode::UNAUTHORIZED
            && let Some(error) = special(status, &body)
        {
            return Err(error);
        }
        let mut error = ApiError::from_body(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            error.message = match self.token {
                Some(_) => format!("the server refused the token: {TOKEN_HINT}"),
                None => format!("the server needs a token: {TOKEN_HINT}"),
            };
            error.details.clear();
        }
        Err(error.into())
    }

    /// Sends, and reads the answer as a `T` of the API contract.
    pub(crate) async fn answer<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T> {
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        serde_json::from_slice(&bytes).context("the server's answer is not the JSON expected")
    }

    /// A call without a body.
    pub(crate) async fn fetch<T: DeserializeOwned>(&self, method: Method, url: Url) -> Result<T> {
        self.answer(self.request(method, url).timeout(CALL_TIMEOUT)).await
    }

    /// A call with a JSON body.
    pub(crate) async fn fetch_with<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: &impl Serialize,
    ) -> Result<T> {
        self.answer(self.request(method, url).timeout(CALL_TIMEOUT).json(body)).await
    }

    /// A call whose answer (if any) says nothing more than its success.
    pub(crate) async fn perform(&self, method: Method, url: Url, body: Option<&dyn ErasedBody>) -> Result<()> {
        let mut request = self.request(method, url).timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.json()?);
        }
        let response = self.send(request).await?;
        response.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok(())
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T> {
        self.fetch(Method::GET, self.url(segments)).await
    }

    pub(crate) async fn post<T: DeserializeOwned>(&self, segments: &[&str], body: &impl Serialize) -> Result<T> {
        self.fetch_with(Method::POST, self.url(segments), body).await
    }

    /// `GET`, or `None` when the server says 404.
    pub(crate) async fn find<T: DeserializeOwned>(&self, url: Url) -> Result<Option<T>> {
        match self.fetch(Method::GET, url).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.downcast_ref::<ApiError>().is_some_and(|a| a.status == 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A text answer as bytes, with its headers.
    pub(crate) async fn bytes(&self, url: Url) -> Result<(reqwest::header::HeaderMap, Vec<u8>)> {
        let response = self.send(self.request(Method::GET, url)).await?;
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok((headers, bytes.to_vec()))
    }
}

/// A request body of any contract type, for [`Client::perform`].
pub(crate) trait ErasedBody: Sync {
    fn json(&self) -> Result<Vec<u8>>;
}

impl<T: Serialize + Sync> ErasedBody for T {
    fn json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).context("cannot write the request as JSON")
    }
}
