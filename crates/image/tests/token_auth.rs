//! The Bearer token challenge and pagination, against a small stand-in registry on
//! loopback (the test registry of `scripts/test-env.sh` uses Basic auth only).

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wharf_image::{RegistryAccess, RegistryClient, RegistryError};

const TOKEN: &str = "token-for-catalog";
const BASIC: &str = "Basic d2hhcmY6cGFzcw=="; // wharf:pass

/// What the stand-in saw: (path with query, Authorization header).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A registry that wants a Bearer token from its own `/token` realm (which wants
/// Basic `wharf:pass`), and serves a catalog in two pages linked by `Link`.
async fn stand_in() -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen: Seen = Arc::default();
    let (realm, log) = (format!("http://{host}/token"), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let (realm, log) = (realm.clone(), log.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                let auth = head
                    .lines()
                    .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("authorization")))
                    .map(|(_, v)| v.trim().to_owned())
                    .unwrap_or_default();
                log.lock().unwrap().push((path.clone(), auth.clone()));
                let bearer = format!("Bearer {TOKEN}");
                let (status, headers, body) = if path.starts_with("/token") {
                    if auth == BASIC && path.contains("scope=registry%3Acatalog%3A") {
                        ("200 OK", String::new(), format!(r#"{{"token":"{TOKEN}"}}"#))
                    } else {
                        ("401 Unauthorized", String::new(), r#"{"details":"bad credentials"}"#.to_owned())
                    }
                } else if path == "/v2/devops/inward/tags/list?n=1000" {
                    // A challenge whose realm is another internal address.
                    let challenge = "WWW-Authenticate: Bearer realm=\"http://127.0.0.2:9/token\",service=\"x\"\r\n";
                    ("401 Unauthorized", challenge.to_owned(), "{}".to_owned())
                } else if auth != bearer {
                    let challenge = format!(
                        "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"stand-in\",scope=\"registry:catalog:*\"\r\n"
                    );
                    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
                    ("401 Unauthorized", challenge, body.to_owned())
                } else if path == "/v2/_catalog?n=1000" {
                    let link = "Link: </v2/_catalog?last=devops%2Fa&n=1000>; rel=\"next\"\r\n".to_owned();
                    ("200 OK", link, r#"{"repositories":["devops/a"]}"#.to_owned())
                } else if path == "/v2/_catalog?last=devops%2Fa&n=1000" {
                    ("200 OK", String::new(), r#"{"repositories":["devops/b"]}"#.to_owned())
                } else if path == "/v2/devops/a/manifests/v1" {
                    // HEAD and GET of a tag; DELETE (by digest) is switched off.
                    let digest = format!("Docker-Content-Digest: sha256:{}\r\n", "1".repeat(64));
                    ("200 OK", digest, "{}".to_owned())
                } else if path == "/v2/devops/leaky/tags/list?n=1000" {
                    let body = r#"{"errors":[{"code":"UNKNOWN","message":"database at 10.0.0.5:5432 refused"}]}"#;
                    ("500 Internal Server Error", String::new(), body.to_owned())
                } else if path == "/v2/devops/a/tags/list?n=1000" {
                    ("200 OK", String::new(), r#"{"name":"devops/a","tags":["v1"]}"#.to_owned())
                } else if path.starts_with("/v2/devops/a/manifests/sha256:") {
                    let body = r#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}"#;
                    ("405 Method Not Allowed", String::new(), body.to_owned())
                } else {
                    ("404 Not Found", String::new(), "{}".to_owned())
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (host, seen)
}

fn client(host: &str, password: &str) -> RegistryClient {
    let access = RegistryAccess {
        host: host.to_owned(),
        username: Some("wharf".into()),
        password: Some(password.into()),
        insecure: true,
    };
    // The registry's own host is allowed (an admin registered it); nothing else inward.
    RegistryClient::new(access, &wharf_outbound::Policy::default()).unwrap()
}

#[tokio::test]
async fn a_bearer_challenge_is_answered_with_a_token_from_the_realm_and_pages_are_followed() {
    let (host, seen) = stand_in().await;
    let client = client(&host, "pass");
    assert_eq!(client.catalog().await.unwrap(), vec!["devops/a".to_owned(), "devops/b".to_owned()]);
    let seen = seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths[0], "/v2/_catalog?n=1000", "{paths:?}");
    assert!(paths[1].starts_with("/token?service=stand-in&scope=registry%3Acatalog%3A"), "{paths:?}");
    assert_eq!(seen[1].1, BASIC, "the realm gets the credentials");
    // The token is reused for the second page: no second token request.
    assert_eq!(paths[2..], ["/v2/_catalog?n=1000", "/v2/_catalog?last=devops%2Fa&n=1000"], "{paths:?}");
    assert!(seen[2..].iter().all(|(_, auth)| auth == &format!("Bearer {TOKEN}")));
}

#[tokio::test]
async fn a_token_service_that_refuses_the_password_is_named() {
    let (host, _) = stand_in().await;
    let err = client(&host, "wrong").catalog().await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("registry {host} refused the credentials of user `wharf`")), "{text}");
    assert!(text.contains("token service") && text.contains("401"), "{text}");
    assert!(!text.contains("bad credentials"), "the registry's own text is not repeated: {text}");
}

#[tokio::test]
async fn a_token_realm_on_another_internal_address_is_refused() {
    let (host, _) = stand_in().await;
    let err = client(&host, "pass").tags("devops/inward").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("127.0.0.2 is a loopback address") && text.contains("outbound_allow"), "{text}");
    assert!(!text.contains("Connection refused"), "refused before connecting: {text}");
}

#[tokio::test]
async fn a_registry_error_answer_is_its_status_not_its_text() {
    let (host, _) = stand_in().await;
    let err = client(&host, "pass").tags("devops/leaky").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("refused a tag listing: it answered 500 Internal Server Error"), "{text}");
    assert!(!text.contains("10.0.0.5") && !text.contains("database"), "{text}");
}

#[tokio::test]
async fn a_registry_with_deletes_switched_off_says_how_to_switch_them_on() {
    let (host, seen) = stand_in().await;
    let err = client(&host, "pass").delete_tag("devops/a", "v1").await.unwrap_err();
    assert!(matches!(err, RegistryError::DeleteDisabled { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("does not allow deleting images") && text.contains("REGISTRY_STORAGE_DELETE_ENABLED"),
        "{text}"
    );
    let deleted = format!("/v2/devops/a/manifests/sha256:{}", "1".repeat(64));
    assert!(seen.lock().unwrap().iter().any(|(path, _)| *path == deleted), "the DELETE went to the digest");
}
