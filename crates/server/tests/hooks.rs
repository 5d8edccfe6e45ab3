//! Webhooks end to end: deliveries shaped as GitHub, GitLab and Gitee document them
//! (the `wharf-scm` fixtures, pointed at a real local repository), signed as each
//! provider signs, posted to `/hooks/{provider}/{binding}`; the runs they start check
//! out the event's exact commit. Hostile deliveries are refused with the right status,
//! start nothing and are all listed by `GET /deliveries`. Also the bindings API.

mod common;

use common::{Answer, TestServer, deliver, id_of, log_texts};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::process::Command;
use wharf_store::deliveries::{NewDelivery, Verdict};

const SECRET: &str = "It's a Secret to Everybody";

// ---------------------------------------------------------------------------------
// Signing as the providers do

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_signing_helpers_match_published_vectors() {
    // RFC 4231 test case 2, and GitHub's documented example signature.
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        github_signature(b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
    assert_eq!(base64(b"foob"), "Zm9vYg==");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}

/// `X-Hub-Signature-256`: `sha256=` and the hex HMAC-SHA256 of the raw body.
fn github_signature(body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac_sha256(SECRET.as_bytes(), body)))
}

/// Gitee's signature mode: base64 HMAC-SHA256 of `<timestamp>\n<secret>`.
fn gitee_signature(timestamp: &str) -> String {
    base64(&hmac_sha256(SECRET.as_bytes(), format!("{timestamp}\n{SECRET}").as_bytes()))
}

fn now_ms() -> String {
    jiff::Timestamp::now().as_millisecond().to_string()
}

/// Sends `body` as `provider` would: GitHub signed with its HMAC, GitLab with its
/// token, Gitee with its token (password mode) or, with `signed`, a signed timestamp.
/// `id` is the delivery id header (GitHub, GitLab); Gitee sends none.
async fn send(s: &TestServer, provider: &str, binding: &str, event: &str, id: &str, body: &[u8]) -> Answer {
    let signature = github_signature(body);
    let timestamp = now_ms();
    let gitee_signed = gitee_signature(&timestamp);
    let headers: Vec<(&str, &str)> = match provider {
        "github" => vec![
            ("user-agent", "GitHub-Hookshot/0f1e2d3"),
            ("x-github-event", event),
            ("x-github-delivery", id),
            ("x-github-hook-id", "512093384"),
            ("x-hub-signature-256", &signature),
        ],
        "gitlab" => vec![
            ("user-agent", "GitLab/17.9.1"),
            ("x-gitlab-event", event),
            ("x-gitlab-event-uuid", id),
            ("idempotency-key", id),
            ("x-gitlab-instance", "https://gitlab.example.com"),
            ("x-gitlab-token", SECRET),
        ],
        "gitee" => vec![
            ("user-agent", "git-oschina-hook"),
            ("x-gitee-event", event),
            ("x-git-oschina-event", event),
            ("x-gitee-ping", "false"),
            ("x-gitee-timestamp", &timestamp),
            ("x-gitee-token", if id == "signed" { gitee_signed.as_str() } else { SECRET }),
        ],
        other => panic!("no provider {other}"),
    };
    deliver(s, provider, binding, &headers, body).await
}

// ---------------------------------------------------------------------------------
// Fixtures: the providers' payloads, pointed at a local repository

fn fixture(name: &str) -> Value {
    let text = match name {
        "github/ping" => include_str!("../../scm/tests/fixtures/webhooks/github/ping.json"),
        "github/push" => include_str!("../../scm/tests/fixtures/webhooks/github/push.json"),
        "github/push_delete" => include_str!("../../scm/tests/fixtures/webhooks/github/push_delete.json"),
        "github/push_tag" => include_str!("../../scm/tests/fixtures/webhooks/github/push_tag.json"),
        "github/pull_request_opened" => {
            include_str!("../../scm/tests/fixtures/webhooks/github/pull_request_opened.json")
        }
        "github/pull_request_synchronize" => {
            include_str!("../../scm/tests/fixtures/webhooks/github/pull_request_synchronize.json")
        }
        "github/pull_request_closed_merged" => {
            include_str!("../../scm/tests/fixtures/webhooks/github/pull_request_closed_merged.json")
        }
        "gitlab/push" => include_str!("../../scm/tests/fixtures/webhooks/gitlab/push.json"),
        "gitlab/push_delete" => include_str!("../../scm/tests/fixtures/webhooks/gitlab/push_delete.json"),
        "gitlab/tag_push" => include_str!("../../scm/tests/fixtures/webhooks/gitlab/tag_push.json"),
        "gitlab/merge_request_open" => include_str!("../../scm/tests/fixtures/webhooks/gitlab/merge_request_open.json"),
        "gitlab/merge_request_update" => {
            include_str!("../../scm/tests/fixtures/webhooks/gitlab/merge_request_update.json")
        }
        "gitlab/merge_request_merge" => {
            include_str!("../../scm/tests/fixtures/webhooks/gitlab/merge_request_merge.json")
        }
        "gitee/push" => include_str!("../../scm/tests/fixtures/webhooks/gitee/push.json"),
        "gitee/tag_push" => include_str!("../../scm/tests/fixtures/webhooks/gitee/tag_push.json"),
        "gitee/merge_request_open" => include_str!("../../scm/tests/fixtures/webhooks/gitee/merge_request_open.json"),
        "gitee/merge_request_update" => {
            include_str!("../../scm/tests/fixtures/webhooks/gitee/merge_request_update.json")
        }
        "gitee/merge_request_merge" => {
            include_str!("../../scm/tests/fixtures/webhooks/gitee/merge_request_merge.json")
        }
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).unwrap()
}

/// `fixture` with the values at the JSON pointers replaced.
fn edited(name: &str, edits: &[(&str, Value)]) -> Vec<u8> {
    let mut value = fixture(name);
    for (pointer, new) in edits {
        *value.pointer_mut(pointer).unwrap_or_else(|| panic!("{name} has no {pointer}")) = new.clone();
    }
    serde_json::to_vec(&value).unwrap()
}

/// A bare repository in a temporary directory, as the provider's copy:
///
/// - `main`: `m1`, then `m2` (the tip, standing for a merge commit);
/// - `feature/login`: `f1` on `m1` (a merge request's source branch);
/// - `v1.4.0`: an annotated tag of `t1`, a commit on no branch;
/// - `k1`, a fork's commit, reachable only from `refs/pull/42/head` and
///   `refs/merge-requests/17/head`, as GitHub and GitLab keep them.
struct Repo {
    _dir: tempfile::TempDir,
    /// `file://…/wharf-demo.git`
    url: String,
    m1: String,
    m2: String,
    f1: String,
    t1: String,
    tag_object: String,
    k1: String,
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Mei Lin", "-c", "user.email=meilin@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("wharf-demo.git");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(dir.path(), &["init", "--quiet", "--bare", bare.to_str().unwrap()]);
        git(&work, &["init", "--quiet"]);
        let commit = |file: &str, text: &str| {
            std::fs::write(work.join(file), text).unwrap();
            git(&work, &["add", file]);
            git(&work, &["commit", "--quiet", "-m", text]);
            git(&work, &["rev-parse", "HEAD"])
        };
        git(&work, &["checkout", "--quiet", "-b", "main"]);
        let m1 = commit("README", "m1");
        git(&work, &["checkout", "--quiet", "-b", "feature/login"]);
        let f1 = commit("login", "f1");
        git(&work, &["checkout", "--quiet", "--detach", &m1]);
        let t1 = commit("VERSION", "t1");
        git(&work, &["tag", "-a", "v1.4.0", "-m", "release 1.4.0"]);
        let tag_object = git(&work, &["rev-parse", "v1.4.0"]);
        git(&work, &["checkout", "--quiet", "--detach", &m1]);
        let k1 = commit("fork", "k1");
        git(&work, &["checkout", "--quiet", "main"]);
        let m2 = commit("README", "m2");
        let target = bare.to_str().unwrap();
        git(&work, &["push", "--quiet", target, "main", "feature/login", "v1.4.0"]);
        git(&work, &["push", "--quiet", target, &format!("{k1}:refs/pull/42/head")]);
        git(&work, &["push", "--quiet", target, &format!("{k1}:refs/merge-requests/17/head")]);
        let url = format!("file://{}", bare.display());
        Repo { _dir: dir, url, m1, m2, f1, t1, tag_object, k1 }
    }

    /// The address without `.git`, as a pipeline may write it.
    fn url_without_git(&self) -> String {
        self.url.strip_suffix(".git").unwrap().to_owned()
    }
}

