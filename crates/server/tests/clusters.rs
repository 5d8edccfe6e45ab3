//! Clusters over loopback HTTP against the Kubernetes API test double (`wharf-kube-fake`,
//! HTTPS with its own CA and a bearer token): registration checks the cluster and applies
//! the pipeline namespace (looked at in the fake), kubeconfig forms and refusals, the
//! API server's words in 422/502, `?verify=false`, the outbound policy, who may do what,
//! removal refused while a pipeline deploys there, and the kubeconfig never answered.

mod common;

use common::Answer;
use serde_json::{Value, json};
use wharf_kube_fake::{KubeFake, Options};

async fn fake(ready: usize, unready: usize) -> KubeFake {
    KubeFake::start(Options { ready_nodes: ready, unready_nodes: unready, ..Options::default() }).await.unwrap()
}

fn body(name: &str, kubeconfig: &str) -> Value {
    json!({ "name": name, "kubeconfig": kubeconfig })
}

/// The namespace `name` as the fake stores it (JSON), or `None` when it has none.
async fn namespace_in(fake: &KubeFake, name: &str) -> Option<Value> {
    common::kube_get(fake, &format!("/api/v1/namespaces/{name}")).await
}

/// A kubeconfig with a client certificate instead of the fake's token (the fake accepts
/// only bearer tokens, so the cluster answers 401 to it).
fn certificate_kubeconfig(fake: &KubeFake) -> String {
    use base64::Engine as _;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["wharf".to_owned()]).unwrap().self_signed(&key).unwrap();
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        b64(cert.pem()),
        b64(key.serialize_pem())
    );
    let text = fake.kubeconfig().replace(&format!("    token: {}\n", fake.token()), &user);
    assert_ne!(text, fake.kubeconfig());
    text
}

