//! Webhook notifications: `POST` the facts' JSON (or the pipeline's own `body`) or
//! `GET` with the facts as query parameters, with the pipeline's headers, through the
//! server's outbound policy, retried with backoff on network errors, 5xx and 429.
//!
//! **Signature.** With a secret, every request carries
//! `X-Wharf-Signature-256: sha256=<hex HMAC-SHA256(secret, payload)>`, where the
//! payload is the request body exactly as sent (`POST`) or the query string exactly as
//! sent, without the `?` (`GET`). A receiver computes the same over what it received
//! and compares in constant time. `X-Wharf-Event` names the event and
//! `X-Wharf-Delivery` is the same for every attempt of one notification (so a receiver
//! can drop repeats).

use crate::message::Facts;
use crate::{Attempt, Retry, error_chain};
use hmac::{KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use wharf_core::model::HttpMethod;
use wharf_outbound::Policy;

pub const SIGNATURE_HEADER: &str = "x-wharf-signature-256";
pub const EVENT_HEADER: &str = "x-wharf-event";
pub const DELIVERY_HEADER: &str = "x-wharf-delivery";

/// Bytes of a receiver's answer kept in an attempt's detail.
const ANSWER_KEPT: usize = 200;

/// One webhook, its templates already rendered.
#[derive(Clone)]
pub struct Webhook {
    pub url: String,
    pub method: HttpMethod,
    pub headers: Vec<(String, String)>,
    /// Extra query parameters.
    pub params: Vec<(String, String)>,
    /// The pipeline's own body (`POST`); `None`: the facts' JSON.
    pub body: Option<String>,
    /// The signing secret; `None`: unsigned.
    pub secret: Option<String>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url)
            .field("method", &self.method)
            .field("headers", &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `sha256=<lower-case hex>` of HMAC-SHA256(`secret`, `payload`).
pub fn sign(secret: &[u8], payload: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(payload);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// The URL without its query and fragment (what attempts show: a query may hold a
/// token).
pub fn shown_target(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
}

/// The HTTP client webhooks are sent with, under `policy`. Building one reads the
/// platform's trust store: a caller that may never send a webhook builds it at the
/// first one, and a machine without CA certificates fails that webhook, not its start.
pub fn client(policy: &Policy) -> Result<reqwest::Client, String> {
    policy
        .apply(reqwest::Client::builder().user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION"))))
        .build()
        .map_err(|e| format!("cannot build the notification client: {}", error_chain(&e)))
}

/// Sends `hook` with `facts`, reporting every attempt to `report`; true when delivered.
/// `client` must have been built with `policy` applied ([`Policy::apply`]).
pub async fn send(
    client: &reqwest::Client,
    policy: &Policy,
    hook: &Webhook,
    facts: &Facts,
    delivery: &str,
    retry: Retry,
    report: &mut (dyn FnMut(Attempt) + Send),
) -> bool {
    let request = match build(client, policy, hook, facts, delivery, retry) {
        Ok(request) => request,
        Err(why) => {
            report(Attempt { number: 1, delivered: false, detail: why });
            return false;
        }
    };
    for number in 1..=retry.attempts.max(1) {
        let Some(attempt) = request.try_clone() else { break };
        let (delivered, again, detail) = match client.execute(attempt).await {
            Ok(response) => {
                let status = response.status();
                let answer = response.text().await.unwrap_or_default();
                let answer: String = answer.chars().take(ANSWER_KEPT).collect();
                let detail = if answer.trim().is_empty() {
                    format!("HTTP {}", status.as_u16())
                } else {
                    format!("HTTP {}: {}", status.as_u16(), answer.trim())
                };
                let again = status.is_server_error() || status.as_u16() == 429;
                (status.is_success(), again, detail)
            }
            Err(e) => match wharf_outbound::refusal(&e) {
                Some(refused) => (false, false, refused.to_string()),
                None => (false, true, error_chain(&e)),
            },
        };
        report(Attempt { number, delivered, detail });
        if delivered {
            return true;
        }
        if !again || number == retry.attempts {
            return false;
        }
        tokio::time::sleep(retry.delay_after(number)).await;
    }
    false
}

fn build(
    client: &reqwest::Client,
    policy: &Policy,
    hook: &Webhook,
    facts: &Facts,
    delivery: &str,
    retry: Retry,
) -> Result<reqwest::Request, String> {
    let mut url =
        reqwest::Url::parse(&hook.url).map_err(|e| format!("`{}` is not a URL: {e}", shown_target(&hook.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{}`: a webhook URL starts with http:// or https://", shown_target(&hook.url)));
    }
    policy.check_url(&url).map_err(|refused| refused.to_string())?;
    let mut headers = HeaderMap::new();
    for (name, value) in &hook.headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("headers: `{name}` is not a header name"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("headers: the value of `{name}` is not a header value"))?;
        headers.insert(name, value);
    }
    headers.insert(EVENT_HEADER, HeaderValue::from_static(facts.event.as_str()));
    headers.insert(DELIVERY_HEADER, HeaderValue::from_str(delivery).map_err(|_| "bad delivery id".to_owned())?);
    let (method, body) = match hook.method {
        HttpMethod::Get => {
            {
                let mut query = url.query_pairs_mut();
                for (k, v) in &hook.params {
                    query.append_pair(k, v);
                }
                query.append_pair("event", facts.event.as_str());
                query.append_pair("pipeline", &facts.pipeline);
                query.append_pair("run", &facts.run.to_string());
                query.append_pair("status", facts.status.as_str());
                if let Some(link) = &facts.url {
                    query.append_pair("url", link);
                }
            }
            (reqwest::Method::GET, None)
        }
        HttpMethod::Post => {
            if !hook.params.is_empty() {
                let mut query = url.query_pairs_mut();
                for (k, v) in &hook.params {
                    query.append_pair(k, v);
                }
            }
            let body = hook.body.clone().unwrap_or_else(|| facts.json());
            if !headers.contains_key(CONTENT_TYPE) {
                let json = serde_json::from_str::<serde_json::Value>(&body).is_ok();
                let kind = if json { "application/json" } else { "text/plain; charset=utf-8" };
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
            }
            (reqwest::Method::POST, Some(body))
        }
    };
    if let Some(secret) = &hook.secret {
        let payload = match &body {
            Some(body) => body.as_bytes().to_vec(),
            None => url.query().unwrap_or("").as_bytes().to_vec(),
        };
        let signature = sign(secret.as_bytes(), &payload);
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&signature).expect("hex is a header value"));
    }
    let mut builder = client.request(method, url).headers(headers).timeout(retry.timeout);
    if let Some(body) = body {
        builder = builder.body(body);
    }
    builder.build().map_err(|e| error_chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(shown_target("https://hooks.example/x?token=s#f"), "https://hooks.example/x");
    }
}
