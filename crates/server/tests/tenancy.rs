//! Tenancy and security through the real HTTP API: the permission matrix of seed 002
//! §2.5 walked cell by cell (every role × every action × own / same-project /
//! other-project / Default-admin objects), denied calls changing nothing, secrets
//! never shown (answers, logs, the database file), sessions (cookie flags, CSRF,
//! fixation, logout), token expiry, revocation and scope, login lockout, the audit
//! log, the pipeline quota, bootstrap and key rotation.

mod common;

use common::{Answer, As, TestServer, id_of};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The seed's table as the test reads it, independently of the server's own copy:
/// `[cloud admin, department admin / project manager, normal user]`.
/// `all` = √, `default` = only the Default/admin project, `joined` = only joined
/// projects, `own` = only objects the user created, `-` = blank.
const SEED: &[(&str, [&str; 3])] = &[
    ("view", ["all", "joined", "own"]),
    ("create", ["default", "joined", "-"]),
    ("copy", ["all", "joined", "-"]),
    ("run/stop", ["all", "joined", "-"]),
    ("edit", ["own", "own", "-"]),
    ("edit triggers", ["own", "own", "-"]),
    ("advanced settings", ["own", "own", "-"]),
    ("activate/deactivate", ["all", "joined", "-"]),
    ("delete", ["all", "joined", "-"]),
];

const ROLES: [&str; 3] = ["admin", "manager", "user"];

/// Which object a cell is tried on, relative to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Created by the caller (in its own project: `admin` for the cloud admin, `alpha`
    /// for the others).
    Own,
    /// In project `alpha` (joined by the manager and the user), created by someone else.
    SameProject,
    /// In project `beta`, which nobody here joined, created by someone else.
    OtherProject,
    /// In the Default department's project `admin`, created by someone else.
    DefaultAdmin,
}

const KINDS: [Kind; 4] = [Kind::Own, Kind::SameProject, Kind::OtherProject, Kind::DefaultAdmin];

fn project_of(role: &str, kind: Kind) -> &'static str {
    match kind {
        Kind::Own if role == "admin" => "admin",
        Kind::Own | Kind::SameProject => "alpha",
        Kind::OtherProject => "beta",
        Kind::DefaultAdmin => "admin",
    }
}

/// The seed's answer for one cell.
fn expected(role: &str, action: &str, kind: Kind) -> bool {
    let column = ROLES.iter().position(|r| *r == role).unwrap();
    let cell = SEED.iter().find(|(a, _)| *a == action).unwrap().1[column];
    let project = project_of(role, kind);
    let joined = |p: &str| role != "admin" && p == "alpha";
    match cell {
        "all" => true,
        "default" => project == "admin",
        "joined" => joined(project),
        "own" => kind == Kind::Own,
        "-" => false,
        other => panic!("unknown cell {other}"),
    }
}

fn pipeline_yaml(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\n{extra}stages:\n  - name: Main\n    tasks:\n      - name: main\n        type: script\n        script: echo hi\n"
    )
}

/// The people of the test: the built-in admin (test token), a second cloud admin who
/// owns the Default/admin objects, a manager and a normal user of `alpha`, another
/// manager of `alpha`, and a manager of `beta`.
struct People<'a> {
    by_role: BTreeMap<&'static str, As<'a>>,
    admin2: As<'a>,
    alpha2: As<'a>,
    beta: As<'a>,
}

async fn people(s: &TestServer) -> People<'_> {
    let admin = As { s, name: "admin".into(), token: common::TOKEN.into() };
    let manager = s.user("mia", "manager", &["alpha"]).await;
    let user = s.user("uma", "user", &["alpha"]).await;
    let admin2 = s.user("ada", "admin", &[]).await;
    let alpha2 = s.user("alf", "manager", &["alpha"]).await;
    let beta = s.user("bea", "manager", &["beta"]).await;
    let by_role = BTreeMap::from([("admin", admin), ("manager", manager), ("user", user)]);
    People { by_role, admin2, alpha2, beta }
}

/// Makes a pipeline of `kind` for the caller of `role`; answers its id.
async fn fixture(s: &TestServer, p: &People<'_>, role: &str, kind: Kind, name: &str) -> i64 {
    let yaml = pipeline_yaml(name, "");
    let creator = match kind {
        Kind::Own if role == "user" => {
            // A normal user cannot create pipelines (seed: blank), yet owns what it
            // created before (say, as a manager): stored as such directly.
            let row = s.server.state.store.create_pipeline_by("alpha", name, &yaml, "uma", None).await.unwrap();
            return row.id;
        }
        Kind::Own => &p.by_role[role],
        Kind::SameProject => &p.alpha2,
        Kind::OtherProject => &p.beta,
        Kind::DefaultAdmin => &p.admin2,
    };
    let project = project_of(role, kind);
    let created = creator.send_yaml(Method::POST, &format!("/pipelines?project={project}"), &yaml).await;
    id_of(&created.expect(201).json)
}

