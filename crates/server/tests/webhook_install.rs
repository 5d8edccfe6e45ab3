//! Saving a pipeline with an `events` trigger installs its repository's webhook at
//! the provider — once per binding and repository — through the provider's
//! documented API (`common::provider_mock` answers as GitHub, GitLab and Gitee do).
//! When Wharf cannot (no `public_url`, no token, Gitee over plain http) or the
//! provider refuses, the pipeline is saved all the same and the answer says what to do.

mod common;

use common::TestServer;
use common::provider_mock::{self, MockProvider, PAT, WEBHOOK_SECRET};
use reqwest::Method;
use serde_json::{Value, json};

const PUBLIC: &str = "https://ci.example.com";

/// A pipeline on `repo` started by pushes, merges and tags, bound to `binding` (or to
/// whichever binding serves the host, when empty).
fn pipeline(name: &str, repo: &str, binding: &str) -> String {
    let binding = if binding.is_empty() { String::new() } else { format!("  binding: {binding}\n") };
    format!(
        "name: {name}\nsource:\n  repo: '{repo}'\n  branch: main\n{binding}triggers:\n  - events: [push, merge, tag]\n\
         stages:\n  - name: Build\n    tasks:\n      - {{name: t, type: script, script: 'true'}}\n"
    )
}

async fn server(public_url: Option<&str>) -> TestServer {
    let public_url = public_url.map(str::to_owned);
    common::start_with(tempfile::tempdir().unwrap(), move |config| config.public_url = public_url).await
}