// ---------------------------------------------------------------------------------
// Pipelines and checks

/// A pipeline on `repo` (branch `main`) with one `events` trigger (`branches` empty
/// for none) and `extra` lines under `source`, whose task prints the GIT_ variables.
fn pipeline(name: &str, repo: &str, events: &str, branches: &str, extra_source: &str) -> String {
    let branches = if branches.is_empty() { String::new() } else { format!("    branches: [{branches}]\n") };
    format!(
        "name: {name}\nsource:\n  repo: '{repo}'\n  branch: main\n{extra_source}triggers:\n  - events: [{events}]\n{branches}\
         stages:\n  - name: Build\n    tasks:\n      - name: show\n        type: script\n        script: \
         'echo \"commit=${{GIT_COMMIT}} branch=${{GIT_BRANCH}} tag=${{GIT_TAG}}\"'\n"
    )
}

async fn binding(s: &TestServer, name: &str, provider: &str) {
    s.post("/bindings", json!({ "name": name, "provider": provider, "webhook_secret": SECRET })).await.expect(201);
}

/// The pipelines an answer says were started, sorted, with the run ids.
fn started(answer: &Answer) -> Vec<(String, i64)> {
    let mut runs: Vec<(String, i64)> = answer.json["runs"]
        .as_array()
        .unwrap_or_else(|| panic!("no runs in {}", answer.text))
        .iter()
        .map(|r| (r["pipeline"].as_str().unwrap().to_owned(), id_of(r)))
        .collect();
    runs.sort();
    runs
}

fn names(runs: &[(String, i64)]) -> Vec<&str> {
    runs.iter().map(|(n, _)| n.as_str()).collect()
}

/// Waits for the run to succeed; returns the GIT_ line its task printed.
async fn git_line(s: &TestServer, run: i64) -> String {
    let record = s.wait_run(run).await;
    assert_eq!(record["status"], "succeeded", "{record:#}");
    let log = s.tail(run, "show", None).await.expect(200).text;
    log_texts(&log).into_iter().find(|l| l.starts_with("commit=")).unwrap_or_else(|| panic!("no GIT_ line: {log}"))
}

fn expect_line(commit: &str, branch: &str, tag: &str) -> String {
    format!("commit={commit} branch={branch} tag={tag}")
}

/// The total number of runs of every pipeline.
async fn run_count(s: &TestServer) -> i64 {
    let pipelines = s.get("/pipelines?limit=200").await.expect(200).json;
    let mut total = 0;
    for p in pipelines["items"].as_array().unwrap() {
        total += s.get(&format!("/pipelines/{}/runs", id_of(p))).await.expect(200).json["total"].as_i64().unwrap();
    }
    total
}

async fn deliveries(s: &TestServer) -> Vec<Value> {
    s.get("/deliveries?limit=200").await.expect(200).json["items"].as_array().unwrap().clone()
}

/// Creates the pipelines every provider test uses, for a binding named `bound`:
///
/// | pipeline | started by |
/// | --- | --- |
/// | `builds-main` (repo written without `.git`) | pushes to `main` |
/// | `bound-here` (`source.binding`, branches `ma*`) | pushes to `main` |
/// | `builds-release` (branches `release/*`) | nothing here |
/// | `releases` (tag, branches `[main]`, which tags ignore) | tags |
/// | `reviews` (merge, branches `[main]`: the target) | merge requests into `main` |
/// | `other-repo`, `other-binding`, `manual-only` | nothing |
async fn standard_pipelines(s: &TestServer, repo: &Repo, bound: &str) {
    let url = repo.url.as_str();
    s.create(&pipeline("builds-main", &repo.url_without_git(), "push", "main", "")).await;
    s.create(&pipeline("bound-here", url, "push", "\"ma*\"", &format!("  binding: {bound}\n"))).await;
    s.create(&pipeline("builds-release", url, "push", "\"release/*\"", "")).await;
    s.create(&pipeline("releases", url, "tag", "main", "")).await;
    s.create(&pipeline("reviews", url, "merge", "main", "")).await;
    s.create(&pipeline("other-repo", "file:///srv/git/other.git", "push, merge, tag", "", "")).await;
    s.create(&pipeline("other-binding", url, "push, merge, tag", "", "  binding: elsewhere\n")).await;
    s.create(&format!(
        "name: manual-only\nsource: {{repo: '{url}', branch: main}}\nstages:\n  - name: S\n    tasks:\n      - {{name: show, type: script, script: 'true'}}\n"
    ))
    .await;
}

/// One delivery of a provider test: what is sent, what it must start, and the GIT_
/// line each started run must print.
struct Case {
    event: &'static str,
    id: &'static str,
    body: Vec<u8>,
    pipelines: &'static [&'static str],
    line: String,
}

async fn run_cases(s: &TestServer, provider: &str, binding: &str, cases: Vec<Case>) {
    for case in &cases {
        let answer = send(s, provider, binding, case.event, case.id, &case.body).await;
        let what = format!("{provider} {} ({})", case.event, case.line);
        assert_eq!(answer.status.as_u16(), 202, "{what}: {}", answer.text);
        assert_eq!(answer.json["verdict"], "started", "{what}: {}", answer.text);
        let runs = started(&answer);
        assert_eq!(names(&runs), case.pipelines, "{what}: {}", answer.text);
        for (pipeline, run) in &runs {
            assert_eq!(git_line(s, *run).await, case.line, "{what}: pipeline {pipeline}");
            let record = s.run(run).await;
            assert_eq!(record["cause"]["kind"], "event", "{record:#}");
            assert_eq!(record["cause"]["provider"], provider);
            assert!(case.line.contains(record["cause"]["commit"].as_str().unwrap()), "{record:#}");
            assert!(!record["cause"]["delivery"].as_str().unwrap().is_empty());
        }
    }
    // Every delivery is listed with what it started; nothing else ran.
    let listed = deliveries(s).await;
    assert_eq!(listed.len(), cases.len());
    assert!(listed.iter().all(|d| d["verdict"] == "started" && d["provider"] == provider && d["binding"] == binding));
    let expected: usize = cases.iter().map(|c| c.pipelines.len()).sum();
    assert_eq!(run_count(s).await, expected as i64);
}