/// What the admin sees of a pipeline and the installation: compared before and after
/// a denied call.
async fn snapshot(s: &TestServer, id: i64) -> Value {
    let shown = s.get(&format!("/pipelines/{id}")).await;
    let yaml = s.get(&format!("/pipelines/{id}/yaml")).await;
    let runs = s.get(&format!("/pipelines/{id}/runs")).await;
    let all = s.get("/pipelines?limit=200").await;
    let mut shown = shown.json;
    if let Some(o) = shown.as_object_mut() {
        o.remove("active_runs");
    }
    json!({ "shown": shown, "yaml": yaml.text, "runs": runs.json["total"], "count": all.json["total"] })
}

/// Tries one action on pipeline `id` as `who`; answers the status (for creation, the
/// status of creating a pipeline in the fixture's project).
async fn attempt(who: &As<'_>, action: &str, id: i64, name: &str, project: &str) -> u16 {
    let path = format!("/pipelines/{id}");
    let answer: Answer = match action {
        "view" => who.get(&path).await,
        "create" => {
            let yaml = pipeline_yaml(&format!("{name}-new"), "");
            who.send_yaml(Method::POST, &format!("/pipelines?project={project}"), &yaml).await
        }
        "copy" => who.post(&format!("{path}/copy"), json!({ "name": format!("{name}-copy") })).await,
        "run/stop" => who.post(&format!("{path}/runs"), json!({})).await,
        "edit" => who.send_yaml(Method::PUT, &path, &pipeline_yaml(name, "").replace("echo hi", "echo edited")).await,
        "edit triggers" => {
            who.send_yaml(Method::PUT, &path, &pipeline_yaml(name, "triggers:\n  - every_minutes: 30\n")).await
        }
        "advanced settings" => who.send_yaml(Method::PUT, &path, &pipeline_yaml(name, "timeout: 30\n")).await,
        "activate/deactivate" => who.post(&format!("{path}/deactivate"), json!({})).await,
        "delete" => who.call(Method::DELETE, &path, None).await,
        other => panic!("unknown action {other}"),
    };
    answer.status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_permission_matrix_holds_cell_by_cell_through_the_api() {
    let s = common::start().await;
    let p = people(&s).await;
    let mut problems = Vec::new();
    let mut cells = 0;
    for role in ROLES {
        let who = &p.by_role[role];
        for (action, _) in SEED {
            for kind in KINDS {
                cells += 1;
                let name = format!("{role}-{}-{kind:?}", action.replace(['/', ' '], "-")).to_lowercase();
                let id = fixture(&s, &p, role, kind, &name).await;
                let before = snapshot(&s, id).await;
                let status = attempt(who, action, id, &name, project_of(role, kind)).await;
                let allow = expected(role, action, kind);
                let sees = expected(role, "view", kind);
                let what = format!("{role} × {action} × {kind:?}");
                if allow {
                    if !(200..300).contains(&status) {
                        problems.push(format!("{what}: expected allowed, got {status}"));
                    }
                } else {
                    // Hidden objects are 404 (existence does not leak); seen ones 403.
                    let want = if sees || *action == "create" { 403 } else { 404 };
                    if status != want {
                        problems.push(format!("{what}: expected {want}, got {status}"));
                    }
                    let after = snapshot(&s, id).await;
                    if before != after {
                        problems.push(format!("{what}: the denied call changed something:\n{before}\n{after}"));
                    }
                }
            }
        }
    }
    assert_eq!(cells, 3 * 9 * 4);
    assert!(problems.is_empty(), "{} of {cells} cells wrong:\n{}", problems.len(), problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_runs_and_logs_follow_the_pipeline() {
    let s = common::start().await;
    let p = people(&s).await;
    let mine = fixture(&s, &p, "manager", Kind::Own, "mine").await;
    let theirs = fixture(&s, &p, "manager", Kind::OtherProject, "theirs").await;
    let users = fixture(&s, &p, "user", Kind::Own, "users-own").await;
    let run = id_of(&p.beta.post(&format!("/pipelines/{theirs}/runs"), json!({})).await.expect(201).json);
    s.wait_run(run).await;

    let listed = |answer: Answer| -> Vec<i64> {
        answer.expect(200).json["items"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect()
    };
    let manager = &p.by_role["manager"];
    let seen = listed(manager.get("/pipelines").await);
    assert!(seen.contains(&mine) && seen.contains(&users) && !seen.contains(&theirs), "{seen:?}");
    assert_eq!(listed(p.by_role["user"].get("/pipelines").await), vec![users]);
    assert!(listed(s.get("/pipelines?limit=200").await).contains(&theirs));

    // A run of a pipeline the caller may not see is not found, by any route.
    for path in [format!("/runs/{run}"), format!("/runs/{run}/log"), format!("/runs/{run}/tasks/main/log")] {
        let answer = manager.get(&path).await.expect_error(404);
        assert!(!answer.text.contains("theirs"), "the pipeline's name leaks: {}", answer.text);
    }
    manager.post(&format!("/runs/{run}/rerun"), json!({})).await.expect_error(404);
    manager.get(&format!("/pipelines/{theirs}/schedule")).await.expect_error(404);
    p.beta.get(&format!("/runs/{run}/log")).await.expect(200);
    // The cloud admin sees it (√) and may re-run it (√).
    s.post(&format!("/runs/{run}/rerun"), json!({})).await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_take_effect_at_once() {
    let s = common::start().await;
    let p = people(&s).await;
    let beta_pipeline = fixture(&s, &p, "manager", Kind::OtherProject, "in-beta").await;
    let manager = &p.by_role["manager"];
    manager.get(&format!("/pipelines/{beta_pipeline}")).await.expect_error(404);
    let joined = s.call(Method::PUT, "/users/mia", Some(json!({ "projects": ["alpha", "beta"] }))).await;
    assert_eq!(joined.expect(200).json["projects"], json!(["alpha", "beta"]));
    manager.get(&format!("/pipelines/{beta_pipeline}")).await.expect(200);
    manager.post(&format!("/pipelines/{beta_pipeline}/deactivate"), json!({})).await.expect(200);
    // Demoted to a normal user: only what it created.
    s.call(Method::PUT, "/users/mia", Some(json!({ "role": "user" }))).await.expect(200);
    manager.get(&format!("/pipelines/{beta_pipeline}")).await.expect_error(404);
    // Only admins change users; the built-in admin stays an admin.
    manager.call(Method::PUT, "/users/mia", Some(json!({ "role": "admin" }))).await.expect_error(403);
    s.call(Method::PUT, "/users/admin", Some(json!({ "role": "user" }))).await.expect_error(422);
    s.call(Method::PUT, "/users/mia", Some(json!({ "projects": ["ghost"] }))).await.expect_error(422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_repositories_are_their_creators_only_for_every_role() {
    let s = common::start().await;
    let p = people(&s).await;
    for role in ROLES {
        let who = &p.by_role[role];
        let mine = format!("{role}-binding");
        who.post("/bindings", json!({ "name": mine, "provider": "github", "token": "t0k3n-of-mine" }))
            .await
            .expect(201);
        let others = format!("{role}-others");
        p.beta.post("/bindings", json!({ "name": others, "provider": "github" })).await.expect(201);

        // View, set, log out: own only; another's is not found, and stays as it was.
        who.get(&format!("/bindings/{mine}")).await.expect(200);
        who.get(&format!("/bindings/{others}")).await.expect_error(404);
        let names: Vec<String> = who.get("/bindings").await.expect(200).json["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(names.contains(&mine) && !names.contains(&others), "{role}: {names:?}");
        who.call(Method::PUT, &format!("/bindings/{mine}/token"), Some(json!({ "token": "new-t0k3n" })))
            .await
            .expect(200);
        who.call(Method::PUT, &format!("/bindings/{others}/token"), Some(json!({ "token": "hijack" })))
            .await
            .expect_error(404);
        assert_eq!(s.server.state.store.binding(&others).await.unwrap().token, None, "denied: nothing changed");
        who.call(Method::DELETE, &format!("/bindings/{others}"), None).await.expect_error(404);
        p.beta.get(&format!("/bindings/{others}")).await.expect(200);
        who.call(Method::DELETE, &format!("/bindings/{mine}"), None).await.expect(204);
    }
}

// ---------------------------------------------------------------------------------
// Secrets

const SECRET: &str = "sUp3r-s3cret-Value-8f2a91";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_show_in_answers_logs_or_the_database_file() {
    let s = common::start().await;
    s.call(Method::PUT, "/secrets/API_KEY", Some(json!({ "value": SECRET }))).await.expect(201);
    s.call(Method::PUT, "/secrets/API_KEY", Some(json!({ "value": SECRET }))).await.expect(204);
    let multi = "-----BEGIN KEY-----\nline0ne-Of-the-key-aaaa\nline2two-Of-the-key-bbbb\n-----END KEY-----";
    s.call(Method::PUT, "/secrets/PEM", Some(json!({ "value": multi }))).await.expect(201);
    s.post(
        "/bindings",
        json!({ "name": "gh", "provider": "github", "token": "ghp_bindingTOKEN123456", "client_secret": "cl1ent-SECRET-xyz", "webhook_secret": "hook-SECRET-987" }),
    )
    .await
    .expect(201);

    // A script that prints the secret every way it can think of.
    let script = [
        r#"echo "plain: $API_KEY""#,
        r#"printf '%s' "$API_KEY" | base64"#,
        r#"echo "$API_KEY" | base64"#,
        r#"printf 'token=%s&x=1' "$API_KEY" | base64"#,
        r#"printf '%s' "$API_KEY" | cut -c1-10; sleep 0.2; printf '%s\n' "$API_KEY" | cut -c11-"#,
        r#"printf 'cut in two: %s' "$(printf '%s' "$API_KEY" | cut -c1-10)"; sleep 0.2; printf '%s\n' "$(printf '%s' "$API_KEY" | cut -c11-)""#,
        r#"echo "$PEM""#,
        r#"echo "$API_KEY" >&2"#,
    ]
    .join("\n          ");
    let yaml = format!(
        "name: leaky\nstages:\n  - name: Main\n    tasks:\n      - name: main\n        type: script\n        secrets: [API_KEY, PEM]\n        script: |\n          {script}\n"
    );
    let id = id_of(&s.create(&yaml).await);
    let run = id_of(&s.start_run(id, json!({})).await);
    let finished = s.wait_run(run).await;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    let log = s.get(&format!("/runs/{run}/tasks/main/log")).await.expect(200).text;
    assert!(log.contains("plain: ***"), "{log}");
    assert!(log.contains("cut in two: ***"), "the secret written in two pieces is masked whole: {log}");

    use base64::Engine;
    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
    let forbidden: Vec<String> = vec![
        SECRET.into(),
        b64(SECRET).trim_end_matches('=').into(),
        b64(&format!("{SECRET}\n")).trim_end_matches('=').into(),
        b64(&format!("token={SECRET}&x=1"))[8..28].into(),
        "line0ne-Of-the-key-aaaa".into(),
        "line2two-Of-the-key-bbbb".into(),
    ];
    let whole = s.get(&format!("/runs/{run}/log")).await.expect(200).text;
    for text in [&log, &whole] {
        for f in &forbidden {
            assert!(!text.contains(f.as_str()), "`{f}` shows in the log:\n{text}");
        }
    }
    // Known limit (docs/api.md): the halves printed on separate lines are each shown.
    // Answers: never a value.
    for path in ["/secrets", "/secrets?project=admin", &format!("/runs/{run}"), "/bindings", "/bindings/gh", "/audit"] {
        let text = s.get(path).await.expect(200).text;
        for f in [SECRET, "ghp_bindingTOKEN123456", "cl1ent-SECRET-xyz", "hook-SECRET-987", "line0ne"] {
            assert!(!text.contains(f), "{path} shows `{f}`: {text}");
        }
    }
    let names = s.get("/secrets").await.json;
    assert_eq!(names["items"][0]["name"], "API_KEY", "{names}");
    // The database file (and its write-ahead log) holds no secret in plain text.
    let dir = s.dir.path().join("data");
    let mut bytes = Vec::new();
    for file in ["wharf.db", "wharf.db-wal"] {
        bytes.extend(std::fs::read(dir.join(file)).unwrap_or_default());
    }
    assert!(!bytes.is_empty());
    for f in [SECRET, "ghp_bindingTOKEN123456", "cl1ent-SECRET-xyz", "hook-SECRET-987", "line0ne-Of-the-key"] {
        assert!(!bytes.windows(f.len()).any(|w| w == f.as_bytes()), "`{f}` is in the database file in plain text");
    }
    // The key file is the owner's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("secret.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

/// A one-character secret would mask that letter in every log of the project: values
/// shorter than 8 characters are refused, naming the secret and the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_shorter_than_eight_characters_are_refused() {
    let s = common::start().await;
    for short in ["e", "1234567", "ééééééé"] {
        let answer = s.call(Method::PUT, "/secrets/SHORT", Some(json!({ "value": short }))).await.expect_error(422);
        let text = answer.error_text();
        assert!(text.contains("`SHORT`") && text.contains("value: ") && text.contains("at least 8"), "{text}");
    }
    assert_eq!(s.get("/secrets").await.json["total"], 0, "nothing stored");
    s.call(Method::PUT, "/secrets/SHORT", Some(json!({ "value": "12345678" }))).await.expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_per_project_and_for_admins_and_managers_only() {
    let s = common::start().await;
    let p = people(&s).await;
    let manager = &p.by_role["manager"];
    manager
        .call(Method::PUT, "/secrets/TOKEN?project=alpha", Some(json!({ "value": "alpha-value" })))
        .await
        .expect(201);
    manager.call(Method::PUT, "/secrets/TOKEN?project=beta", Some(json!({ "value": "x" }))).await.expect_error(403);
    p.by_role["user"]
        .call(Method::PUT, "/secrets/T?project=alpha", Some(json!({ "value": "x" })))
        .await
        .expect_error(403);
    manager.get("/secrets?project=beta").await.expect_error(403);
    assert_eq!(manager.get("/secrets").await.json["total"], 1);
    assert_eq!(p.beta.get("/secrets").await.json["total"], 0);
    // A pipeline of project beta does not get alpha's secret.
    let yaml = "name: wants\nstages:\n  - name: M\n    tasks:\n      - name: t\n        type: script\n        secrets: [TOKEN]\n        script: echo $TOKEN\n";
    let id = id_of(&p.beta.send_yaml(Method::POST, "/pipelines?project=beta", yaml).await.expect(201).json);
    let refused = p.beta.post(&format!("/pipelines/{id}/runs"), json!({})).await.expect_error(422);
    assert!(refused.error_text().contains("the secret `TOKEN` is not set"), "{}", refused.text);
}

// ---------------------------------------------------------------------------------
// Sessions, CSRF, tokens, lockout, audit

fn set_cookie(answer: &Answer) -> String {
    answer.header("set-cookie").expect("a Set-Cookie header").to_owned()
}

fn session_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_owned()
}

async fn login(s: &TestServer, name: &str, password: &str, cookie: Option<&str>) -> Answer {
    let mut request =
        reqwest::Client::new().post(format!("{}/login", s.base)).json(&json!({ "name": name, "password": password }));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    Answer::read(request.send().await.unwrap()).await
}

async fn with_cookie(
    s: &TestServer,
    method: Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut request = reqwest::Client::new().request(method, s.url(path)).header("cookie", cookie);
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    Answer::read(request.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sessions_are_strict_cookies_with_csrf_and_no_fixation() {
    let s = common::start().await;
    let answer = login(&s, "admin", common::ADMIN_PASSWORD, None).await.expect(200);
    let header = set_cookie(&answer);
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(header.contains(flag), "{header}");
    }
    let cookie = session_of(&header);
    let csrf = answer.json["csrf_token"].as_str().unwrap().to_owned();
    let me = with_cookie(&s, Method::GET, "/me", &cookie, None, None).await.expect(200).json;
    assert_eq!((me["name"].as_str(), me["via"].as_str()), (Some("admin"), Some("session")));
    assert_eq!(me["csrf_token"], csrf.as_str());

    // A change on the cookie without the CSRF token (what a forged cross-site form
    // sends) is refused and changes nothing; with it, it works.
    let scratch = json!({ "name": "via-session" });
    let forged = with_cookie(&s, Method::POST, "/pipelines/scratch", &cookie, None, Some(scratch.clone())).await;
    assert!(forged.expect_error(403).error_text().contains("CSRF"));
    let wrong =
        with_cookie(&s, Method::POST, "/pipelines/scratch", &cookie, Some("guess"), Some(scratch.clone())).await;
    wrong.expect_error(403);
    s.get("/pipelines/via-session").await.expect_error(404);
    with_cookie(&s, Method::POST, "/pipelines/scratch", &cookie, Some(&csrf), Some(scratch)).await.expect(201);
    // Bearer calls need no CSRF token.
    s.post("/pipelines/scratch", json!({ "name": "via-token" })).await.expect(201);

    // Fixation: a session id chosen by an attacker is never adopted; logging in again
    // ends the session the browser brought.
    let planted = "wharf_session=attacker-chosen-id";
    let fresh = login(&s, "admin", common::ADMIN_PASSWORD, Some(planted)).await.expect(200);
    let fresh_cookie = session_of(&set_cookie(&fresh));
    assert_ne!(fresh_cookie, planted);
    with_cookie(&s, Method::GET, "/me", planted, None, None).await.expect_error(401);
    let again = login(&s, "admin", common::ADMIN_PASSWORD, Some(&fresh_cookie)).await.expect(200);
    let again_cookie = session_of(&set_cookie(&again));
    assert_ne!(again_cookie, fresh_cookie, "a new id at every login");
    with_cookie(&s, Method::GET, "/me", &fresh_cookie, None, None).await.expect_error(401);

    // Logout ends it.
    let again_csrf = again.json["csrf_token"].as_str().unwrap().to_owned();
    let out = with_cookie(&s, Method::POST, "/logout", &again_cookie, Some(&again_csrf), None).await.expect(204);
    assert!(set_cookie(&out).contains("Max-Age=0"));
    with_cookie(&s, Method::GET, "/me", &again_cookie, None, None).await.expect_error(401);

    // A form login works the same (the UI's form posts to /login).
    let form = reqwest::Client::new()
        .post(format!("{}/login", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username=admin&password={}", common::ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    Answer::read(form).await.expect(200);
    // A cross-site login attempt (another Origin) is refused.
    let cross = reqwest::Client::new()
        .post(format!("{}/login", s.base))
        .header("origin", "https://evil.example")
        .json(&json!({ "name": "admin", "password": common::ADMIN_PASSWORD }))
        .send()
        .await
        .unwrap();
    Answer::read(cross).await.expect_error(403);
}

/// A new password or role ends the user's other sessions at once; the session that
/// changed its own password stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_or_role_change_ends_the_users_other_sessions() {
    let s = common::start().await;
    s.user("ann", "admin", &[]).await;
    let first = session_of(&set_cookie(&login(&s, "ann", "ann-password", None).await.expect(200)));
    let second = login(&s, "ann", "ann-password", None).await.expect(200);
    let second_csrf = second.json["csrf_token"].as_str().unwrap().to_owned();
    let second = session_of(&set_cookie(&second));
    with_cookie(&s, Method::GET, "/me", &first, None, None).await.expect(200);

    // Ann changes her own password on her second session: the first one ends.
    let change = json!({ "password": "ann-new-password" });
    with_cookie(&s, Method::PUT, "/users/ann", &second, Some(&second_csrf), Some(change)).await.expect(200);
    with_cookie(&s, Method::GET, "/me", &first, None, None).await.expect_error(401);
    with_cookie(&s, Method::GET, "/me", &second, None, None).await.expect(200);
    login(&s, "ann", "ann-password", None).await.expect_error(401);

    // An admin's change ends every session of that user; so does a role change.
    let third = session_of(&set_cookie(&login(&s, "ann", "ann-new-password", None).await.expect(200)));
    s.call(Method::PUT, "/users/ann", Some(json!({ "password": "set-by-admin" }))).await.expect(200);
    for cookie in [&second, &third] {
        with_cookie(&s, Method::GET, "/me", cookie, None, None).await.expect_error(401);
    }
    let fourth = session_of(&set_cookie(&login(&s, "ann", "set-by-admin", None).await.expect(200)));
    s.call(Method::PUT, "/users/ann", Some(json!({ "projects": [] }))).await.expect(200);
    with_cookie(&s, Method::GET, "/me", &fourth, None, None).await.expect(200);
    s.call(Method::PUT, "/users/ann", Some(json!({ "role": "manager" }))).await.expect(200);
    with_cookie(&s, Method::GET, "/me", &fourth, None, None).await.expect_error(401);

    let audit = s.get("/audit?actor=admin").await.json;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"end sessions (password changed): 2"), "{actions:?}");
    assert!(actions.contains(&"end sessions (role changed): 1"), "{actions:?}");
}

/// A disabled user cannot log in, and their tokens and sessions stop working at once;
/// enabled again, their tokens work again (their sessions are gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_is_refused_everywhere_at_once() {
    let s = common::start().await;
    let bob = s.user("bob", "user", &["alpha"]).await;
    let session = session_of(&set_cookie(&login(&s, "bob", "bob-password", None).await.expect(200)));
    bob.get("/me").await.expect(200);

    let user = s.call(Method::PUT, "/users/bob", Some(json!({ "disabled": true }))).await.expect(200).json;
    assert!(user["disabled_at"].is_i64(), "{user}");
    bob.get("/me").await.expect_error(401);
    bob.get("/pipelines").await.expect_error(401);
    with_cookie(&s, Method::GET, "/me", &session, None, None).await.expect_error(401);
    let refused = login(&s, "bob", "bob-password", None).await.expect_error(403);
    assert!(refused.error_text().contains("disabled"), "{}", refused.text);
    login(&s, "bob", "wrong-password", None).await.expect_error(401);
    assert!(s.get("/users").await.text.contains("\"disabled_at\":"), "the list shows it");

    s.call(Method::PUT, "/users/bob", Some(json!({ "disabled": false }))).await.expect(200);
    bob.get("/me").await.expect(200);
    with_cookie(&s, Method::GET, "/me", &session, None, None).await.expect_error(401);
    login(&s, "bob", "bob-password", None).await.expect(200);

    let audit = s.get("/audit?actor=admin").await.text;
    assert!(audit.contains("disable user") && audit.contains("enable user"), "{audit}");
}

/// Deleting a user removes them, their tokens, sessions and memberships; what they
/// created stays, naming them. Yourself, the built-in admin and the last enabled admin
/// can be neither deleted nor disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_ends_their_tokens_and_sessions_and_keeps_their_pipelines() {
    let s = common::start().await;
    let cat = s.user("cat", "manager", &["alpha"]).await;
    let session = session_of(&set_cookie(&login(&s, "cat", "cat-password", None).await.expect(200)));
    let made = cat.send_yaml(Method::POST, "/pipelines?project=alpha", &pipeline_yaml("cats", "")).await.expect(201);
    let pipeline = id_of(&made.json);

    s.delete("/users/cat").await.expect(204);
    cat.get("/me").await.expect_error(401);
    with_cookie(&s, Method::GET, "/me", &session, None, None).await.expect_error(401);
    login(&s, "cat", "cat-password", None).await.expect_error(401);
    s.get("/users/cat/tokens").await.expect_error(404);
    s.delete("/users/cat").await.expect_error(404);
    assert!(!s.get("/users").await.text.contains("\"cat\""));
    let kept = s.get(&format!("/pipelines/{pipeline}")).await.expect(200).json;
    assert_eq!(kept["created_by"], "cat", "{kept}");
    // The name is free again, without the old memberships or tokens.
    let again = s.post("/users", json!({ "name": "cat", "role": "user" })).await.expect(201).json;
    assert_eq!(again["projects"], json!([]));
    assert_eq!(s.get("/users/cat/tokens").await.json["total"], 0);

    // Who cannot go: yourself and the built-in admin; nor can the last enabled admin
    // stop being one.
    let dan = s.user("dan", "admin", &[]).await;
    for body in [None, Some(json!({ "disabled": true }))] {
        let method = if body.is_some() { Method::PUT } else { Method::DELETE };
        let own = dan.call(method.clone(), "/users/dan", body.clone()).await.expect_error(409);
        assert!(own.error_text().contains("yourself"), "{}", own.text);
        let builtin = dan.call(method, "/users/admin", body).await.expect_error(409);
        assert!(builtin.error_text().contains("built-in user `admin`"), "{}", builtin.text);
    }
    wharf_store::db::query("UPDATE users SET disabled_at = 1 WHERE name = 'admin'")
        .execute(s.server.state.store.pool())
        .await
        .unwrap();
    let last = dan.call(Method::PUT, "/users/dan", Some(json!({ "role": "user" }))).await.expect_error(409);
    assert!(last.error_text().contains("last enabled admin"), "{}", last.text);
    s.get("/me").await.expect_error(401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_lock_out_that_user_from_that_address() {
    let s = common::start().await;
    s.user("lou", "user", &[]).await;
    for _ in 0..wharf_server::auth::LoginLimiter::MAX_FAILURES {
        login(&s, "lou", "wrong-password", None).await.expect_error(401);
    }
    // Locked: even the right password gets 429 with Retry-After.
    let locked = login(&s, "lou", "lou-password", None).await.expect_error(429);
    assert!(locked.header("retry-after").and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v > 0));
    assert!(locked.error_text().contains("too many failed logins"), "{}", locked.text);
    // Others are not locked: another user from here, the same user from another address.
    login(&s, "admin", common::ADMIN_PASSWORD, None).await.expect(200);
    let elsewhere = reqwest::Client::builder().local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap()).build();
    if let Ok(client) = elsewhere
        && let Ok(response) = client
            .post(format!("{}/login", s.base))
            .json(&json!({ "name": "lou", "password": "lou-password" }))
            .send()
            .await
    {
        Answer::read(response).await.expect(200);
    }
    // An unknown user gets the same answer as a wrong password.
    let unknown = login(&s, "nobody", "whatever-pass", None).await.expect_error(401);
    let wrong = login(&s, "admin", "whatever-pass", None).await.expect_error(401);
    assert_eq!(unknown.json, wrong.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_are_revoked_at_once_and_keep_to_their_scope() {
    let s = common::start().await;
    let kim = s.user("kim", "manager", &["alpha"]).await;
    // Created, listed (never the token), used.
    let made = kim.post("/users/kim/tokens", json!({ "name": "ci", "expires_in_days": 1 })).await.expect(201).json;
    let token = made["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("wharf_"));
    let listed = kim.get("/users/kim/tokens").await.expect(200).text;
    assert!(listed.contains("\"ci\"") && !listed.contains(&token), "{listed}");
    let ci = As { s: &s, name: "kim".into(), token: token.clone() };
    ci.get("/me").await.expect(200);
    // Another user's tokens are not theirs to manage; admins may.
    kim.post("/users/admin/tokens", json!({ "name": "steal" })).await.expect_error(403);
    s.get("/users/kim/tokens").await.expect(200);

    // Expiry: the stored expiry moved into the past.
    sqlx_set_expired(&s, "kim", "ci").await;
    ci.get("/me").await.expect_error(401);

    // Revocation is immediate.
    let other = kim.post("/users/kim/tokens", json!({ "name": "laptop" })).await.expect(201).json;
    let laptop = As { s: &s, name: "kim".into(), token: other["token"].as_str().unwrap().to_owned() };
    laptop.get("/me").await.expect(200);
    kim.call(Method::DELETE, "/users/kim/tokens/laptop", None).await.expect(204);
    laptop.get("/me").await.expect_error(401);
    let listed = kim.get("/users/kim/tokens").await.json;
    let revoked = listed["items"].as_array().unwrap().iter().find(|t| t["name"] == "laptop").unwrap();
    assert!(revoked["revoked_at"].is_i64(), "{listed}");

    // A read token reads and changes nothing.
    let read = kim.post("/users/kim/tokens", json!({ "name": "viewer", "scope": "read" })).await.expect(201).json;
    let viewer = As { s: &s, name: "kim".into(), token: read["token"].as_str().unwrap().to_owned() };
    viewer.get("/pipelines").await.expect(200);
    let yaml = pipeline_yaml("by-viewer", "");
    viewer.send_yaml(Method::POST, "/pipelines?project=alpha", &yaml).await.expect_error(403);
    s.get("/pipelines/by-viewer").await.expect_error(404);
    // Bad requests.
    kim.post("/users/kim/tokens", json!({ "name": "x", "scope": "root" })).await.expect_error(422);
    kim.post("/users/kim/tokens", json!({ "name": "y", "expires_in_days": 0 })).await.expect_error(422);
}

async fn sqlx_set_expired(s: &TestServer, user: &str, name: &str) {
    let pool = s.server.state.store.pool();
    sqlx_update(pool, user, name).await;
}

async fn sqlx_update(pool: &wharf_store::db::Pool, user: &str, name: &str) {
    wharf_store::db::query("UPDATE api_tokens SET expires_at = 1 WHERE user_name = ? AND name = ?")
        .bind(user)
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_says_who_did_what_to_which_object_when_and_from_where() {
    let s = common::start().await;
    let mia = s.user("mia", "manager", &["alpha"]).await;
    let yaml = pipeline_yaml("audited", "");
    let id = id_of(&mia.send_yaml(Method::POST, "/pipelines?project=alpha", &yaml).await.expect(201).json);
    mia.call(Method::DELETE, &format!("/pipelines/{id}"), None).await.expect(204);
    mia.post("/projects", json!({ "name": "sneaky" })).await.expect_error(403);
    login(&s, "mia", "bad-password", None).await.expect_error(401);
    mia.get("/audit").await.expect_error(403);

    let log = s.get("/audit?actor=mia").await.expect(200).json;
    let items = log["items"].as_array().unwrap();
    let find =
        |action: &str| items.iter().find(|e| e["action"] == action).unwrap_or_else(|| panic!("{action}: {log:#}"));
    let created = find("POST /pipelines");
    assert_eq!(created["outcome"], 201);
    assert_eq!(created["client_ip"], "127.0.0.1");
    assert!(created["at"].as_i64().unwrap() > 0);
    let deleted = find("DELETE /pipelines/{key}");
    assert_eq!(deleted["object"], format!("/pipelines/{id}"));
    assert_eq!(find("POST /projects")["outcome"], 403, "denied calls are on record too");
    assert_eq!(find("login failed")["outcome"], 401);
    assert!(!s.get("/audit").await.text.contains("bad-password"));
}

// ---------------------------------------------------------------------------------
// Quota, bootstrap, keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trial_allows_ten_pipelines_and_says_how_to_raise_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::start_with(dir, |c| {
        c.licence_file = None;
    })
    .await;
    for n in 0..10 {
        s.create(&pipeline_yaml(&format!("p{n}"), "")).await;
    }
    let refused = s.send_yaml(Method::POST, "/pipelines", &pipeline_yaml("p10", "")).await.expect_error(403);
    let text = refused.error_text();
    assert!(text.contains("at most 10") && text.contains("trial") && text.contains("licence"), "{text}");
    s.post("/pipelines/p0/copy", json!({ "name": "p0-copy" })).await.expect_error(403);
    s.post("/pipelines/scratch", json!({ "name": "p11" })).await.expect_error(403);
    assert_eq!(s.get("/pipelines").await.json["total"], 10, "nothing was created");
    // Deleting one makes room.
    s.delete("/pipelines/p0").await.expect(204);
    s.create(&pipeline_yaml("p10", "")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_licence_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    let path = config.licence_file.clone().unwrap();
    let mut licence: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    licence["max_pipelines"] = json!(1_000_000);
    std::fs::write(&path, licence.to_string()).unwrap();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let err = wharf_server::Server::start(config).await.err().expect("a forged licence is refused");
    assert!(err.to_string().contains("does not verify"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_makes_a_one_time_admin_token_and_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let s = common::start_with(dir, |c| {
        c.admin_token = None;
        c.admin_password = None;
    })
    .await;
    let token = s.server.generated_token.clone().expect("a generated token");
    let password = s.server.generated_password.clone().expect("a generated password");
    let admin = As { s: &s, name: "admin".into(), token: token.clone() };
    assert_eq!(admin.get("/me").await.expect(200).json["role"], "admin");
    login(&s, "admin", &password, None).await.expect(200);
    // The test token was never configured.
    s.get("/me").await.expect_error(401);
    let state = s.server.state.clone();
    drop(state);
    let TestServer { server, dir, .. } = s;
    server.shutdown().await;
    // A second start shows nothing and the same token works.
    let mut config = common::test_config(&data);
    config.admin_token = None;
    config.admin_password = None;
    let again = wharf_server::Server::start(config).await.unwrap();
    assert!(again.generated_token.is_none() && again.generated_password.is_none());
    let me = reqwest::Client::new()
        .get(format!("http://{}/api/v1/me", again.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    again.shutdown().await;
    drop(dir);
}

/// The admin's configured password is hashed after the server listens (an Argon2 hash
/// is most of a start); a login right after start waits for it, and a password changed
/// in the configuration replaces the old one at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_admin_password_is_in_force_from_the_first_login() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let start = |password: &str| {
        let mut config = common::test_config(&data);
        config.admin_password = Some(password.to_owned());
        wharf_server::Server::start(config)
    };
    let login_now = |addr: std::net::SocketAddr, password: &'static str| async move {
        let answer = reqwest::Client::new()
            .post(format!("http://{addr}/api/v1/login"))
            .json(&json!({ "name": "admin", "password": password }))
            .send()
            .await
            .unwrap();
        answer.status().as_u16()
    };
    let first = start("first-password-1").await.unwrap();
    assert_eq!(login_now(first.addr, "first-password-1").await, 200, "at once after the first start");
    first.shutdown().await;
    let second = start("second-password-2").await.unwrap();
    let (old, new) =
        tokio::join!(login_now(second.addr, "first-password-1"), login_now(second.addr, "second-password-2"));
    assert_eq!((old, new), (401, 200), "the changed password is the one in force, from the first login");
    second.shutdown().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_reseals_every_secret_and_drops_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let s = common::start_in(dir).await;
    s.call(Method::PUT, "/secrets/ROTATED", Some(json!({ "value": "before-rotation-value" }))).await.expect(201);
    s.post("/bindings", json!({ "name": "gh", "provider": "github", "token": "binding-token-value" }))
        .await
        .expect(201);
    let old_key = std::fs::read_to_string(data.join("data/secret.key")).unwrap();
    let old_id = s.server.state.store.secret_box().current_key_id().to_owned();
    let TestServer { server, dir, .. } = s;
    server.shutdown().await;

    let mut config = common::test_config(&data);
    config.rotate_secret_key = true;
    let rotated = wharf_server::Server::start(config).await.unwrap();
    let store = &rotated.state.store;
    let new_id = store.secret_box().current_key_id().to_owned();
    assert_ne!(new_id, old_id);
    assert_eq!(store.secret_values("admin").await.unwrap()["ROTATED"], "before-rotation-value");
    assert_eq!(store.binding("gh").await.unwrap().token.as_deref(), Some("binding-token-value"));
    for query in ["SELECT value FROM secrets", "SELECT token FROM bindings"] {
        let stored: String = wharf_store::db::query(query).fetch_one(store.pool()).await.unwrap().get(0);
        assert!(stored.contains(&format!(":{new_id}:")), "{stored}");
    }
    let key_file = std::fs::read_to_string(data.join("data/secret.key")).unwrap();
    assert_ne!(key_file, old_key);
    assert_eq!(key_file.lines().filter(|l| !l.starts_with('#')).count(), 1, "only the new key is kept");
    rotated.shutdown().await;
    drop(dir);
}
