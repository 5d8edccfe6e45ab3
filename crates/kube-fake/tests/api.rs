//! The API as a plain HTTPS client sees it: the CA, the token, `Status` errors, and watches
//! that resume from a resource version.

use std::time::Duration;

use serde_json::{Value, json};
use wharf_kube_fake::{KubeFake, Options};

fn client(fake: &KubeFake) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(fake.ca_pem().as_bytes()).unwrap();
    reqwest::Client::builder().add_root_certificate(ca).build().unwrap()
}

async fn send(fake: &KubeFake, req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.bearer_auth(fake.token()).send().await.unwrap();
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap())
}

#[tokio::test]
async fn status_errors_tokens_and_resumed_watches() {
    let fake = KubeFake::start(Options::default()).await.unwrap();
    let http = client(&fake);
    let cms = format!("{}/api/v1/namespaces/default/configmaps", fake.url());

    let anonymous = http.get(&cms).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    let (code, missing) = send(&fake, http.get(format!("{cms}/nothere"))).await;
    assert_eq!(code, 404);
    assert_eq!(missing["kind"], "Status");
    assert_eq!(missing["reason"], "NotFound");
    assert_eq!(missing["message"], r#"configmaps "nothere" not found"#);

    let (code, a) = send(
        &fake,
        http.post(&cms).json(&json!({"metadata": {"name": "a", "labels": {"k": "v"}}, "data": {"x": "1"}})),
    )
    .await;
    assert_eq!(code, 201, "{a}");
    assert_eq!(a["kind"], "ConfigMap");
    let rv: u64 = a["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    let (code, again) = send(&fake, http.post(&cms).json(&json!({"metadata": {"name": "a"}}))).await;
    assert_eq!((code, again["reason"].as_str()), (409, Some("AlreadyExists")));

    // A stale resourceVersion on replace is a Conflict.
    let stale = json!({"metadata": {"name": "a", "resourceVersion": "1"}, "data": {}});
    let (code, conflict) = send(&fake, http.put(format!("{cms}/a")).json(&stale)).await;
    assert_eq!((code, conflict["reason"].as_str()), (409, Some("Conflict")));

    // Two changes after `rv`, then a watch from `rv` replays them in order.
    send(&fake, http.post(&cms).json(&json!({"metadata": {"name": "b"}}))).await;
    let patch = http
        .patch(format!("{cms}/a"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"data":{"x":"2"}}"#);
    let (code, patched) = send(&fake, patch).await;
    assert_eq!(code, 200, "{patched}");
    let mut watch = http
        .get(format!("{cms}?watch=true&resourceVersion={rv}&timeoutSeconds=2&labelSelector=k%3Dv"))
        .bearer_auth(fake.token())
        .send()
        .await
        .unwrap();
    let mut text = String::new();
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(5), watch.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 1, "only `a` has the label: {text}");
    assert_eq!(events[0]["type"], "MODIFIED");
    assert_eq!(events[0]["object"]["data"]["x"], "2");
}