// ---------------------------------------------------------------------------------
// Each provider's events

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_push_tag_and_pull_requests_start_the_matching_pipelines_at_the_event_commit() {
    // Forks' requests run their scripts on this host server only because it says so.
    let s = common::start_with(tempfile::tempdir().unwrap(), |c| c.host_forks = true).await;
    let repo = Repo::new();
    binding(&s, "gh", "github").await;
    standard_pipelines(&s, &repo, "gh").await;
    let url = json!(repo.url);
    let cases = vec![
        Case {
            event: "push",
            id: "72d3162e-cc78-11e3-81ab-4c9367dc0001",
            body: edited(
                "github/push",
                &[
                    ("/ref", json!("refs/heads/main")),
                    ("/after", json!(repo.m1)),
                    ("/head_commit/id", json!(repo.m1)),
                    ("/repository/clone_url", url.clone()),
                ],
            ),
            // m1, although main's tip is m2 by now: the event's exact commit.
            pipelines: &["bound-here", "builds-main"],
            line: expect_line(&repo.m1, "main", ""),
        },
        Case {
            event: "push",
            id: "72d3162e-cc78-11e3-81ab-4c9367dc0002",
            body: edited(
                "github/push_tag",
                &[
                    ("/ref", json!("refs/tags/v1.4.0")),
                    ("/after", json!(repo.tag_object)),
                    ("/head_commit/id", json!(repo.t1)),
                    ("/repository/clone_url", url.clone()),
                ],
            ),
            pipelines: &["releases"],
            line: expect_line(&repo.t1, "", "v1.4.0"),
        },
        Case {
            event: "pull_request",
            id: "72d3162e-cc78-11e3-81ab-4c9367dc0003",
            body: edited(
                "github/pull_request_opened",
                &[
                    ("/pull_request/head/ref", json!("feature/login")),
                    ("/pull_request/head/sha", json!(repo.f1)),
                    ("/pull_request/head/repo/clone_url", url.clone()),
                    ("/pull_request/base/ref", json!("main")),
                    ("/repository/clone_url", url.clone()),
                ],
            ),
            pipelines: &["reviews"],
            line: expect_line(&repo.f1, "feature/login", ""),
        },
        Case {
            // From a fork: the target branch, with the head commit fetched by its sha.
            event: "pull_request",
            id: "72d3162e-cc78-11e3-81ab-4c9367dc0004",
            body: edited(
                "github/pull_request_synchronize",
                &[("/pull_request/head/sha", json!(repo.k1)), ("/repository/clone_url", url.clone())],
            ),
            pipelines: &["reviews"],
            line: expect_line(&repo.k1, "main", ""),
        },
        Case {
            event: "pull_request",
            id: "72d3162e-cc78-11e3-81ab-4c9367dc0005",
            body: edited(
                "github/pull_request_closed_merged",
                &[("/pull_request/merge_commit_sha", json!(repo.m2)), ("/repository/clone_url", url.clone())],
            ),
            pipelines: &["reviews"],
            line: expect_line(&repo.m2, "main", ""),
        },
    ];
    run_cases(&s, "github", "gh", cases).await;

    // A pull request into another branch, and a push to a branch no filter names.
    let other_base = edited(
        "github/pull_request_opened",
        &[("/pull_request/base/ref", json!("develop")), ("/repository/clone_url", url.clone())],
    );
    let answer = send(&s, "github", "gh", "pull_request", "other-base", &other_base).await.expect(200);
    assert_eq!(answer.json["verdict"], "ignored", "{}", answer.text);
    assert!(answer.json["reason"].as_str().unwrap().contains("no pipeline"), "{}", answer.text);
    let feature_push = edited(
        "github/push",
        &[
            ("/ref", json!("refs/heads/feature/login")),
            ("/after", json!(repo.f1)),
            ("/head_commit/id", json!(repo.f1)),
            ("/repository/clone_url", url.clone()),
        ],
    );
    send(&s, "github", "gh", "push", "feature-push", &feature_push).await.expect(200);
    assert_eq!(run_count(&s).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_push_tag_and_merge_requests_start_the_matching_pipelines_at_the_event_commit() {
    // Forks' requests run their scripts on this host server only because it says so.
    let s = common::start_with(tempfile::tempdir().unwrap(), |c| c.host_forks = true).await;
    let repo = Repo::new();
    binding(&s, "gl", "gitlab").await;
    standard_pipelines(&s, &repo, "gl").await;
    let url = json!(repo.url);
    let cases = vec![
        Case {
            event: "Push Hook",
            id: "f5e5f430-f57b-4e6e-9fac-d9128cd70001",
            body: edited(
                "gitlab/push",
                &[
                    ("/after", json!(repo.m1)),
                    ("/checkout_sha", json!(repo.m1)),
                    ("/project/git_http_url", url.clone()),
                    ("/repository/git_http_url", url.clone()),
                ],
            ),
            pipelines: &["bound-here", "builds-main"],
            line: expect_line(&repo.m1, "main", ""),
        },
        Case {
            event: "Tag Push Hook",
            id: "f5e5f430-f57b-4e6e-9fac-d9128cd70002",
            body: edited(
                "gitlab/tag_push",
                &[
                    ("/ref", json!("refs/tags/v1.4.0")),
                    ("/after", json!(repo.tag_object)),
                    ("/checkout_sha", json!(repo.t1)),
                    ("/project/git_http_url", url.clone()),
                    ("/repository/git_http_url", url.clone()),
                ],
            ),
            pipelines: &["releases"],
            line: expect_line(&repo.t1, "", "v1.4.0"),
        },
        Case {
            event: "Merge Request Hook",
            id: "f5e5f430-f57b-4e6e-9fac-d9128cd70003",
            body: edited(
                "gitlab/merge_request_open",
                &[
                    ("/object_attributes/source_branch", json!("feature/login")),
                    ("/object_attributes/last_commit/id", json!(repo.f1)),
                    ("/object_attributes/source/git_http_url", url.clone()),
                    ("/object_attributes/target/git_http_url", url.clone()),
                    ("/project/git_http_url", url.clone()),
                ],
            ),
            pipelines: &["reviews"],
            line: expect_line(&repo.f1, "feature/login", ""),
        },
        Case {
            // New commits on a fork's branch: target branch, head fetched by sha.
            event: "Merge Request Hook",
            id: "f5e5f430-f57b-4e6e-9fac-d9128cd70004",
            body: edited(
                "gitlab/merge_request_update",
                &[
                    ("/object_attributes/last_commit/id", json!(repo.k1)),
                    ("/object_attributes/target/git_http_url", url.clone()),
                    ("/project/git_http_url", url.clone()),
                ],
            ),
            pipelines: &["reviews"],
            line: expect_line(&repo.k1, "main", ""),
        },
        Case {
            event: "Merge Request Hook",
            id: "f5e5f430-f57b-4e6e-9fac-d9128cd70005",
            body: edited(
                "gitlab/merge_request_merge",
                &[
                    ("/object_attributes/merge_commit_sha", json!(repo.m2)),
                    ("/object_attributes/target/git_http_url", url.clone()),
                    ("/project/git_http_url", url.clone()),
                ],
            ),
            pipelines: &["reviews"],
            line: expect_line(&repo.m2, "main", ""),
        },
    ];
    run_cases(&s, "gitlab", "gl", cases).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitee_push_tag_and_merge_requests_start_the_matching_pipelines_at_the_event_commit() {
    // Forks' requests run their scripts on this host server only because it says so.
    let s = common::start_with(tempfile::tempdir().unwrap(), |c| c.host_forks = true).await;
    let repo = Repo::new();
    binding(&s, "ge", "gitee").await;
    standard_pipelines(&s, &repo, "ge").await;
    let url = json!(repo.url);
    let base_repo = |prefix: &str| -> Vec<(String, Value)> {
        ["clone_url", "git_http_url"].iter().map(|f| (format!("{prefix}/{f}"), url.clone())).collect()
    };
    let with = |name: &str, mut edits: Vec<(String, Value)>, extra: &[(&str, Value)]| {
        edits.extend(extra.iter().map(|(p, v)| (p.to_string(), v.clone())));
        let edits: Vec<(&str, Value)> = edits.iter().map(|(p, v)| (p.as_str(), v.clone())).collect();
        edited(name, &edits)
    };
    let cases = vec![
        Case {
            // Gitee's "signature" mode: a signed timestamp.
            event: "Push Hook",
            id: "signed",
            body: with(
                "gitee/push",
                base_repo("/repository"),
                &[("/ref", json!("refs/heads/main")), ("/after", json!(repo.m1)), ("/head_commit/id", json!(repo.m1))],
            ),
            pipelines: &["bound-here", "builds-main"],
            line: expect_line(&repo.m1, "main", ""),
        },
        Case {
            // "Password" mode: the secret itself in `X-Gitee-Token` (and the body).
            event: "Tag Push Hook",
            id: "password",
            body: with(
                "gitee/tag_push",
                base_repo("/repository"),
                &[
                    ("/ref", json!("refs/tags/v1.4.0")),
                    ("/after", json!(repo.tag_object)),
                    ("/head_commit/id", json!(repo.t1)),
                    ("/password", json!(SECRET)),
                ],
            ),
            pipelines: &["releases"],
            line: expect_line(&repo.t1, "", "v1.4.0"),
        },
        Case {
            event: "Merge Request Hook",
            id: "signed",
            body: with(
                "gitee/merge_request_open",
                [base_repo("/pull_request/base/repo"), base_repo("/pull_request/head/repo")].concat(),
                &[
                    ("/pull_request/head/ref", json!("feature/login")),
                    ("/pull_request/head/sha", json!(repo.f1)),
                    ("/pull_request/base/ref", json!("main")),
                ],
            ),
            pipelines: &["reviews"],
            line: expect_line(&repo.f1, "feature/login", ""),
        },
        Case {
            event: "Merge Request Hook",
            id: "password",
            body: with(
                "gitee/merge_request_update",
                base_repo("/pull_request/base/repo"),
                &[("/pull_request/head/sha", json!(repo.k1)), ("/pull_request/base/ref", json!("main"))],
            ),
            pipelines: &["reviews"],
            line: expect_line(&repo.k1, "main", ""),
        },
        Case {
            event: "Merge Request Hook",
            id: "signed",
            body: with(
                "gitee/merge_request_merge",
                base_repo("/pull_request/base/repo"),
                &[
                    ("/merge_commit_sha", json!(repo.m2)),
                    ("/pull_request/merge_commit_sha", json!(repo.m2)),
                    ("/pull_request/base/ref", json!("main")),
                ],
            ),
            pipelines: &["reviews"],
            line: expect_line(&repo.m2, "main", ""),
        },
    ];
    run_cases(&s, "gitee", "ge", cases).await;

    // The password Gitee repeats in the body is not stored.
    let listed = deliveries(&s).await;
    for d in &listed {
        let shown = s.get(&format!("/deliveries/{}", id_of(d))).await.expect(200);
        assert!(!shown.text.contains(SECRET), "{}", shown.text);
        assert_eq!(shown.json["headers"]["x-gitee-token"], "[redacted]");
    }
    // Gitee sends no delivery id: the body's digest stands in for it.
    assert!(listed.iter().all(|d| d["delivery_id"].as_str().unwrap().starts_with("sha256:")));
}

// ---------------------------------------------------------------------------------
// What starts nothing

/// Provider, binding, headers, body; the status and a part of the message expected.
type Refused<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a [u8], u16, &'a str);

/// Provider, binding, event, body (signed right); the status and a part of the message.
type Hostile<'a> = (&'a str, &'a str, &'a str, &'a [u8], u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_signatures_are_401_start_nothing_and_are_stored_rejected() {
    let s = common::start().await;
    let repo = Repo::new();
    for (name, provider) in [("gh", "github"), ("gl", "gitlab"), ("ge", "gitee")] {
        binding(&s, name, provider).await;
    }
    s.post("/bindings", json!({ "name": "no-secret", "provider": "github" })).await.expect(201);
    s.create(&pipeline("anything", &repo.url, "push, tag, merge", "", "")).await;
    let push = edited(
        "github/push",
        &[("/after", json!(repo.m1)), ("/head_commit/id", json!(repo.m1)), ("/repository/clone_url", json!(repo.url))],
    );
    let gitlab_push = edited(
        "gitlab/push",
        &[("/after", json!(repo.m1)), ("/checkout_sha", json!(repo.m1)), ("/project/git_http_url", json!(repo.url))],
    );
    let gitee_push = edited(
        "gitee/push",
        &[
            ("/ref", json!("refs/heads/main")),
            ("/after", json!(repo.m1)),
            ("/head_commit/id", json!(repo.m1)),
            ("/repository/clone_url", json!(repo.url)),
        ],
    );
    let wrong = format!("sha256={}", hex(&hmac_sha256(b"not the secret", &push)));
    let stale = (jiff::Timestamp::now().as_millisecond() - 2 * 3_600_000).to_string();
    let stale_signature = gitee_signature(&stale);
    let attempts: Vec<Refused> = vec![
        (
            "github",
            "gh",
            vec![("x-github-event", "push"), ("x-hub-signature-256", &wrong)],
            &push,
            401,
            "does not match",
        ),
        ("github", "gh", vec![("x-github-event", "push")], &push, 401, "x-hub-signature-256` is missing"),
        (
            "github",
            "gh",
            vec![("x-github-event", "push"), ("x-hub-signature-256", "sha1=abc")],
            &push,
            401,
            "malformed",
        ),
        (
            "gitlab",
            "gl",
            vec![("x-gitlab-event", "Push Hook"), ("x-gitlab-token", "guess")],
            &gitlab_push,
            401,
            "does not match",
        ),
        ("gitlab", "gl", vec![("x-gitlab-event", "Push Hook")], &gitlab_push, 401, "is missing"),
        (
            "gitee",
            "ge",
            vec![("x-gitee-event", "Push Hook"), ("x-gitee-token", "guess")],
            &gitee_push,
            401,
            "does not match",
        ),
        (
            "gitee",
            "ge",
            vec![("x-gitee-event", "Push Hook"), ("x-gitee-token", &stale_signature), ("x-gitee-timestamp", &stale)],
            &gitee_push,
            401,
            "behind the server's clock",
        ),
        ("github", "no-secret", vec![("x-github-event", "push")], &push, 401, "the binding has no webhook secret"),
        ("github", "nobody", vec![("x-github-event", "push")], &push, 404, "no repository binding is named `nobody`"),
        ("github", "gl", vec![("x-github-event", "push")], &push, 404, "is a gitlab binding"),
        ("bitbucket", "gh", vec![("x-event-key", "repo:push")], &push, 404, "unknown webhook provider"),
    ];
    for (provider, binding, headers, body, status, message) in &attempts {
        let answer = deliver(&s, provider, binding, headers, body).await.expect_error(*status);
        assert!(answer.error_text().contains(message), "{provider}/{binding}: {}", answer.text);
        assert_eq!(answer.json["verdict"], "rejected");
        assert!(answer.json["delivery"].as_i64().is_some(), "{}", answer.text);
    }
    assert_eq!(run_count(&s).await, 0);
    let listed = deliveries(&s).await;
    assert_eq!(listed.len(), attempts.len());
    assert!(listed.iter().all(|d| d["verdict"] == "rejected" && d["runs"] == json!([])), "{listed:#?}");
    // The GitLab token guess is not stored; the list never shows headers.
    let list_text = s.get("/deliveries").await.text;
    assert!(!list_text.contains("guess") && !list_text.contains("\"headers\""), "{list_text}");
    let gitlab = listed
        .iter()
        .find(|d| d["provider"] == "gitlab" && d["reason"].as_str().unwrap().contains("does not match"))
        .unwrap();
    let shown = s.get(&format!("/deliveries/{}", id_of(gitlab))).await.expect(200).json;
    assert_eq!(shown["headers"]["x-gitlab-token"], "[redacted]");
    assert_eq!(shown["event"], "Push Hook");

    // The real delivery, signed right, still goes through.
    let answer = send(&s, "github", "gh", "push", "real", &push).await.expect(202);
    assert_eq!(names(&started(&answer)), ["anything"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_delivery_id_is_a_duplicate_and_starts_nothing() {
    let s = common::start().await;
    let repo = Repo::new();
    for (name, provider) in [("gh", "github"), ("gl", "gitlab"), ("ge", "gitee")] {
        binding(&s, name, provider).await;
    }
    s.create(&pipeline("anything", &repo.url, "push", "", "")).await;
    let push = edited(
        "github/push",
        &[("/after", json!(repo.m1)), ("/head_commit/id", json!(repo.m1)), ("/repository/clone_url", json!(repo.url))],
    );
    // A forged copy first: rejected, so it does not make the real one a repeat.
    let forged = deliver(
        &s,
        "github",
        "gh",
        &[
            ("x-github-event", "push"),
            ("x-github-delivery", "d-1"),
            ("x-hub-signature-256", &format!("sha256={}", "0".repeat(64))),
        ],
        &push,
    )
    .await
    .expect(401);
    let first = send(&s, "github", "gh", "push", "d-1", &push).await.expect(202);
    let again = send(&s, "github", "gh", "push", "d-1", &push).await.expect(200);
    assert_eq!(again.json["verdict"], "duplicate");
    assert_eq!(again.json["runs"], json!([]));
    let reason = again.json["reason"].as_str().unwrap();
    assert!(reason.contains(&format!("delivery {}", first.json["delivery"])), "{reason}");
    assert!(!reason.contains(&format!("delivery {}", forged.json["delivery"])), "{reason}");

    // (Each provider pushes another commit: one commit on one branch starts a
    // pipeline once, whichever delivery brings it; see one_commit_runs_once.)
    let gitlab_push = edited(
        "gitlab/push",
        &[("/after", json!(repo.m2)), ("/checkout_sha", json!(repo.m2)), ("/project/git_http_url", json!(repo.url))],
    );
    send(&s, "gitlab", "gl", "Push Hook", "uuid-1", &gitlab_push).await.expect(202);
    let again = send(&s, "gitlab", "gl", "Push Hook", "uuid-1", &gitlab_push).await.expect(200);
    assert_eq!(again.json["verdict"], "duplicate");
    // The same id through another binding is another delivery.
    binding(&s, "gl2", "gitlab").await;
    let other_push = edited(
        "gitlab/push",
        &[("/after", json!(repo.f1)), ("/checkout_sha", json!(repo.f1)), ("/project/git_http_url", json!(repo.url))],
    );
    send(&s, "gitlab", "gl2", "Push Hook", "uuid-1", &other_push).await.expect(202);

    // Gitee sends no id: the same body again is the same delivery.
    let gitee_push = edited(
        "gitee/push",
        &[
            ("/ref", json!("refs/heads/main")),
            ("/after", json!(repo.k1)),
            ("/head_commit/id", json!(repo.k1)),
            ("/repository/clone_url", json!(repo.url)),
        ],
    );
    send(&s, "gitee", "ge", "Push Hook", "password", &gitee_push).await.expect(202);
    let again = send(&s, "gitee", "ge", "Push Hook", "signed", &gitee_push).await.expect(200);
    assert_eq!(again.json["verdict"], "duplicate");

    assert_eq!(run_count(&s).await, 4);
    let verdicts: Vec<String> =
        deliveries(&s).await.iter().rev().map(|d| d["verdict"].as_str().unwrap().into()).collect();
    assert_eq!(
        verdicts,
        ["rejected", "started", "duplicate", "started", "duplicate", "started", "started", "duplicate"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_deletions_and_events_without_new_code_are_ignored() {
    let s = common::start().await;
    let repo = Repo::new();
    for (name, provider) in [("gh", "github"), ("gl", "gitlab"), ("ge", "gitee")] {
        binding(&s, name, provider).await;
    }
    s.create(&pipeline("anything", &repo.url, "push, tag, merge", "", "")).await;
    let url = json!(repo.url);
    let ping = serde_json::to_vec(&fixture("github/ping")).unwrap();
    let delete = edited("github/push_delete", &[("/repository/clone_url", url.clone())]);
    let gitlab_delete = edited("gitlab/push_delete", &[("/project/git_http_url", url.clone())]);
    let edited_pr =
        edited("github/pull_request_opened", &[("/action", json!("edited")), ("/repository/clone_url", url.clone())]);
    let closed_mr = edited(
        "gitlab/merge_request_open",
        &[("/object_attributes/action", json!("close")), ("/project/git_http_url", url.clone())],
    );
    let cases: Vec<(&str, &str, &str, &[u8], &str)> = vec![
        ("github", "gh", "ping", &ping, "a ping"),
        ("github", "gh", "push", &delete, "branch `feature/old-upload` was deleted"),
        ("gitlab", "gl", "Push Hook", &gitlab_delete, "branch `spike/grpc` was deleted"),
        ("github", "gh", "pull_request", &edited_pr, "was edited"),
        ("gitlab", "gl", "Merge Request Hook", &closed_mr, "was closed"),
        ("github", "gh", "issues", b"{\"action\": \"opened\"}", "the `issues` event starts nothing"),
        ("gitlab", "gl", "Pipeline Hook", b"{}", "the `Pipeline Hook` event starts nothing"),
    ];
    for (i, (provider, binding, event, body, reason)) in cases.iter().enumerate() {
        let answer = send(&s, provider, binding, event, &format!("ignored-{i}"), body).await.expect(200);
        assert_eq!(answer.json["verdict"], "ignored", "{}", answer.text);
        assert!(answer.json["reason"].as_str().unwrap().contains(reason), "{}", answer.text);
    }
    // Gitee's test button.
    let headers = [
        ("x-gitee-event", "Push Hook"),
        ("x-gitee-token", SECRET),
        ("x-gitee-ping", "true"),
        ("x-gitee-timestamp", "1"),
    ];
    let answer = deliver(&s, "gitee", "ge", &headers, b"{\"hook_name\": \"push_hooks\"}").await.expect(200);
    assert_eq!(answer.json["verdict"], "ignored");
    assert_eq!(run_count(&s).await, 0);
    let listed = deliveries(&s).await;
    assert_eq!(listed.len(), cases.len() + 1);
    assert!(listed.iter().all(|d| d["verdict"] == "ignored"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_deliveries_are_refused_with_the_right_status_and_nothing_is_lost() {
    let s = common::start().await;
    let repo = Repo::new();
    binding(&s, "gh", "github").await;
    binding(&s, "gl", "gitlab").await;
    s.create(&pipeline("anything", &repo.url, "push, tag, merge", "", "")).await;
    let url = json!(repo.url);
    let marker = repo._dir.path().join("pwned");
    let push = edited(
        "github/push",
        &[("/after", json!(repo.m1)), ("/head_commit/id", json!(repo.m1)), ("/repository/clone_url", url.clone())],
    );
    let truncated = push[..push.len() / 2].to_vec();
    let mut not_utf8 = push.clone();
    let at = not_utf8.iter().position(|b| *b == b'm').unwrap();
    not_utf8[at] = 0xff;
    let shell_ref = edited(
        "github/push",
        &[("/ref", json!(format!("refs/heads/$(touch {})", marker.display()))), ("/repository/clone_url", url.clone())],
    );
    let dotdot_ref =
        edited("github/push", &[("/ref", json!("refs/heads/a/../../b")), ("/repository/clone_url", url.clone())]);
    let dotdot_branch = edited(
        "gitlab/merge_request_open",
        &[("/object_attributes/source_branch", json!("fix/../../etc")), ("/project/git_http_url", url.clone())],
    );
    let backtick_tag =
        edited("gitlab/tag_push", &[("/ref", json!("refs/tags/v1`id`")), ("/project/git_http_url", url.clone())]);
    let bad_url = edited("github/push", &[("/repository/clone_url", json!("ext::sh -c touch% /tmp/pwned"))]);
    let short_commit = edited("github/push", &[("/after", json!("abc123")), ("/repository/clone_url", url.clone())]);
    let mut huge = b"{\"ref\": \"refs/heads/main\", \"pad\": \"".to_vec();
    huge.resize(10 * 1024 * 1024 + 1 - 2, b'x');
    huge.extend_from_slice(b"\"}");
    assert_eq!(huge.len(), 10 * 1024 * 1024 + 1);

    let cases: Vec<Hostile> = vec![
        ("github", "gh", "push", &truncated, 400, "payload is not valid"),
        ("github", "gh", "push", &not_utf8, 400, "not valid UTF-8"),
        ("github", "gh", "push", &shell_ref, 422, "field `ref`"),
        ("github", "gh", "push", &dotdot_ref, 422, "`..`"),
        ("gitlab", "gl", "Merge Request Hook", &dotdot_branch, 422, "object_attributes.source_branch"),
        ("gitlab", "gl", "Tag Push Hook", &backtick_tag, 422, "field `ref`"),
        ("github", "gh", "push", &bad_url, 422, "repository.clone_url"),
        ("github", "gh", "push", &short_commit, 422, "40 hexadecimal"),
        ("github", "gh", "push", &huge, 413, "at most 10485760"),
    ];
    for (i, (provider, binding, event, body, status, message)) in cases.iter().enumerate() {
        let answer = send(&s, provider, binding, event, &format!("hostile-{i}"), body).await.expect_error(*status);
        assert!(answer.error_text().contains(message), "case {i}: {}", answer.text);
        assert_eq!(answer.json["verdict"], "rejected", "case {i}");
    }
    // No event header at all: not a delivery.
    let answer = deliver(&s, "github", "gh", &[("x-hub-signature-256", &github_signature(&push))], &push)
        .await
        .expect_error(400);
    assert!(answer.error_text().contains("x-github-event"), "{}", answer.text);

    assert_eq!(run_count(&s).await, 0);
    assert!(!marker.exists(), "a ref ran as a shell command");
    // Every one of them is listed, rejected, with a reason; the huge body is not kept.
    let listed = deliveries(&s).await;
    assert_eq!(listed.len(), cases.len() + 1);
    assert!(listed.iter().all(|d| d["verdict"] == "rejected" && d["reason"].as_str().is_some_and(|r| !r.is_empty())));
    let huge_row = &listed[1];
    let shown = s.get(&format!("/deliveries/{}", id_of(huge_row))).await.expect(200).json;
    assert_eq!(shown["body_size"], Value::Null, "{shown:#}");
    assert!(shown["reason"].as_str().unwrap().contains("10485761"), "{shown:#}");
    // A rejected body is kept only in part.
    let first = listed.last().unwrap();
    let shown = s.get(&format!("/deliveries/{}", id_of(first))).await.expect(200).json;
    assert_eq!(shown["body_size"], json!(truncated.len()));
    assert_eq!(shown["body_sha256"], json!(hex(&Sha256::digest(&truncated))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_pipeline_starts_nothing_and_the_delivery_says_so() {
    let s = common::start().await;
    let repo = Repo::new();
    binding(&s, "gh", "github").await;
    let sleeping = id_of(&s.create(&pipeline("sleeping", &repo.url, "push", "main", "")).await);
    s.post_empty(&format!("/pipelines/{sleeping}/deactivate")).await.expect(200);
    let push = edited(
        "github/push",
        &[("/after", json!(repo.m1)), ("/head_commit/id", json!(repo.m1)), ("/repository/clone_url", json!(repo.url))],
    );
    let answer = send(&s, "github", "gh", "push", "d-1", &push).await.expect(200);
    assert_eq!(answer.json["verdict"], "ignored");
    assert!(
        answer.json["reason"].as_str().unwrap().contains("pipeline `sleeping` matches but is inactive"),
        "{}",
        answer.text
    );

    // With an active one beside it, the delivery starts that one and still says why
    // the other did not start.
    s.create(&pipeline("awake", &repo.url, "push", "main", "")).await;
    let answer = send(&s, "github", "gh", "push", "d-2", &push).await.expect(202);
    assert_eq!(names(&started(&answer)), ["awake"]);
    assert!(answer.json["reason"].as_str().unwrap().contains("`sleeping`"), "{}", answer.text);
    assert_eq!(run_count(&s).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_are_found_by_their_repository_and_old_ones_are_keyed_once() {
    let s = common::start().await;
    let repo = Repo::new();
    binding(&s, "gh", "github").await;
    let store = &s.server.state.store;
    // Saved through the API: keyed with the repository its events trigger listens to.
    s.create(&pipeline("saved", &repo.url, "push", "main", "")).await;
    let key = wharf_core::git::GitUrl::parse(&repo.url).unwrap().key();
    let found = |rows: Vec<wharf_store::PipelineRow>| rows.into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(found(store.pipelines_for_events(std::slice::from_ref(&key)).await.unwrap()), ["saved"]);
    assert!(found(store.pipelines_for_events(&["github.com/other/repo".to_owned()]).await.unwrap()).is_empty());
    // One saved as before the key existed (no key), and one without an events trigger.
    store
        .create_pipeline_by("admin", "legacy", &pipeline("legacy", &repo.url, "push", "main", ""), "admin", None)
        .await
        .unwrap();
    let timer_only = "name: quiet\nsource:\n  repo: 'https://github.com/acme/app'\nstages:\n  - name: B\n    tasks:\n      - \
                      {name: t, type: script, script: 'true'}\n";
    store.create_pipeline_by("admin", "quiet", timer_only, "admin", None).await.unwrap();
    // Unkeyed ones are still candidates (parsed) …
    let push = edited(
        "github/push",
        &[("/after", json!(repo.m1)), ("/head_commit/id", json!(repo.m1)), ("/repository/clone_url", json!(repo.url))],
    );
    let answer = send(&s, "github", "gh", "push", "d-1", &push).await.expect(202);
    assert_eq!(names(&started(&answer)), ["legacy", "saved"]);
    // … until the start-up pass keys them: then only this repository's are read.
    wharf_server::hooks::key_old_versions(s.server.state.clone()).await;
    assert!(store.pipelines_without_events_repo(0, 10).await.unwrap().is_empty());
    assert_eq!(found(store.pipelines_for_events(&[key]).await.unwrap()), ["legacy", "saved"]);
    let push = edited(
        "github/push",
        &[("/after", json!(repo.m2)), ("/head_commit/id", json!(repo.m2)), ("/repository/clone_url", json!(repo.url))],
    );
    let answer = send(&s, "github", "gh", "push", "d-2", &push).await.expect(202);
    assert_eq!(names(&started(&answer)), ["legacy", "saved"]);
}

// ---------------------------------------------------------------------------------
// Replay and restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_starts_again_as_a_new_delivery_and_rejected_ones_cannot_be_replayed() {
    let s = common::start().await;
    let repo = Repo::new();
    binding(&s, "gh", "github").await;
    s.create(&pipeline("builds", &repo.url, "push, tag", "main", "")).await;
    let tag = edited(
        "github/push_tag",
        &[
            ("/ref", json!("refs/tags/v1.4.0")),
            ("/after", json!(repo.tag_object)),
            ("/head_commit/id", json!(repo.t1)),
            ("/repository/clone_url", json!(repo.url)),
        ],
    );
    let first = send(&s, "github", "gh", "push", "d-1", &tag).await.expect(202);
    let original = first.json["delivery"].as_i64().unwrap();
    let first_run = started(&first)[0].1;
    assert_eq!(git_line(&s, first_run).await, expect_line(&repo.t1, "", "v1.4.0"));

    let replayed = s.post_empty(&format!("/deliveries/{original}/replay")).await.expect(201);
    assert_eq!(replayed.json["verdict"], "started", "{}", replayed.text);
    assert_eq!(replayed.json["replay_of"], original);
    assert_eq!(replayed.json["reason"], format!("replay of delivery {original}"));
    let runs = started(&replayed);
    assert_eq!(names(&runs), ["builds"]);
    assert_ne!(runs[0].1, first_run);
    assert_eq!(git_line(&s, runs[0].1).await, expect_line(&repo.t1, "", "v1.4.0"));

    // A duplicate can be replayed too (it was authentic); a rejected one cannot.
    let duplicate = send(&s, "github", "gh", "push", "d-1", &tag).await.expect(200).json["delivery"].as_i64().unwrap();
    s.post_empty(&format!("/deliveries/{duplicate}/replay")).await.expect(201);
    let forged = deliver(&s, "github", "gh", &[("x-github-event", "push")], &tag).await.expect(401);
    let forged = forged.json["delivery"].as_i64().unwrap();
    let refused = s.post_empty(&format!("/deliveries/{forged}/replay")).await.expect_error(409);
    assert!(refused.error_text().contains("rejected"), "{}", refused.text);
    s.post_empty("/deliveries/9999/replay").await.expect_error(404);
    s.post_empty("/deliveries/x/replay").await.expect_error(404);

    // The replays are listed as deliveries of their own, newest first.
    let listed = deliveries(&s).await;
    let verdicts: Vec<&str> = listed.iter().map(|d| d["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["rejected", "started", "duplicate", "started", "started"]);
    assert_eq!(listed[1]["reason"], format!("replay of delivery {duplicate}"));
    assert_eq!(run_count(&s).await, 3);
    // Replay needs the bearer token.
    let plain = reqwest::Client::new().post(s.url(&format!("/deliveries/{original}/replay"))).send().await.unwrap();
    assert_eq!(plain.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_a_restart_cut_short_is_finished_without_starting_twice() {
    let s = common::start().await;
    let repo = Repo::new();
    binding(&s, "gh", "github").await;
    let one = id_of(&s.create(&pipeline("one", &repo.url, "push", "main", "")).await);
    s.create(&pipeline("two", &repo.url, "push", "main", "")).await;
    let push = edited(
        "github/push",
        &[("/after", json!(repo.m1)), ("/head_commit/id", json!(repo.m1)), ("/repository/clone_url", json!(repo.url))],
    );
    // As a process killed mid-way leaves it: verified and stored `received`, with the
    // run of `one` already queued and recorded on it.
    let state = &s.server.state;
    let id = state
        .store
        .insert_delivery(&NewDelivery {
            binding: "gh".into(),
            provider: "github".into(),
            delivery_id: "cut-short".into(),
            event: "push".into(),
            headers: json!({ "x-github-event": "push", "x-github-delivery": "cut-short" }),
            body: Some(push.clone()),
            body_sha256: hex(&Sha256::digest(&push)),
            verdict: Verdict::Received,
            reason: None,
            signature_sha256: None,
        })
        .await
        .unwrap();
    let earlier = s.start_run(one, json!({})).await;
    state.store.update_delivery(id, Verdict::Received, None, &[id_of(&earlier)]).await.unwrap();

    wharf_server::hooks::resume(state).await;
    let row = s.get(&format!("/deliveries/{id}")).await.expect(200).json;
    assert_eq!(row["verdict"], "started", "{row:#}");
    assert!(row["reason"].as_str().unwrap().contains("after a server restart"), "{row:#}");
    let runs = row["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{row:#}");
    assert_eq!(runs[0], earlier["id"]);
    let started_now = runs[1].as_i64().unwrap();
    assert_eq!(s.run(started_now).await["pipeline"], "two");
    assert_eq!(git_line(&s, started_now).await, expect_line(&repo.m1, "main", ""));
    assert_eq!(run_count(&s).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_event_run_keeps_its_tag_and_commit_across_a_restart() {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use wharf_engine::{GitRef, RunRequest, Workspace};
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::new();
    let yaml = pipeline("releases", &repo.url, "tag", "", "");
    {
        // What a server that died right after accepting a tag event left: the run,
        // stored `queued`, at the tag's commit.
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let store = wharf_store::Store::open(dir.path().join("data/wharf.db").to_str().unwrap()).await.unwrap();
        let row = store.create_pipeline("admin", "releases", &yaml).await.unwrap();
        let model = Arc::new(wharf_pipeline::parse(&yaml).unwrap());
        let cause = wharf_core::run::Cause::Event {
            provider: "github".into(),
            delivery: "d-1".into(),
            sender: "meilin".into(),
            commit: repo.t1.clone(),
            fork: false,
        };
        store
            .create_run(row.id, row.version, None, Some(&repo.t1), |new| {
                wharf_engine::initial_record(&RunRequest {
                    pipeline: model,
                    number: new.number as u64,
                    increment: new.increment as u64,
                    cause,
                    parameters: BTreeMap::new(),
                    secrets: BTreeMap::new(),
                    workspace: Workspace::Checkout { dir: std::path::PathBuf::new() },
                    commit: Some(repo.t1.clone()),
                    git_ref: Some(GitRef::Tag("v1.4.0".into())),
                    resume: None,
                    created_at: None,
                    labels: vec![],
                    registries: Default::default(),
                    clusters: Default::default(),
                    local_sources: false,
                    approvals: None,
                    signals: None,
                })
            })
            .await
            .unwrap();
    }
    let s = common::start_in(dir).await;
    let runs = s.get("/pipelines/releases/runs").await.expect(200).json;
    let run = id_of(&runs["items"][0]);
    assert_eq!(git_line(&s, run).await, expect_line(&repo.t1, "", "v1.4.0"));

    // A re-run clones the same tag at the same commit.
    let again = id_of(&s.post_empty(&format!("/runs/{run}/rerun")).await.expect(201).json);
    assert_eq!(git_line(&s, again).await, expect_line(&repo.t1, "", "v1.4.0"));
    assert_eq!(s.run(again).await["checkout"]["tag"], "v1.4.0");
}

// ---------------------------------------------------------------------------------
// Bindings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_are_created_listed_shown_and_deleted_unless_pipelines_use_them() {
    let s = common::start().await;
    let created = s
        .post(
            "/bindings",
            json!({ "name": "gitlab-main", "provider": "gitlab", "url": "https://gitlab.example.com",
                    "client_id": "app-id", "client_secret": "client-s3cret", "token": "glpat-t0ken",
                    "webhook_secret": "hook-s3cret" }),
        )
        .await
        .expect(201);
    for secret in ["client-s3cret", "glpat-t0ken", "hook-s3cret"] {
        assert!(!created.text.contains(secret), "{}", created.text);
    }
    assert_eq!(created.json["name"], "gitlab-main");
    assert_eq!(created.json["client_id"], "app-id");
    assert_eq!(created.json["url"], "https://gitlab.example.com");
    assert_eq!(created.json["webhook_path"], "/hooks/gitlab/gitlab-main");
    assert!(created.json["has_token"] == true && created.json["has_webhook_secret"] == true);
    assert_eq!(created.json["has_client_secret"], true);
    let plain = s.post("/bindings", json!({ "name": "plain", "provider": "git" })).await.expect(201);
    assert_eq!(plain.json["webhook_path"], Value::Null);
    assert_eq!(plain.json["has_token"], false);

    s.post("/bindings", json!({ "name": "gitlab-main", "provider": "github" })).await.expect_error(409);
    let bad = s.post("/bindings", json!({ "name": "x", "provider": "bitbucket" })).await.expect_error(422);
    assert!(bad.error_text().contains("github, gitlab, gitee, git"), "{}", bad.text);
    let bad = s.post("/bindings", json!({ "name": "../x", "provider": "github" })).await.expect_error(422);
    assert!(bad.error_text().contains("not a valid binding name"), "{}", bad.text);
    let bad = s.post("/bindings", json!({ "name": "x", "provider": "gitlab", "url": "gitlab.example.com" })).await;
    assert!(bad.expect_error(422).error_text().contains("url"));
    s.post("/bindings", json!({ "name": "x", "provider": "github", "password": "?" })).await.expect_error(422);

    let listed = s.get("/bindings").await.expect(200);
    assert_eq!(listed.json["total"], 2);
    let names: Vec<&str> =
        listed.json["items"].as_array().unwrap().iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gitlab-main", "plain"]);
    assert!(!listed.text.contains("s3cret") && !listed.text.contains("t0ken"), "{}", listed.text);
    let shown = s.get("/bindings/gitlab-main").await.expect(200);
    assert_eq!(shown.json["provider"], "gitlab");
    assert!(!shown.text.contains("s3cret"));
    s.get("/bindings/nobody").await.expect_error(404);

    // "Log out" is refused while pipelines use the binding, naming them.
    let yaml = |name: &str, binding: &str| {
        format!(
            "name: {name}\nsource: {{repo: 'https://gitlab.example.com/qa/app.git', branch: main, binding: {binding}}}\nstages:\n  - name: S\n    tasks:\n      - {{name: t, type: script, script: 'true'}}\n"
        )
    };
    let deploy = id_of(&s.create(&yaml("deploy-2048", "gitlab-main")).await);
    s.create(&yaml("nightly", "gitlab-main")).await;
    let refused = s.delete("/bindings/gitlab-main").await.expect_error(409);
    let text = refused.error_text();
    assert!(text.contains("`deploy-2048`") && text.contains("`nightly`"), "{text}");
    // Only the latest version counts.
    s.send_yaml(Method::PUT, &format!("/pipelines/{deploy}"), &yaml("deploy-2048", "plain")).await.expect(200);
    s.delete("/pipelines/nightly").await.expect(204);
    let refused = s.delete("/bindings/plain").await.expect_error(409);
    assert!(refused.error_text().contains("`deploy-2048`"));
    s.delete("/bindings/gitlab-main").await.expect(204);
    s.get("/bindings/gitlab-main").await.expect_error(404);
    s.delete("/bindings/gitlab-main").await.expect_error(404);
    // Without the bearer token: 401.
    let plain = reqwest::Client::new().get(s.url("/bindings")).send().await.unwrap();
    assert_eq!(plain.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_verdicts_are_counted_in_the_metrics() {
    let s = common::start().await;
    binding(&s, "gh", "github").await;
    let ping = serde_json::to_vec(&fixture("github/ping")).unwrap();
    send(&s, "github", "gh", "ping", "p-1", &ping).await.expect(200);
    deliver(&s, "github", "gh", &[("x-github-event", "ping")], &ping).await.expect(401);
    let metrics = s.metrics().await;
    assert!(metrics.contains("wharf_webhook_deliveries_total{verdict=\"ignored\"} 1"), "{metrics}");
    assert!(metrics.contains("wharf_webhook_deliveries_total{verdict=\"rejected\"} 1"), "{metrics}");
}

// ---------------------------------------------------------------------------------
// Policies: one run per commit, forks get no secrets, Gitee signatures once

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_request_and_its_push_start_one_run_whichever_comes_first() {
    let s = common::start().await;
    let repo = Repo::new();
    let url = json!(repo.url);
    binding(&s, "gh", "github").await;
    binding(&s, "gl", "gitlab").await;
    s.create(&pipeline("both", &repo.url, "push, merge", "main", "")).await;

    // GitHub: the merge event first, then the push of the merge commit.
    let merged = edited(
        "github/pull_request_closed_merged",
        &[("/pull_request/merge_commit_sha", json!(repo.m2)), ("/repository/clone_url", url.clone())],
    );
    let first = send(&s, "github", "gh", "pull_request", "merged-1", &merged).await.expect(202);
    let (_, run) = started(&first).remove(0);
    let push = edited(
        "github/push",
        &[("/after", json!(repo.m2)), ("/head_commit/id", json!(repo.m2)), ("/repository/clone_url", url.clone())],
    );
    let second = send(&s, "github", "gh", "push", "push-1", &push).await.expect(200);
    assert_eq!(second.json["verdict"], "ignored", "{}", second.text);
    let reason = second.json["reason"].as_str().unwrap();
    assert!(reason.contains("pipeline `both` already ran for commit") && reason.contains("run #1"), "{reason}");
    assert_eq!(git_line(&s, run).await, expect_line(&repo.m2, "main", ""));

    // GitLab: the push first (of another commit), then the merge event for it.
    let push = edited(
        "gitlab/push",
        &[("/after", json!(repo.m1)), ("/checkout_sha", json!(repo.m1)), ("/project/git_http_url", url.clone())],
    );
    send(&s, "gitlab", "gl", "Push Hook", "gl-push", &push).await.expect(202);
    let merged = edited(
        "gitlab/merge_request_merge",
        &[
            ("/object_attributes/merge_commit_sha", json!(repo.m1)),
            ("/object_attributes/target/git_http_url", url.clone()),
            ("/project/git_http_url", url.clone()),
        ],
    );
    let later = send(&s, "gitlab", "gl", "Merge Request Hook", "gl-merge", &merged).await.expect(200);
    assert!(later.json["reason"].as_str().unwrap().contains("already ran"), "{}", later.text);

    // An admin's replay asks for the run again: it runs.
    assert_eq!(run_count(&s).await, 2);
    let replayed = s.post_empty(&format!("/deliveries/{}/replay", second.json["delivery"])).await.expect(201);
    assert_eq!(replayed.json["verdict"], "started", "{}", replayed.text);
    assert_eq!(run_count(&s).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_requests_from_forks_get_no_secrets() {
    let s = common::start().await;
    let repo = Repo::new();
    let url = json!(repo.url);
    binding(&s, "gh", "github").await;
    s.create(&pipeline("reviews", &repo.url, "merge", "main", "")).await;
    s.create(&format!(
        "name: needs-secrets\nsource: {{repo: '{}', branch: main}}\ntriggers:\n  - events: [merge]\nstages:\n  - name: \
         Publish\n    tasks:\n      - {{name: push, type: script, script: 'true', secrets: [registryPassword]}}\n",
        repo.url
    ))
    .await;

    // The fixture's request comes from a fork (`head.repo` is another repository).
    let fork = edited(
        "github/pull_request_synchronize",
        &[("/pull_request/head/sha", json!(repo.k1)), ("/repository/clone_url", url.clone())],
    );
    let answer = send(&s, "github", "gh", "pull_request", "fork-1", &fork).await.expect(200);
    assert_eq!(answer.json["verdict"], "ignored", "{}", answer.text);
    let reason = answer.json["reason"].as_str().unwrap();
    assert!(
        reason.contains("pipeline `needs-secrets` not started: the request comes from a fork")
            && reason.contains("`registryPassword` (Publish/push)"),
        "{reason}"
    );
    // This server runs scripts on the host, where code from forks runs only with
    // `host_forks`, even in a trusted project on a single-user server (issue 11: an
    // outsider's pull request must not get the server's machine). The provider tests
    // above run forks' requests with `host_forks = true`.
    assert!(started(&answer).is_empty(), "{}", answer.text);
    assert!(reason.contains("code from forks runs on the host only where an administrator allows it"), "{reason}");

    // A request from a branch of the same repository is trusted.
    let own = edited(
        "github/pull_request_opened",
        &[
            ("/pull_request/head/ref", json!("feature/login")),
            ("/pull_request/head/sha", json!(repo.f1)),
            ("/pull_request/head/repo/clone_url", url.clone()),
            ("/pull_request/base/ref", json!("main")),
            ("/repository/clone_url", url.clone()),
        ],
    );
    let answer = send(&s, "github", "gh", "pull_request", "own-1", &own).await.expect(202);
    let run = started(&answer).into_iter().find(|(n, _)| n == "reviews").unwrap().1;
    assert!(s.run(run).await["cause"].get("fork").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitee_signature_is_good_for_one_body_only() {
    let s = common::start().await;
    let repo = Repo::new();
    binding(&s, "ge", "gitee").await;
    s.create(&pipeline("builds", &repo.url, "push", "", "")).await;
    let body = |commit: &str| {
        edited(
            "gitee/push",
            &[
                ("/ref", json!("refs/heads/main")),
                ("/after", json!(commit)),
                ("/head_commit/id", json!(commit)),
                ("/repository/clone_url", json!(repo.url)),
            ],
        )
    };
    let timestamp = now_ms();
    let signature = gitee_signature(&timestamp);
    let headers = [
        ("x-gitee-event", "Push Hook"),
        ("x-gitee-timestamp", timestamp.as_str()),
        ("x-gitee-token", signature.as_str()),
    ];
    deliver(&s, "gitee", "ge", &headers, &body(&repo.m1)).await.expect(202);
    // Gitee retrying the same delivery: a duplicate, not a forgery.
    let again = deliver(&s, "gitee", "ge", &headers, &body(&repo.m1)).await.expect(200);
    assert_eq!(again.json["verdict"], "duplicate");
    // The captured signature with a body of someone else's choosing.
    let forged = deliver(&s, "gitee", "ge", &headers, &body(&repo.m2)).await.expect(401);
    assert!(forged.error_text().contains("came before with another body"), "{}", forged.text);
    assert_eq!(run_count(&s).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_another_users_binding_does_not_start_a_pipeline_that_names_none() {
    let s = common::start().await;
    let repo = Repo::new();
    // Vic's binding receives her repository's pushes; Mal's pipeline points at the same
    // repository and names no binding.
    let vic = s.user("vic", "user", &["web"]).await;
    let binding = json!({ "name": "vic-gh", "provider": "github", "webhook_secret": SECRET });
    vic.post("/bindings", binding).await.expect(201);
    let mal = s.user("mal", "manager", &["web"]).await;
    let yaml = format!("project: web\n{}", pipeline("mals", &repo.url, "push", "", ""));
    mal.send_yaml(Method::POST, "/pipelines", &yaml).await.expect(201);

    let push = |id: &'static str| {
        let body = edited(
            "github/push",
            &[
                ("/ref", json!("refs/heads/main")),
                ("/after", json!(repo.m2)),
                ("/head_commit/id", json!(repo.m2)),
                ("/repository/clone_url", json!(repo.url)),
            ],
        );
        (id, body)
    };
    let (id, body) = push("6a1d0c3e-0000-4000-8000-000000000001");
    let answer = send(&s, "github", "vic-gh", "push", id, &body).await;
    assert_eq!(answer.status.as_u16(), 200, "{}", answer.text);
    assert_eq!(answer.json["verdict"], "ignored", "{}", answer.text);
    assert!(!answer.text.contains("mals"), "Mal's pipeline is not named: {}", answer.text);
    assert_eq!(run_count(&s).await, 0);

    // Through a binding of Mal's own, the same push starts it.
    let binding = json!({ "name": "mal-gh", "provider": "github", "webhook_secret": SECRET });
    mal.post("/bindings", binding).await.expect(201);
    let (id, body) = push("6a1d0c3e-0000-4000-8000-000000000002");
    let answer = send(&s, "github", "mal-gh", "push", id, &body).await;
    assert_eq!(answer.json["verdict"], "started", "{}", answer.text);
    assert_eq!(names(&started(&answer)), ["mals"]);
}

/// The same, for a pipeline that names the binding: a name saved before its binding
/// existed (or before it was deleted and made again by someone else) gives its creator
/// no claim on the pushes of another user's binding of that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naming_another_users_binding_does_not_start_a_pipeline_on_its_pushes() {
    let s = common::start().await;
    let repo = Repo::new();
    let mal = s.user("mal", "manager", &["web"]).await;
    // Mal names `vic-gh` before Vic has made it: the save does not know it yet.
    let yaml = format!("project: web\n{}", pipeline("mals", &repo.url, "push", "", "  binding: vic-gh\n"));
    mal.send_yaml(Method::POST, "/pipelines", &yaml).await.expect(201);
    let vic = s.user("vic", "user", &["web"]).await;
    let binding = json!({ "name": "vic-gh", "provider": "github", "webhook_secret": SECRET });
    vic.post("/bindings", binding).await.expect(201);

    let body = edited(
        "github/push",
        &[
            ("/ref", json!("refs/heads/main")),
            ("/after", json!(repo.m2)),
            ("/head_commit/id", json!(repo.m2)),
            ("/repository/clone_url", json!(repo.url)),
        ],
    );
    let answer = send(&s, "github", "vic-gh", "push", "6a1d0c3e-0000-4000-8000-000000000003", &body).await;
    assert_eq!(answer.json["verdict"], "ignored", "{}", answer.text);
    assert!(!answer.text.contains("mals"), "Mal's pipeline is not named: {}", answer.text);
    assert_eq!(run_count(&s).await, 0);
}