fn hook_posts(mock: &MockProvider) -> Vec<common::provider_mock::Seen> {
    mock.seen().into_iter().filter(|r| r.method == "POST" && r.path.ends_with("/hooks")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_gets_one_hook_however_often_the_pipeline_is_saved() {
    let s = server(Some(PUBLIC)).await;
    let mock = MockProvider::start().await;
    let cases = [
        ("gh", "github", "octocat/Hello-World", "/api/v3/repos/octocat/Hello-World/hooks"),
        ("gl", "gitlab", "diaspora/infra/deploy", "/api/v4/projects/diaspora%2Finfra%2Fdeploy/hooks"),
        ("ge", "gitee", "oschina/git-osc", "/api/v5/repos/oschina/git-osc/hooks"),
    ];
    for (name, provider, repository, path) in cases {
        provider_mock::bind(&s, name, provider, Some(&mock.base), Some(PAT)).await;
        mock.clear();
        let repo = format!("{}/{repository}.git", mock.base);
        let saved = s.send_yaml(Method::POST, "/pipelines", &pipeline(&format!("on-{name}"), &repo, name)).await;
        let saved = saved.expect(201).json;
        let hook = &saved["webhook"];
        let url = format!("{PUBLIC}/hooks/{provider}/{name}");
        assert_eq!(hook["status"], "installed", "{saved:#}");
        assert_eq!((hook["binding"].as_str(), hook["repository"].as_str()), (Some(name), Some(repository)));
        assert_eq!(hook["url"], url.as_str());
        assert!(hook["hook_id"].as_str().is_some_and(|id| !id.is_empty()), "{hook}");

        // First a look at the hooks there, then the creation, with the token.
        let seen = mock.seen();
        assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", path));
        let posts = hook_posts(&mock);
        assert_eq!(posts.len(), 1);
        assert_eq!(posts[0].path, path);
        assert_eq!(posts[0].token().as_deref(), Some(PAT));
        let body: Value = serde_json::from_str(&posts[0].body).unwrap();
        match provider {
            "github" => assert_eq!(
                body,
                json!({ "name": "web", "active": true, "events": ["push", "pull_request"],
                        "config": { "url": url, "content_type": "json", "secret": WEBHOOK_SECRET, "insecure_ssl": "0" } })
            ),
            "gitlab" => assert_eq!(
                body,
                json!({ "url": url, "token": WEBHOOK_SECRET, "push_events": true, "tag_push_events": true,
                        "merge_requests_events": true, "enable_ssl_verification": true })
            ),
            _ => {
                assert_eq!(
                    (body["url"].as_str(), body["password"].as_str()),
                    (Some(url.as_str()), Some(WEBHOOK_SECRET))
                );
                assert_eq!(body["encryption_type"], 1, "signature mode");
                assert_eq!((&body["push_events"], &body["merge_requests_events"]), (&json!(true), &json!(true)));
            }
        }
        assert!(!saved.to_string().contains(WEBHOOK_SECRET) && !saved.to_string().contains(PAT));

        // Saving again (a new version) and another pipeline on the same repository:
        // the hook is found, none is added.
        let id = common::id_of(&saved);
        let yaml = pipeline(&format!("on-{name}"), &repo, name);
        let again = s.send_yaml(Method::PUT, &format!("/pipelines/{id}"), &yaml).await.expect(200).json;
        assert_eq!(again["webhook"]["status"], "present", "{again:#}");
        assert_eq!(again["webhook"]["hook_id"], hook["hook_id"]);
        let yaml = pipeline(&format!("also-{name}"), &repo, name);
        let other = s.send_yaml(Method::POST, "/pipelines", &yaml).await.expect(201).json;
        assert_eq!(other["webhook"]["status"], "present");
        assert_eq!(hook_posts(&mock).len(), 1, "no duplicate hook");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_wharf_cannot_install_the_answer_says_how() {
    let mock = MockProvider::start().await;

    // No public_url: the address to give the provider by hand, from the request's Host.
    let s = server(None).await;
    provider_mock::bind(&s, "gh", "github", Some(&mock.base), Some(PAT)).await;
    let repo = format!("{}/octocat/Hello-World.git", mock.base);
    let saved = s.send_yaml(Method::POST, "/pipelines", &pipeline("p", &repo, "gh")).await.expect(201).json;
    let hook = &saved["webhook"];
    assert_eq!(hook["status"], "manual", "{saved:#}");
    let host = s.base.strip_prefix("http://").unwrap();
    assert_eq!(hook["url"], format!("http://{host}/hooks/github/gh"));
    let message = hook["message"].as_str().unwrap();
    assert!(message.contains("public_url") && message.contains("by hand"), "{message}");
    assert!(hook_posts(&mock).is_empty() && mock.seen().is_empty(), "nothing was asked of the provider");

    // Gitee over plain http: its signature does not cover the body, so not installed.
    let s = server(Some("http://ci.example.com")).await;
    provider_mock::bind(&s, "ge", "gitee", Some(&mock.base), Some(PAT)).await;
    let repo = format!("{}/oschina/git-osc.git", mock.base);
    let saved = s.send_yaml(Method::POST, "/pipelines", &pipeline("p", &repo, "ge")).await.expect(201).json;
    assert_eq!(saved["webhook"]["status"], "manual");
    assert!(saved["webhook"]["message"].as_str().unwrap().contains("https://"), "{saved:#}");

    // No token.
    provider_mock::bind(&s, "gl", "gitlab", Some(&mock.base), None).await;
    let repo = format!("{}/diaspora/infra/deploy.git", mock.base);
    let saved = s.send_yaml(Method::POST, "/pipelines", &pipeline("q", &repo, "gl")).await.expect(201).json;
    assert_eq!(saved["webhook"]["status"], "manual");
    assert!(saved["webhook"]["message"].as_str().unwrap().contains("has no token"), "{saved:#}");

    // The provider refuses (a repository it does not know): saved anyway, and why.
    s.server.state.store.set_binding_token("gl", Some(PAT)).await.unwrap();
    let repo = format!("{}/diaspora/gone.git", mock.base);
    let saved = s.send_yaml(Method::POST, "/pipelines", &pipeline("r", &repo, "gl")).await.expect(201).json;
    assert_eq!(saved["webhook"]["status"], "failed", "{saved:#}");
    assert!(saved["webhook"]["message"].as_str().unwrap().contains("not found at GitLab"), "{saved:#}");
    s.get(&format!("/pipelines/{}", common::id_of(&saved))).await.expect(200);

    // Without source.binding, the binding serving the host is found; two are ambiguous.
    let unbound = s.send_yaml(Method::POST, "/pipelines", &pipeline("s", &repo, "")).await.expect(201).json;
    let message = unbound["webhook"]["message"].as_str().unwrap();
    assert!(message.contains("`ge`") && message.contains("`gl`") && message.contains("source.binding"), "{message}");

    // A pipeline without events triggers has no webhook (a local repository's is below).
    let plain = "name: plain\nsource: {repo: 'file:///srv/git/app.git', branch: main}\ntriggers:\n  - every_minutes: 5\n\
                 stages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: 'true'}\n";
    let saved = s.send_yaml(Method::POST, "/pipelines", plain).await.expect(201).json;
    assert!(saved.get("webhook").is_none(), "{saved:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_binding_is_neither_used_nor_named_for_a_pipeline_naming_none() {
    let s = server(Some(PUBLIC)).await;
    let mock = MockProvider::start().await;
    // The admin's binding serves the mock's host; a manager's pipeline on a repository
    // there names no binding.
    provider_mock::bind(&s, "admins-gh", "github", Some(&mock.base), Some(PAT)).await;
    let manager = s.user("mona", "manager", &["web"]).await;
    let repo = format!("{}/octocat/Hello-World.git", mock.base);
    let yaml = format!("project: web\n{}", pipeline("monas", &repo, ""));
    let saved = manager.send_yaml(Method::POST, "/pipelines", &yaml).await.expect(201);
    assert!(saved.json.get("webhook").is_none(), "no binding of hers serves the host: {:#}", saved.json);
    assert!(!saved.text.contains("admins-gh"), "{}", saved.text);
    assert!(mock.seen().is_empty(), "the admin's token was not used: {:?}", mock.seen());

    // Her own binding for that host is the one used (created by the admin's hand in the
    // store, as only admins set instance URLs).
    s.server
        .state
        .store
        .create_binding(&wharf_store::bindings::NewBinding {
            name: "monas-gh".into(),
            provider: "github".into(),
            url: Some(mock.base.clone()),
            token: Some(PAT.into()),
            webhook_secret: Some(WEBHOOK_SECRET.into()),
            created_by: "mona".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = common::id_of(&saved.json);
    let again = manager.send_yaml(Method::PUT, &format!("/pipelines/{id}"), &yaml).await.expect(200).json;
    assert_eq!(again["webhook"]["binding"], "monas-gh", "{again:#}");
    assert_eq!(again["webhook"]["status"], "installed", "{again:#}");
    assert!(!again.to_string().contains("admins-gh"), "{again:#}");
}

/// A push trigger on a repository on the server's own disk can never fire by itself:
/// the pipeline is saved, and the answer says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_repository_gets_a_word_that_its_events_never_come() {
    let s = server(Some(PUBLIC)).await;
    let saved = s.send_yaml(Method::POST, "/pipelines", &pipeline("local", "file:///srv/git/app.git", "")).await;
    let saved = saved.expect(201).json;
    assert_eq!(saved["webhook"]["status"], "manual", "{saved:#}");
    let message = saved["webhook"]["message"].as_str().unwrap();
    assert!(message.contains("never fires by itself"), "{message}");
    assert!(message.contains("file:///srv/git/app.git"), "{message}");
}