/// No answer may hold the token or the kubeconfig's certificate data.
#[track_caller]
fn no_kubeconfig(answer: &Answer, fake: &KubeFake) {
    assert!(!answer.text.contains(fake.token()), "the token leaked: {}", answer.text);
    assert!(!answer.text.contains("certificate-authority-data"), "{}", answer.text);
    assert!(!answer.text.contains("client-key-data"), "{}", answer.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_checks_the_cluster_and_applies_the_pipeline_namespace() {
    let fake = fake(2, 1).await;
    let s = common::start().await;

    let created = s.post("/clusters", body("prod", &fake.kubeconfig())).await.expect(201);
    no_kubeconfig(&created, &fake);
    let c = &created.json;
    assert_eq!(c["name"], "prod");
    assert_eq!(c["project"], "admin");
    assert_eq!(c["server"], fake.url());
    assert_eq!(c["context"], "kube-fake");
    assert_eq!(c["version"], "v1.32.0-kube-fake");
    assert_eq!(c["nodes"], json!({ "ready": 2, "total": 3 }));
    assert_eq!(c["health"]["status"], "healthy");
    assert_eq!(c["health"]["error"], Value::Null);
    assert!(c["health"]["checked_at"].as_i64().is_some(), "{c}");
    assert!(c.get("kubeconfig").is_none(), "{c}");
    let namespace = c["namespace"].as_str().unwrap().to_owned();
    let short_id = namespace.strip_prefix("ecp-devops-").unwrap_or_else(|| panic!("{namespace}"));
    assert!(short_id.len() == 8 && short_id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

    // The namespace is really in the cluster, with Wharf's labels, applied by `wharf`.
    let ns = namespace_in(&fake, &namespace).await.expect("the pipeline namespace exists in the cluster");
    assert_eq!(ns["metadata"]["labels"]["app.kubernetes.io/managed-by"], "wharf");
    assert_eq!(ns["metadata"]["labels"]["wharf.cluster"], short_id);
    assert_eq!(ns["metadata"]["managedFields"][0]["manager"], "wharf");

    // Listed and shown; a fresh check is not repeated by `show`.
    let list = s.get("/clusters").await.expect(200);
    no_kubeconfig(&list, &fake);
    assert_eq!(list.json["total"], 1);
    assert_eq!(list.json["items"][0], *c);
    let shown = s.get("/clusters/prod").await.expect(200);
    assert_eq!(shown.json["health"]["checked_at"], c["health"]["checked_at"]);
    // An explicit check applies the namespace again (idempotent) and stores the outcome.
    let checked = s.post_empty("/clusters/prod/check").await.expect(200);
    no_kubeconfig(&checked, &fake);
    assert_eq!(checked.json["health"]["status"], "healthy");
    assert!(checked.json["health"]["checked_at"].as_i64() >= c["health"]["checked_at"].as_i64());
    assert_eq!(checked.json["namespace"], namespace.as_str());

    // The name is taken: 409 before the cluster is contacted.
    let dup = s.post("/clusters", body("prod", &fake.kubeconfig())).await.expect_error(409);
    assert!(dup.error_text().contains("`prod` already exists"), "{}", dup.text);
    // A second registration of the same cluster gets a namespace of its own.
    let again = s.post("/clusters", body("prod-2", &fake.kubeconfig())).await.expect(201);
    assert_ne!(again.json["namespace"], namespace.as_str());

    // The audit log has the registration (without the kubeconfig).
    let audit = s.get("/audit").await.expect(200);
    assert!(audit.text.contains("POST /clusters"), "{}", audit.text);
    no_kubeconfig(&audit, &fake);

    // Removal: 204, gone; the namespace stays in the cluster.
    s.delete("/clusters/prod").await.expect(204);
    s.get("/clusters/prod").await.expect_error(404);
    s.delete("/clusters/prod").await.expect_error(404);
    assert!(namespace_in(&fake, &namespace).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_kubeconfigs_are_422_saying_what_and_where() {
    let fake = fake(1, 0).await;
    let s = common::start().await;
    let token_line = format!("    token: {}\n", fake.token());

    // An exec plugin: never run, refused with the reason.
    let exec = "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'touch /tmp/pwned-by-kubeconfig']\n";
    let answer = s.post("/clusters", body("c", &fake.kubeconfig().replace(&token_line, exec))).await.expect_error(422);
    let text = answer.error_text();
    assert!(text.contains("kubeconfig: user \"kube-fake\" uses an exec credential plugin (\"/bin/sh\")"), "{text}");
    assert!(text.contains("does not run programs"), "{text}");
    assert!(!std::path::Path::new("/tmp/pwned-by-kubeconfig").exists());
    let provider = "    auth-provider:\n      name: oidc\n      config: {}\n";
    let answer =
        s.post("/clusters", body("c", &fake.kubeconfig().replace(&token_line, provider))).await.expect_error(422);
    assert!(answer.error_text().contains("auth-provider plugin \"oidc\""), "{}", answer.text);

    // Not YAML: the line and column, no quote of the text.
    let answer = s.post("/clusters", body("c", "clusters: [\n  token: hunter2-secret\n bad")).await.expect_error(422);
    let text = answer.error_text();
    assert!(text.contains("kubeconfig: the kubeconfig is not valid YAML") && text.contains("line "), "{text}");
    assert!(!answer.text.contains("hunter2-secret"), "{}", answer.text);

    // An unknown context names the ones there are.
    let mut unknown = body("c", &fake.kubeconfig());
    unknown["context"] = json!("prod");
    let answer = s.post("/clusters", unknown).await.expect_error(422);
    assert!(answer.error_text().contains("context: the kubeconfig has no context \"prod\" (it has: \"kube-fake\")"));

    // A file named in the kubeconfig would be the server's own: refused.
    let ca_file = regex_free_replace_ca(&fake.kubeconfig(), "    certificate-authority: /etc/ssl/private/server.key\n");
    let answer = s.post("/clusters", body("c", &ca_file)).await.expect_error(422);
    assert!(answer.error_text().contains("names the file \"/etc/ssl/private/server.key\""), "{}", answer.text);

    // Every field problem at once; unknown fields are refused.
    let answer = s.post("/clusters", json!({ "name": "bad name", "kubeconfig": " " })).await.expect_error(422);
    let text = answer.error_text();
    assert!(text.contains("name: `bad name` is not a valid cluster name"), "{text}");
    assert!(text.contains("kubeconfig: give the kubeconfig file's text"), "{text}");
    s.post("/clusters", json!({ "name": "c", "kubeconfig": "x", "token": "y" })).await.expect_error(422);

    // The body is bounded (on a connection of its own: the server closes it without
    // reading the rest).
    let huge = "#".repeat(2 * 1024 * 1024);
    let answer =
        reqwest::Client::new().post(s.url("/clusters")).bearer_auth(common::TOKEN).json(&body("c", &huge)).send();
    Answer::read(answer.await.expect("the server answers")).await.expect_error(413);

    // Nothing was registered.
    assert_eq!(s.get("/clusters").await.expect(200).json["total"], 0);
}

/// The kubeconfig with its `certificate-authority-data` line replaced by `line`.
fn regex_free_replace_ca(kubeconfig: &str, line: &str) -> String {
    kubeconfig
        .lines()
        .map(
            |l| {
                if l.trim_start().starts_with("certificate-authority-data:") {
                    line.to_owned()
                } else {
                    format!("{l}\n")
                }
            },
        )
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_answers_in_its_own_words() {
    let fake = fake(1, 0).await;
    let s = common::start().await;

    // A wrong token: 422 with the API server's answer.
    let wrong = fake.kubeconfig().replace(fake.token(), "not-the-token");
    let answer = s.post("/clusters", body("c", &wrong)).await.expect_error(422);
    let text = answer.error_text();
    assert!(text.contains("the cluster refused the kubeconfig's credentials"), "{text}");
    assert!(text.contains(&format!("cluster `c`: {} refused the credentials", fake.url())), "{text}");
    assert!(text.contains(": Unauthorized"), "{text}");
    assert!(!answer.text.contains("not-the-token"), "{}", answer.text);

    // A client certificate is sent as such; this cluster takes only tokens, so it says 401.
    let answer = s.post("/clusters", body("c", &certificate_kubeconfig(&fake))).await.expect_error(422);
    assert!(answer.error_text().contains("Unauthorized"), "{}", answer.text);
    // Unchecked, the certificate form registers.
    s.post("/clusters?verify=false", body("by-cert", &certificate_kubeconfig(&fake))).await.expect(201);

    // `insecure-skip-tls-verify` instead of the CA: accepted, and the cluster checked.
    let insecure = regex_free_replace_ca(&fake.kubeconfig(), "    insecure-skip-tls-verify: true\n");
    let created = s.post("/clusters", body("insecure", &insecure)).await.expect(201);
    assert_eq!(created.json["health"]["status"], "healthy");

    // Another cluster's CA: the certificate does not match (422).
    let other = self::fake(1, 0).await;
    let mixed = other.kubeconfig().replace(&other.url(), &fake.url()).replace(other.token(), fake.token());
    let answer = s.post("/clusters", body("c", &mixed)).await.expect_error(422);
    assert!(answer.error_text().contains("TLS with"), "{}", answer.text);

    // Nothing listening: 502, naming the server.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
    drop(listener);
    let dead = fake.kubeconfig().replace(&fake.url(), &dead_url);
    let answer = s.post("/clusters", body("down", &dead)).await.expect_error(502);
    assert!(
        answer.error_text().contains(&format!("cluster `down`: cluster {dead_url} is unreachable")),
        "{}",
        answer.text
    );
    s.get("/clusters/down").await.expect_error(404);

    // `?verify=false` registers without contacting it, and makes no namespace.
    let unchecked = s.post("/clusters?verify=false", body("down", &dead)).await.expect(201);
    assert_eq!(unchecked.json["health"], json!({ "status": "unchecked", "error": null, "checked_at": null }));
    assert_eq!(unchecked.json["version"], Value::Null);
    assert_eq!(unchecked.json["nodes"], Value::Null);
    // Showing it checks it (never checked), and stores what happened.
    let shown = s.get("/clusters/down").await.expect(200);
    assert_eq!(shown.json["health"]["status"], "unreachable");
    assert!(shown.json["health"]["error"].as_str().unwrap().contains("unreachable"), "{}", shown.text);
    let listed = s.get("/clusters").await.expect(200);
    let down = listed.json["items"].as_array().unwrap().iter().find(|c| c["name"] == "down").unwrap().clone();
    assert_eq!(down["health"], shown.json["health"], "the list answers the stored health");

    // Registered unchecked while reachable: the explicit check makes the namespace.
    let later = s.post("/clusters?verify=false", body("later", &fake.kubeconfig())).await.expect(201);
    let namespace = later.json["namespace"].as_str().unwrap().to_owned();
    assert!(namespace_in(&fake, &namespace).await.is_none());
    let checked = s.post_empty("/clusters/later/check").await.expect(200);
    assert_eq!(checked.json["health"]["status"], "healthy");
    assert_eq!(checked.json["version"], "v1.32.0-kube-fake");
    assert_eq!(checked.json["nodes"], json!({ "ready": 1, "total": 1 }));
    assert!(namespace_in(&fake, &namespace).await.is_some());

    // The fake goes away: the explicit check records it, keeping what was learnt.
    drop(fake);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let checked = s.post_empty("/clusters/later/check").await.expect(200);
    assert_eq!(checked.json["health"]["status"], "unreachable");
    assert_eq!(checked.json["version"], "v1.32.0-kube-fake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_need_the_admins_outbound_allow() {
    let fake = fake(1, 0).await;
    let s = common::start_with(tempfile::tempdir().unwrap(), |config| config.outbound_allow = vec![]).await;

    // An IP literal: refused before anything is sent, also unchecked.
    for path in ["/clusters", "/clusters?verify=false"] {
        let answer = s.post(path, body("c", &fake.kubeconfig())).await.expect_error(403);
        let text = answer.error_text();
        assert!(text.contains("127.0.0.1 is a loopback address") && text.contains("outbound_allow"), "{text}");
    }
    // A name resolving inward: refused when connecting.
    let by_name = fake.kubeconfig().replace("https://127.0.0.1:", "https://localhost:");
    let answer = s.post("/clusters", body("c", &by_name)).await.expect_error(403);
    assert!(answer.error_text().contains("`localhost` resolves to"), "{}", answer.text);
    // Registered unchecked, its health says why.
    s.post("/clusters?verify=false", body("c", &by_name)).await.expect(201);
    let shown = s.get("/clusters/c").await.expect(200);
    assert_eq!(shown.json["health"]["status"], "refused");
    assert!(shown.json["health"]["error"].as_str().unwrap().contains("outbound_allow"), "{}", shown.text);

    // The admin allows it: the same kubeconfig registers.
    let allowed = common::start_with(tempfile::tempdir().unwrap(), |config| {
        config.outbound_allow = vec!["localhost".to_owned()];
    })
    .await;
    let created = allowed.post("/clusters", body("c", &by_name)).await.expect(201);
    assert_eq!(created.json["health"]["status"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_add_see_and_remove_clusters() {
    let fake = fake(1, 0).await;
    let s = common::start().await;
    let manager = s.user("mona", "manager", &["web"]).await;
    let user = s.user("ulf", "user", &["web"]).await;
    s.project("shop").await;
    let in_project = |name: &str, project: &str| {
        let mut b = body(name, &fake.kubeconfig());
        b["project"] = json!(project);
        b
    };

    // Admins: the admin project only (the seed's "only Default/admin project").
    s.post("/clusters", body("adm", &fake.kubeconfig())).await.expect(201);
    let answer = s.post("/clusters", in_project("x", "web")).await.expect_error(403);
    assert!(answer.error_text().contains("only in project `admin`"), "{}", answer.text);
    // Managers: the projects they joined.
    let web = manager.post("/clusters", in_project("webc", "web")).await.expect(201);
    assert_eq!((web.json["project"].as_str(), web.json["created_by"].as_str()), (Some("web"), Some("mona")));
    manager.post("/clusters", in_project("x", "shop")).await.expect_error(403);
    manager.post("/clusters", body("x", &fake.kubeconfig())).await.expect_error(403);
    // Normal users: never.
    let answer = user.post("/clusters", in_project("x", "web")).await.expect_error(403);
    assert!(answer.error_text().contains("the user role may not add cluster"), "{}", answer.text);

    // Each sees only its own: the list filters, a cluster out of sight is 404 (its
    // existence does not leak), for show, check and remove alike.
    let names = |a: &Answer| -> Vec<String> {
        a.json["items"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(&s.get("/clusters").await.expect(200)), ["adm"]);
    assert_eq!(names(&manager.get("/clusters").await.expect(200)), ["webc"]);
    assert_eq!(names(&manager.get("/clusters?project=admin").await.expect(200)), Vec::<String>::new());
    assert_eq!(user.get("/clusters").await.expect(200).json["total"], 0);
    manager.get("/clusters/webc").await.expect(200);
    let hidden = manager.get("/clusters/adm").await.expect_error(404);
    assert!(hidden.error_text().contains("cluster `adm`"), "{}", hidden.text);
    user.get("/clusters/webc").await.expect_error(404);
    s.get("/clusters/webc").await.expect_error(404);
    manager.call(reqwest::Method::POST, "/clusters/adm/check", None).await.expect_error(404);
    manager.call(reqwest::Method::DELETE, "/clusters/adm", None).await.expect_error(404);
    user.call(reqwest::Method::DELETE, "/clusters/webc", None).await.expect_error(404);
    s.delete("/clusters/webc").await.expect_error(404);
    // Unknown projects are not a way in.
    manager.post("/clusters", in_project("x", "ghost")).await.expect_error(403);

    manager.call(reqwest::Method::DELETE, "/clusters/webc", None).await.expect(204);
    s.delete("/clusters/adm").await.expect(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_a_pipeline_deploys_to_cannot_be_removed() {
    let s = common::start().await;
    let kubeconfig = "apiVersion: v1\nkind: Config\ncurrent-context: prod\nclusters:\n- name: prod\n  cluster:\n    server: https://k8s.example.com:6443\nusers:\n- name: ci\n  user:\n    token: t0ps3cret-t0ken-value\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: ci\n";
    let created = s.post("/clusters?verify=false", body("prod-eu", kubeconfig)).await.expect(201);
    assert!(!created.text.contains("t0ps3cret"), "{}", created.text);
    let mut snapshot = created.json.clone();
    snapshot["created_at"] = json!("[created_at]");
    snapshot["id"] = json!("[id]");
    snapshot["namespace"] = json!("ecp-devops-[short id]");
    insta::assert_json_snapshot!("served_cluster", snapshot);

    let pipeline = s
        .create(
            "name: deployer
stages:
  - name: Deploy
    tasks:
      - {name: apply, type: deploy-yaml, file: k8s/app.yaml, cluster: prod-eu, namespace: games}
",
        )
        .await;
    let answer = s.delete("/clusters/prod-eu").await.expect_error(409);
    assert_eq!(answer.json["pipelines"], json!(["deployer"]));
    assert!(answer.error_text().contains("used by pipeline(s) `deployer` of project `admin`"), "{}", answer.text);
    insta::assert_json_snapshot!("served_cluster_in_use", answer.json);
    s.get("/clusters?project=admin").await.expect(200);

    let key = pipeline["id"].as_i64().unwrap();
    s.delete(&format!("/pipelines/{key}")).await.expect(204);
    s.delete("/clusters/prod-eu").await.expect(204);
    s.get("/clusters/prod-eu").await.expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_cluster_is_checked_once_and_bounded_in_time() {
    let fake = fake(1, 0).await;
    let s = common::start().await;
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("https://127.0.0.1:{}", silent.local_addr().unwrap().port());
    let kubeconfig = fake.kubeconfig().replace(&fake.url(), &silent_url);
    s.post("/clusters?verify=false", body("silent", &kubeconfig)).await.expect(201);

    let started = std::time::Instant::now();
    let first = s.get("/clusters/silent");
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let answer = s.get("/clusters/silent").await.expect(200);
        (answer, started.elapsed())
    };
    let (first, (second, second_took)) = tokio::join!(first, second);
    // The second caller did not start a check of its own: the stored state, at once.
    assert_eq!(second.json["health"]["status"], "unchecked", "{}", second.text);
    assert!(second_took < std::time::Duration::from_secs(3), "{second_took:?}");
    // The first waited at most the show's bound, and stored what happened.
    let first = first.expect(200);
    assert_eq!(first.json["health"]["status"], "unreachable", "{}", first.text);
    assert!(first.json["health"]["error"].as_str().unwrap().contains("no answer within 5 s"), "{}", first.text);
    assert!(started.elapsed() < std::time::Duration::from_secs(9), "{:?}", started.elapsed());
    drop(silent);
}

/// A pipeline deploys only to the clusters of its own project: one of another project is
/// not there for it, and the run fails before anything reaches the cluster (the owning
/// project's pipelines deploy: `registries.rs`, the 2048 example).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_deploys_only_to_its_own_projects_clusters() {
    let s = common::start().await;
    let fake = fake(1, 0).await;
    s.post("/clusters", body("prod", &fake.kubeconfig())).await.expect(201);
    let manager = s.user("web-manager", "manager", &["web"]).await;
    let yaml = "name: sneaky\nstages:\n  - name: Deploy\n    tasks:\n      - {name: apply, type: deploy-yaml, file: app.yaml, cluster: prod, namespace: default}\n";
    let saved = manager.send_yaml(reqwest::Method::POST, "/pipelines?project=web&run=true", yaml).await.expect(201);
    let run = s.wait_run(saved.json["run"]["id"].as_i64().unwrap()).await;
    assert_eq!(run["status"], "failed", "{run:#}");
    let reason = run["stages"][0]["tasks"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cluster: `prod` is not a cluster of this pipeline's project (none is registered"),
        "{reason}"
    );
}

/// The paths of a 422's details, in order.
fn detail_paths(answer: &Answer) -> Vec<String> {
    answer.json["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_given_at_registration_and_changed_by_a_merge_patch() {
    let fake = fake(1, 0).await;
    let s = common::start().await;

    // Every default when none are given.
    let plain = s.post("/clusters", body("plain", &fake.kubeconfig())).await.expect(201);
    let defaults = &plain.json["settings"];
    assert_eq!(defaults["workspace"], json!({"mode": "host-path", "storage_class": null, "size": null}));
    assert_eq!((defaults["pending_limit"].clone(), defaults["tolerations"].clone()), (json!(null), json!([])));

    // Bad settings at registration: every problem at its field, nothing registered.
    let mut bad = body("bad", &fake.kubeconfig());
    bad["settings"] = json!({
        "resources": {"requests": {"cpu": "2", "memory": "lots"}, "limits": {"cpu": "1"}},
        "node_selector": {"pool": "has space"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "value": "yes"}, {"effect": "Sometimes", "operator": "Exists"}],
        "service_account": "Builder",
        "pending_limit": "soon",
        "workspace": {"mode": "nfs", "storage_class": "Fast SSD", "size": "0"},
    });
    let refused = s.post("/clusters", bad).await.expect_error(422);
    assert_eq!(
        detail_paths(&refused),
        [
            "settings.workspace.mode",
            "settings.pending_limit",
            "settings.resources.requests.memory",
            "settings.resources.requests.cpu",
            "settings.node_selector.pool",
            "settings.tolerations[0]",
            "settings.tolerations[1].effect",
            "settings.service_account",
            "settings.workspace.storage_class",
            "settings.workspace.size",
        ],
        "{}",
        refused.text
    );
    let text = refused.error_text();
    assert!(text.contains("`nfs` is not a workspace mode: `host-path` or `claim`"), "{text}");
    assert!(text.contains("the cpu request `2` is more than its limit `1`"), "{text}");
    assert!(text.contains("`soon` is not a duration"), "{text}");
    s.get("/clusters/bad").await.expect_error(404);
    // An unknown field is refused, not dropped.
    let mut typo = body("typo", &fake.kubeconfig());
    typo["settings"] = json!({"pendin_limit": "5m"});
    let refused = s.post("/clusters", typo).await.expect_error(422);
    assert!(refused.error_text().contains("unknown field `pendin_limit`"), "{}", refused.text);

    // Given at registration, answered as given.
    let mut good = body("prod", &fake.kubeconfig());
    good["settings"] = json!({
        "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}},
        "node_selector": {"pool": "ci"},
        "tolerations": [{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}],
        "service_account": "builder",
        "pending_limit": "90s",
    });
    let prod = s.post("/clusters", good).await.expect(201);
    let settings = &prod.json["settings"];
    assert_eq!(settings["resources"]["requests"], json!({"cpu": "250m", "memory": null}));
    assert_eq!(settings["pending_limit"], "1m30s");
    assert_eq!(settings["service_account"], "builder");
    assert_eq!(s.get("/clusters/prod").await.expect(200).json["settings"], *settings);

    // A merge patch: the fields given replace, null clears, the rest stay.
    let patched = s
        .call(
            reqwest::Method::PATCH,
            "/clusters/prod",
            Some(json!({
                "service_account": null,
                "resources": {"limits": {"cpu": "2"}},
                "workspace": {"mode": "claim", "storage_class": "local-path", "size": "5Gi"},
            })),
        )
        .await
        .expect(200);
    let after = &patched.json["settings"];
    assert_eq!(after["service_account"], json!(null));
    assert_eq!(after["resources"]["limits"], json!({"cpu": "2", "memory": "1Gi"}));
    assert_eq!(after["resources"]["requests"]["cpu"], "250m");
    assert_eq!(after["node_selector"], json!({"pool": "ci"}));
    assert_eq!(after["workspace"], json!({"mode": "claim", "storage_class": "local-path", "size": "5Gi"}));
    assert_eq!(s.get("/clusters").await.expect(200).json["items"][1]["settings"], *after);
    // A bad patch changes nothing and says where.
    let refused = s
        .call(reqwest::Method::PATCH, "/clusters/prod", Some(json!({"resources": {"requests": {"cpu": "3"}}})))
        .await
        .expect_error(422);
    assert_eq!(detail_paths(&refused), ["resources.requests.cpu"], "{}", refused.text);
    let refused = s.call(reqwest::Method::PATCH, "/clusters/prod", Some(json!(["claim"]))).await.expect_error(422);
    assert!(refused.error_text().contains("give a JSON object"), "{}", refused.text);
    assert_eq!(s.get("/clusters/prod").await.expect(200).json["settings"], *after);
    s.call(reqwest::Method::PATCH, "/clusters/ghost", Some(json!({}))).await.expect_error(404);

    // Who may add clusters to the project may change them; a cluster out of sight (a
    // normal user sees none) stays 404.
    let manager = s.user("mona", "manager", &["web"]).await;
    let user = s.user("ulf", "user", &["web"]).await;
    let mut web = body("webc", &fake.kubeconfig());
    web["project"] = json!("web");
    manager.post("/clusters", web).await.expect(201);
    manager.call(reqwest::Method::PATCH, "/clusters/webc", Some(json!({"pending_limit": "5m"}))).await.expect(200);
    user.call(reqwest::Method::PATCH, "/clusters/webc", Some(json!({"pending_limit": "1m"}))).await.expect_error(404);
    manager.call(reqwest::Method::PATCH, "/clusters/prod", Some(json!({}))).await.expect_error(404);
    s.get("/clusters/webc").await.expect_error(404);
    assert_eq!(manager.get("/clusters/webc").await.expect(200).json["settings"]["pending_limit"], "5m");
}
