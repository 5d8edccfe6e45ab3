//! Repository bindings at their provider, through the API: repositories and branches,
//! the OAuth flow end to end (authorize address → the provider's page → the callback
//! → a stored token), personal access tokens, and the errors. The provider is
//! `common::provider_mock`, a local server that answers as GitHub, GitLab and Gitee
//! document their APIs; bindings point at it through their instance `url`. No answer
//! may contain a token, the client secret or the code.

mod common;

use common::provider_mock::{self, CLIENT_ID, CLIENT_SECRET, CODE, MockProvider, OAUTH_TOKEN, PAT, WEBHOOK_SECRET};
use common::{Answer, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

/// Every answer a test saw, to check at the end that no secret leaked.
#[derive(Default)]
struct Answers(Vec<String>);

impl Answers {
    fn keep(&mut self, answer: Answer) -> Answer {
        self.0.push(format!("{:?}\n{}", answer.headers, answer.text));
        answer
    }

    #[track_caller]
    fn assert_no_secret(&self) {
        for text in &self.0 {
            for secret in [PAT, OAUTH_TOKEN, CLIENT_SECRET, CODE, WEBHOOK_SECRET, "wrong-token-0001"] {
                assert!(!text.contains(secret), "an answer contains `{secret}`: {text}");
            }
        }
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap().iter().map(|r| r["full_name"].as_str().unwrap().to_owned()).collect()
}

/// A client without the bearer token, like a browser, that does not follow redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn open(client: &reqwest::Client, url: &str) -> Answer {
    Answer::read(client.get(url).send().await.expect("an answer")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_of_each_provider_across_pages() {
    let s = common::start().await;
    let mock = MockProvider::start().await;
    let mut seen = Answers::default();
    provider_mock::bind(&s, "gh", "github", Some(&mock.base), Some(PAT)).await;
    provider_mock::bind(&s, "gl", "gitlab", Some(&mock.base), Some(PAT)).await;
    provider_mock::bind(&s, "ge", "gitee", Some(&mock.base), Some(PAT)).await;

    let gh = seen.keep(s.get("/bindings/gh/repos").await.expect(200)).json;
    assert_eq!(names(&gh), ["octocat/Hello-World", "octocat/Spoon-Knife", "octo-org/wharf"]);
    assert_eq!(gh["total"], 3);
    assert_eq!(
        gh["items"][1],
        json!({
            "full_name": "octocat/Spoon-Knife", "clone_url": "https://github.com/octocat/Spoon-Knife.git",
            "ssh_url": "git@github.com:octocat/Spoon-Knife.git", "default_branch": "main", "private": true
        })
    );
    let gl = seen.keep(s.get("/bindings/gl/repos").await.expect(200)).json;
    assert_eq!(names(&gl), ["diaspora/diaspora-client", "diaspora/infra/deploy", "diaspora/puppet"]);
    assert_eq!(gl["items"][2]["private"], false);
    assert_eq!(gl["items"][1]["private"], true, "internal is not public");
    let ge = seen.keep(s.get("/bindings/ge/repos").await.expect(200)).json;
    assert_eq!(names(&ge), ["oschina/git-osc", "oschina/gitee-go", "wharf/pipeline-demo"]);

    let requests = mock.seen();
    let paths: Vec<(&str, Option<&str>)> =
        requests.iter().map(|r| (r.path.as_str(), r.query.get("page").map(String::as_str))).collect();
    assert_eq!(
        paths,
        [
            ("/api/v3/user/repos", Some("1")),
            ("/api/v3/user/repos", Some("2")),
            ("/api/v4/projects", Some("1")),
            ("/api/v4/projects", Some("2")),
            ("/api/v5/user/repos", Some("1")),
            ("/api/v5/user/repos", Some("2")),
        ]
    );
    for request in &requests {
        assert_eq!(request.token().as_deref(), Some(PAT), "{request:?}");
    }
    assert!(requests[..4].iter().all(|r| r.headers["authorization"] == format!("Bearer {PAT}")));
    assert!(requests[4..].iter().all(|r| !r.headers.contains_key("authorization")), "Gitee takes ?access_token");
    seen.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_with_the_repository_name_as_is_or_encoded() {
    let s = common::start().await;
    let mock = MockProvider::start().await;
    let mut seen = Answers::default();
    provider_mock::bind(&s, "gh", "github", Some(&mock.base), Some(PAT)).await;
    provider_mock::bind(&s, "gl", "gitlab", Some(&mock.base), Some(PAT)).await;
    provider_mock::bind(&s, "ge", "gitee", Some(&mock.base), Some(PAT)).await;

    for path in [
        "/bindings/gh/repos/octocat/Hello-World/branches",
        "/bindings/gh/repos/octocat%2FHello-World/branches",
        "/bindings/gl/repos/diaspora/infra/deploy/branches",
        "/bindings/gl/repos/diaspora%2Finfra%2Fdeploy/branches",
        "/bindings/ge/repos/oschina/git-osc/branches",
    ] {
        let answer = seen.keep(s.get(path).await.expect(200)).json;
        assert_eq!(answer["items"], json!(["main", "feature/login"]), "{path}");
        assert_eq!(answer["total"], 2);
    }
    let answer = s.get("/bindings/gl/repos/diaspora%2Finfra%2Fdeploy/branches").await.json;
    assert_eq!(answer["repository"], "diaspora/infra/deploy");

    let paths: Vec<String> = mock.seen().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths[0], "/api/v3/repos/octocat/Hello-World/branches");
    assert_eq!(paths[1], "/api/v3/repos/octocat/Hello-World/branches");
    assert_eq!(paths[2], "/api/v4/projects/diaspora%2Finfra%2Fdeploy/repository/branches");
    assert_eq!(paths[3], "/api/v4/projects/diaspora%2Finfra%2Fdeploy/repository/branches");
    assert_eq!(paths[4], "/api/v5/repos/oschina/git-osc/branches");

    // A repository the provider does not know is 404; a name that cannot be one is 422
    // (and never reaches the provider); a path that does not end in /branches is no route.
    mock.clear();
    let missing = seen.keep(s.get("/bindings/gh/repos/octocat/nothing/branches").await.expect_error(404));
    assert!(missing.error_text().contains("repository `octocat/nothing` at GitHub"), "{}", missing.text);
    seen.keep(s.get("/bindings/gl/repos/diaspora/gone/branches").await.expect_error(404));
    for bad in
        ["/bindings/gh/repos/a/b/c/branches", "/bindings/gh/repos/..%2F..%2Fx/branches", "/bindings/gl/repos//branches"]
    {
        let answer = seen.keep(s.get(bad).await.expect_error(422));
        assert_eq!(answer.json["error"]["details"][0]["path"], "repo", "{bad}");
    }
    assert_eq!(mock.seen().len(), 2, "only the two 404s reached the provider");
    let answer = seen.keep(s.get("/bindings/gh/repos/octocat/Hello-World/tags").await.expect_error(404));
    assert!(answer.error_text().contains("no such route"), "{}", answer.text);
    seen.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_connects_each_provider_end_to_end() {
    let s = common::start().await;
    let mock = MockProvider::start().await;
    let mut seen = Answers::default();
    let browser = browser();
    for provider in ["github", "gitlab", "gitee"] {
        let name = format!("{provider}-oauth");
        provider_mock::bind(&s, &name, provider, Some(&mock.base), None).await;
        // Without a token there is nothing to list yet.
        let answer = seen.keep(s.get(&format!("/bindings/{name}/repos")).await.expect_error(409));
        assert!(answer.error_text().contains("has no token"), "{}", answer.text);

        // 1. Wharf gives the authorize address (the callback defaults to this server's own).
        let callback = format!("{}/devops/repository/{provider}/redirect", s.base);
        let auth = seen.keep(s.get(&format!("/bindings/{name}/authorize")).await.expect(200)).json;
        assert_eq!(auth["redirect_uri"], callback.as_str());
        assert_eq!(auth["expires_in"], 600);
        let url = reqwest::Url::parse(auth["url"].as_str().unwrap()).unwrap();
        let expected_path = if provider == "github" { "/login/oauth/authorize" } else { "/oauth/authorize" };
        assert_eq!(url.as_str().split('?').next().unwrap(), format!("{}{expected_path}", mock.base));
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["client_id"], CLIENT_ID);
        assert_eq!(query["redirect_uri"], callback);
        let state = query["state"].clone();
        assert!(state.len() >= 32, "a random state: {state}");
        assert!(!auth["url"].as_str().unwrap().contains(CLIENT_SECRET));

        // 2. The browser goes there; the (mock) provider approves and sends it back.
        let approved = browser.get(url.as_str()).send().await.unwrap();
        assert_eq!(approved.status(), 302);
        let back = approved.headers()["location"].to_str().unwrap().to_owned();
        assert!(back.starts_with(&format!("{callback}?code={CODE}&state=")), "{back}");

        // 3. The callback exchanges the code and stores the token.
        let page = seen.keep(open(&browser, &back).await).expect(200);
        assert!(page.header("content-type").unwrap().starts_with("text/html"));
        assert!(page.text.contains("Connected") && page.text.contains(&name), "{}", page.text);
        let stored = s.server.state.store.binding(&name).await.unwrap();
        assert_eq!(stored.token.as_deref(), Some(OAUTH_TOKEN));
        let exchange = mock.seen().into_iter().rfind(|r| r.method == "POST").expect("a token exchange");
        let mut params = exchange.form();
        params.extend(exchange.query.clone());
        assert_eq!(params["code"], CODE);
        assert_eq!(params["client_secret"], CLIENT_SECRET);
        assert_eq!(params["redirect_uri"], callback, "the same redirect_uri as the authorization");

        // The new token lists repositories.
        mock.clear();
        let repos = seen.keep(s.get(&format!("/bindings/{name}/repos")).await.expect(200)).json;
        assert_eq!(repos["total"], 3);
        assert!(mock.seen().iter().all(|r| r.token().as_deref() == Some(OAUTH_TOKEN)));

        // 4. The same state a second time is refused and changes nothing.
        s.server.state.store.set_binding_token(&name, Some(PAT)).await.unwrap();
        let replay = seen.keep(open(&browser, &back).await).expect(400);
        assert!(replay.text.contains("unknown, expired or already used"), "{}", replay.text);
        assert_eq!(s.server.state.store.binding(&name).await.unwrap().token.as_deref(), Some(PAT));
    }
    seen.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_callbacks_are_400_and_store_nothing() {
    let s = common::start().await;
    let mock = MockProvider::start().await;
    let mut seen = Answers::default();
    let browser = browser();
    provider_mock::bind(&s, "gh", "github", Some(&mock.base), None).await;
    let redirect = "https://wharf.example.com/devops/repository/github/redirect";
    let authorize = |s: &TestServer| {
        let url = s.url(&format!("/bindings/gh/authorize?redirect_uri={redirect}"));
        let client = s.client.clone();
        async move {
            let auth = Answer::read(client.get(url).send().await.unwrap()).await.expect(200).json;
            assert_eq!(auth["redirect_uri"], redirect);
            let url = reqwest::Url::parse(auth["url"].as_str().unwrap()).unwrap();
            url.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned()
        }
    };
    let callback = |provider: &str, query: &str| format!("{}/devops/repository/{provider}/redirect?{query}", s.base);

    // Unknown state, no state, no code.
    for query in [format!("code={CODE}&state=made-up"), format!("code={CODE}"), String::new()] {
        seen.keep(open(&browser, &callback("github", &query)).await).expect(400);
    }
    // A GitHub state at GitLab's callback: refused, and used up.
    let state = authorize(&s).await;
    let wrong = seen.keep(open(&browser, &callback("gitlab", &format!("code={CODE}&state={state}"))).await).expect(400);
    assert!(wrong.text.contains("started for GitHub, not GitLab"), "{}", wrong.text);
    seen.keep(open(&browser, &callback("github", &format!("code={CODE}&state={state}"))).await).expect(400);
    // The person said no.
    let state = authorize(&s).await;
    let denied = seen
        .keep(open(&browser, &callback("github", &format!("error=access_denied&error_description=The+user+has+denied+your+application+access.&state={state}"))).await)
        .expect(400);
    assert!(denied.text.contains("access_denied"), "{}", denied.text);
    // A code the provider refuses: 502, the provider's reason, no secret.
    let state = authorize(&s).await;
    let refused =
        seen.keep(open(&browser, &callback("github", &format!("code=stale-code&state={state}"))).await).expect(502);
    assert!(refused.text.contains("bad_verification_code"), "{}", refused.text);
    // A provider Wharf does not know.
    seen.keep(open(&browser, &callback("bitbucket", &format!("code={CODE}&state=x"))).await).expect(404);

    assert_eq!(s.server.state.store.binding("gh").await.unwrap().token, None, "nothing was stored");
    seen.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_needs_an_oauth_app_and_a_provider() {
    let s = common::start().await;
    let mock = MockProvider::start().await;
    let mut seen = Answers::default();
    s.server
        .state
        .store
        .create_binding(&wharf_store::bindings::NewBinding {
            name: "no-app".into(),
            provider: "gitlab".into(),
            url: Some(mock.base.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    provider_mock::bind(&s, "plain", "git", None, Some(PAT)).await;
    let answer = seen.keep(s.get("/bindings/no-app/authorize").await.expect_error(409));
    assert!(answer.error_text().contains("no OAuth app"), "{}", answer.text);
    for path in ["/bindings/plain/authorize", "/bindings/plain/repos", "/bindings/plain/repos/a/b/branches"] {
        let answer = seen.keep(s.get(path).await.expect_error(409));
        assert!(answer.error_text().contains("only github, gitlab and gitee"), "{path}: {}", answer.text);
    }
    for path in ["/bindings/nothing/authorize", "/bindings/nothing/repos", "/bindings/nothing/repos/a/b/branches"] {
        seen.keep(s.get(path).await.expect_error(404));
    }
    provider_mock::bind(&s, "gl", "gitlab", Some(&mock.base), None).await;
    for bad in ["ftp://x/cb", "/relative", "https://x/cb%23frag", "javascript:alert(1)"] {
        let answer = seen.keep(s.get(&format!("/bindings/gl/authorize?redirect_uri={bad}")).await.expect_error(422));
        assert_eq!(answer.json["error"]["details"][0]["path"], "redirect_uri", "{bad}");
    }
    // Behind a proxy, the callback follows X-Forwarded-*.
    let answer = Answer::read(
        s.client
            .get(s.url("/bindings/gl/authorize"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "ci.example.com")
            .send()
            .await
            .unwrap(),
    )
    .await
    .expect(200);
    assert_eq!(answer.json["redirect_uri"], "https://ci.example.com/devops/repository/gitlab/redirect");
    assert!(mock.seen().is_empty(), "authorize calls nothing at the provider");
    seen.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_personal_access_token_replaces_the_token() {
    let s = common::start().await;
    let mock = MockProvider::start().await;
    let mut seen = Answers::default();
    provider_mock::bind(&s, "gl", "gitlab", Some(&mock.base), Some("wrong-token-0001")).await;

    // The stored token is refused by the provider: 502, naming the provider, not the token.
    let refused = seen.keep(s.get("/bindings/gl/repos").await.expect_error(502));
    assert!(refused.error_text().contains("the binding's token was refused by GitLab"), "{}", refused.text);

    let answer = seen.keep(s.call(Method::PUT, "/bindings/gl/token", Some(json!({ "token": PAT }))).await.expect(200));
    assert_eq!(answer.json["name"], "gl");
    assert_eq!(answer.json["has_token"], true);
    assert!(answer.json.get("token").is_none());
    assert_eq!(s.server.state.store.binding("gl").await.unwrap().token.as_deref(), Some(PAT));
    mock.clear();
    seen.keep(s.get("/bindings/gl/repos").await.expect(200));
    assert!(mock.seen().iter().all(|r| r.token().as_deref() == Some(PAT)));

    for body in
        [json!({}), json!({ "token": "" }), json!({ "token": "two words" }), json!({ "token": "x", "extra": 1 })]
    {
        let answer = seen.keep(s.call(Method::PUT, "/bindings/gl/token", Some(body.clone())).await.expect_error(422));
        assert!(!answer.error_text().is_empty(), "{body}");
    }
    seen.keep(s.call(Method::PUT, "/bindings/nothing/token", Some(json!({ "token": PAT }))).await.expect_error(404));
    assert_eq!(s.server.state.store.binding("gl").await.unwrap().token.as_deref(), Some(PAT), "unchanged");

    // Without the bearer token: 401, and nothing changes.
    let plain = reqwest::Client::new();
    let answer = plain.put(s.url("/bindings/gl/token")).json(&json!({ "token": "stolen" })).send().await.unwrap();
    assert_eq!(answer.status(), 401);
    for path in ["/bindings/gl/repos", "/bindings/gl/repos/a/b/branches", "/bindings/gl/authorize"] {
        assert_eq!(plain.get(s.url(path)).send().await.unwrap().status(), 401, "{path}");
    }
    assert_eq!(s.server.state.store.binding("gl").await.unwrap().token.as_deref(), Some(PAT));
    seen.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_provider_is_502() {
    let s = common::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    provider_mock::bind(&s, "ge", "gitee", Some(&format!("http://127.0.0.1:{port}")), Some(PAT)).await;
    let answer = s.get("/bindings/ge/repos").await.expect_error(502);
    assert!(answer.error_text().contains("cannot reach Gitee at 127.0.0.1"), "{}", answer.text);
    assert!(!answer.text.contains(PAT), "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_states_survive_a_restart_and_expiring_tokens_are_refreshed_before_use() {
    use common::provider_mock::{REFRESH_TOKEN, REFRESHED_TOKEN};
    let mock = MockProvider::start().await;
    let browser = browser();
    for provider in ["gitlab", "gitee"] {
        let s = common::start().await;
        let name = format!("{provider}-expiring");
        provider_mock::bind(&s, &name, provider, Some(&mock.base), None).await;
        let auth = s.get(&format!("/bindings/{name}/authorize")).await.expect(200).json;
        let approved = browser.get(auth["url"].as_str().unwrap()).send().await.unwrap();
        let back = approved.headers()["location"].to_str().unwrap().replace(&s.base, "");

        // The server stops and starts again between the authorization and the callback.
        let TestServer { server, dir, .. } = s;
        server.shutdown().await;
        let s = common::start_in(dir).await;
        let page = open(&browser, &format!("{}{back}", s.base)).await.expect(200);
        assert!(page.text.contains("Connected"), "{}", page.text);
        let stored = s.server.state.store.binding(&name).await.unwrap();
        assert_eq!(stored.token.as_deref(), Some(OAUTH_TOKEN));
        assert_eq!(stored.refresh_token.as_deref(), Some(REFRESH_TOKEN));
        let expires = stored.token_expires_at.expect("GitLab and Gitee tokens expire");
        let in_two_hours = jiff::Timestamp::now().as_millisecond() + 7_200_000;
        assert!((in_two_hours - expires).abs() < 60_000, "expires_in 7200 s: {expires}");
        // The state worked once, restart or not.
        open(&browser, &format!("{}{back}", s.base)).await.expect(400);

        // The token expires: the next use refreshes it first.
        let expired = wharf_store::bindings::StoredGrant {
            token: OAUTH_TOKEN.into(),
            expires_at: Some(jiff::Timestamp::now().as_millisecond() - 1000),
            ..Default::default()
        };
        s.server.state.store.set_binding_grant(&name, &expired).await.unwrap();
        mock.clear();
        s.get(&format!("/bindings/{name}/repos")).await.expect(200);
        let seen = mock.seen();
        let refresh = &seen[0];
        let mut params = refresh.form();
        params.extend(refresh.query.clone());
        assert_eq!((refresh.path.as_str(), params["grant_type"].as_str()), ("/oauth/token", "refresh_token"));
        assert_eq!(params["refresh_token"], REFRESH_TOKEN);
        if provider == "gitlab" {
            assert_eq!(params["client_id"], CLIENT_ID);
            assert_eq!(params["client_secret"], CLIENT_SECRET);
            assert_eq!(params["redirect_uri"], auth["redirect_uri"].as_str().unwrap(), "the authorization's");
        }
        assert!(seen[1..].iter().all(|r| r.token().as_deref() == Some(REFRESHED_TOKEN)), "{seen:?}");
        let stored = s.server.state.store.binding(&name).await.unwrap();
        assert_eq!(stored.token.as_deref(), Some(REFRESHED_TOKEN));
        assert_eq!(stored.refresh_token.as_deref(), Some("refresh-2"));
        assert!(stored.token_expires_at.unwrap() > jiff::Timestamp::now().as_millisecond());
        // Fresh now: no second refresh.
        mock.clear();
        s.get(&format!("/bindings/{name}/repos")).await.expect(200);
        assert!(mock.seen().iter().all(|r| r.path != "/oauth/token"));
    }
}
