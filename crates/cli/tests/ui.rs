//! The web UI in a real headless Chromium (over WebDriver) against a real `wharf serve`
//! on loopback with the host executor: what a person does in the browser, end to end.
//! Screenshots of each page land in `target/ui-screenshots/` (not committed).
//!
//! Without Chromium and chromedriver the test says why and passes, unless `CI=true`,
//! where it fails (scripts/test.sh installs them as root).

mod webdriver;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use webdriver::Chrome;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const TOKEN: &str = "ui-test-token";
const PASSWORD: &str = "ui-test-password";

struct Server {
    child: Child,
    url: String,
    root: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(root: &Path) -> Server {
        Server::start_with(root, &[]).await
    }

    /// With more environment for `wharf serve` (`WHARF_OUTBOUND_ALLOW` for a cluster on
    /// loopback).
    async fn start_with(root: &Path, env: &[(&str, &str)]) -> Server {
        wharf_testenv::server_root(root);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(root.join("server.log")).unwrap();
        let mut cmd = Command::new(WHARF);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("WHARF_") {
                cmd.env_remove(key);
            }
        }
        let data = root.join("data");
        cmd.args(["serve", "--listen", &listen, "--executor", "host", "--data-dir"])
            .arg(&data)
            .env("WHARF_ADMIN_TOKEN", TOKEN)
            .env("WHARF_ADMIN_PASSWORD", PASSWORD)
            .env("WHARF_STOP_GRACE", "2s")
            .envs(env.iter().copied())
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("start wharf serve");
        let server = Server { child, url: format!("http://{listen}"), root: root.to_owned() };
        let until = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/healthz", server.url)).await.is_err() {
            assert!(Instant::now() < until, "wharf serve was not ready within 30 s:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> Value {
        let mut request =
            reqwest::Client::new().request(method, format!("{}/api/v1{path}", self.url)).bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.header("content-type", "application/yaml").body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots")
}

/// Clicks the item `action` of the "More" menu labelled `menu_label`.
async fn menu_item(chrome: &Chrome, menu_label: &str, action: &str) {
    chrome.click(&format!("button[aria-label={}]", json!(menu_label))).await;
    let item = format!("button[aria-label={}] + .menu-list [data-action={action}]", json!(menu_label));
    chrome.click(&item).await;
}

async fn confirm(chrome: &Chrome) {
    chrome.click("dialog[open] button[type=submit]").await;
    chrome.wait("the dialog to close", "!document.querySelector('dialog[open]')").await;
}

/// Waits until the stage's task cards are in this order (a dialog's answer is applied
/// a moment after it closes).
async fn expect_order(chrome: &Chrome, stage: &str, order: &[&str]) {
    let expression = format!(
        "[...document.querySelectorAll(`[data-stage='{stage}'] li.task`)].map(t => t.dataset.task).join(',') === {}",
        json!(order.join(","))
    );
    chrome.wait(&format!("the tasks of {stage} in the order {order:?}"), &expression).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_builds_runs_and_manages_a_pipeline_in_the_browser() {
    let (browser, driver) = match webdriver::find_browser() {
        Ok(found) => found,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true and {why}"),
        Err(why) => {
            eprintln!("skipping the browser test: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let downloads = root.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let server = Server::start(&root).await;
    let chrome = Chrome::start(&browser, &driver, &downloads, 1280, 800).await;
    let shots = screenshots();
    let base = &server.url;

    // Logging in: a user name and password make a session (the cookie is HttpOnly;
    // every change the UI makes afterwards carries the CSRF token).
    chrome.goto(&format!("{base}/pipelines")).await;
    chrome.wait("the login page", "location.pathname === '/login'").await;
    chrome.screenshot(&shots.join("01-login.png")).await;
    chrome.type_into("input[name=password]", "wrong").await;
    chrome.click("form.login button[type=submit]").await;
    chrome
        .wait("a login error", "document.querySelector('.form-error:not([hidden])')?.textContent.includes('Wrong')")
        .await;
    chrome.type_into("input[name=password]", PASSWORD).await;
    chrome.click("form.login button[type=submit]").await;
    chrome
        .wait("the empty pipeline list", "document.querySelector('.empty')?.textContent.includes('No pipelines yet')")
        .await;
    chrome.screenshot(&shots.join("02-pipelines-empty.png")).await;

    // Create from scratch: the editor starts with Build, Test and Deploy.
    chrome.click("[data-action=create]").await;
    chrome.click("dialog[open] button[type=submit]").await;
    chrome
        .wait("the editor", "location.pathname === '/pipelines/new' && document.querySelector('[data-stage=Deploy]')")
        .await;
    chrome.type_into("#pipeline-name", "ui-demo").await;
    // The first click after typing the name opens what it clicks (the name's change
    // event once redrew the cards under the pointer and the click was lost).
    chrome.click("[data-action=add-source]").await;
    chrome
        .wait("the source dialog at the first click", "document.querySelector('dialog[open] input[name=repo]')")
        .await;
    chrome.click("dialog[open] [data-action=cancel]").await;
    chrome.wait("the dialog closed", "!document.querySelector('dialog[open]')").await;
    // Stages move with the keyboard alternative ("Move right") or by dragging the
    // header (synthetic drag events, as for tasks below); undo brings them back.
    let stage_order = |order: &str| {
        format!(
            "[...document.querySelectorAll('.card.stage[data-stage]')].map(c => c.dataset.stage).join(',') === '{order}'"
        )
    };
    menu_item(&chrome, "More for stage Build", "stage-right").await;
    chrome.wait("Test, Build, Deploy", &stage_order("Test,Build,Deploy")).await;
    chrome
        .js(
            "const dt = new DataTransfer();
             document.querySelector('[data-stage=Deploy] header').dispatchEvent(new DragEvent('dragstart', {dataTransfer: dt, bubbles: true}));
             const target = document.querySelector('[data-stage=Test]');
             target.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
             target.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));",
            json!([]),
        )
        .await;
    chrome.wait("Deploy, Test, Build", &stage_order("Deploy,Test,Build")).await;
    chrome.click("[data-action=undo]").await;
    chrome.click("[data-action=undo]").await;
    chrome.wait("Build, Test, Deploy", &stage_order("Build,Test,Deploy")).await;

    // The Source card: a local git repository (a binding would offer a picker).
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("hello.txt"), "hello from the repository\n").unwrap();
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "."],
        &["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first"],
    ] {
        let ok = Command::new("git").args(args).current_dir(&repo).status().unwrap().success();
        assert!(ok, "git {args:?}");
    }
    chrome.click("[data-action=add-source]").await;
    chrome.type_into("dialog[open] input[name=repo]", &format!("file://{}", repo.display())).await;
    chrome.type_into("dialog[open] input[name=branch]", "main").await;
    confirm(&chrome).await;
    chrome
        .wait("the source card", "document.querySelector('.source-info .repo')?.textContent.startsWith('file://')")
        .await;
    // One stage with two tasks: delete Test and Deploy, add a second task to Build.
    menu_item(&chrome, "More for stage Deploy", "delete-stage").await;
    menu_item(&chrome, "More for stage Test", "delete-stage").await;
    chrome.wait("one stage left", "document.querySelectorAll('.card.stage[data-stage]').length === 1").await;
    chrome.click("[data-stage=Build] [data-action=add-task]").await;
    chrome.type_into("dialog[open] input[name=task-name]", "second").await;
    chrome
        .type_into(
            "dialog[open] textarea[name=script]",
            "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do echo \"line $i\"; sleep 0.15; done\nprintf '\\033[32mgreen\\033[0m <b>not bold</b>\\n'\n",
        )
        .await;
    chrome.click("dialog[open] [data-action=add-env]").await;
    chrome.type_into("dialog[open] .env-key", "GREETING").await;
    chrome.type_into("dialog[open] .env-value", "hi").await;
    confirm(&chrome).await;
    expect_order(&chrome, "Build", &["build", "second"]).await;
    chrome.screenshot(&shots.join("03-editor-cards.png")).await;

    // Reorder with the keyboard alternative, then with drag and drop (synthetic drag
    // events: WebDriver cannot drive HTML5 drag and drop in Chromium).
    menu_item(&chrome, "More for task second", "task-up").await;
    expect_order(&chrome, "Build", &["second", "build"]).await;
    chrome
        .js(
            "const [a, b] = document.querySelectorAll('[data-stage=Build] li.task');
             const dt = new DataTransfer();
             a.dispatchEvent(new DragEvent('dragstart', {dataTransfer: dt, bubbles: true}));
             b.dispatchEvent(new DragEvent('dragover', {dataTransfer: dt, bubbles: true, cancelable: true}));
             b.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));",
            json!([]),
        )
        .await;
    expect_order(&chrome, "Build", &["build", "second"]).await;
    chrome.click("[data-action=undo]").await;
    expect_order(&chrome, "Build", &["second", "build"]).await;
    chrome.click("[data-action=redo]").await;
    expect_order(&chrome, "Build", &["build", "second"]).await;
    chrome.click("[data-action=reset]").await;
    chrome
        .wait("the starter's three stages again", "document.querySelectorAll('.card.stage[data-stage]').length === 3")
        .await;
    chrome.click("[data-action=undo]").await;
    chrome.wait("the edited pipeline again", "document.querySelectorAll('.card.stage[data-stage]').length === 1").await;
    expect_order(&chrome, "Build", &["build", "second"]).await;

    // The task dialog's fields follow the task type (then cancelled: nothing changes).
    chrome.click("[data-stage=Build] [data-action=add-task]").await;
    let select_type = |t: &str| {
        format!(
            "const k = document.querySelector('dialog[open] select[name=task-type]'); k.value = '{t}'; k.dispatchEvent(new Event('change'));"
        )
    };
    for (task_type, fields) in [
        ("image", &["dockerfile", "context", "image", "tag", "workspace", "registry"][..]),
        ("deploy-yaml", &["file", "cluster", "namespace"]),
        ("chart-publish", &["chart_dir", "chart", "version", "workspace"]),
        (
            "chart-deploy",
            &["release", "chart-how", "chart", "version", "workspace", "registry", "cluster", "namespace", "values"],
        ),
        ("approval", &["approvers", "message", "required"]),
        ("script", &["image", "tag", "script"]),
    ] {
        chrome.js(&select_type(task_type), json!([])).await;
        for f in fields {
            chrome.find(&format!("dialog[open] [name={f}]")).await;
        }
        if task_type == "image" {
            let hint = chrome.js("return document.querySelector('dialog[open]').textContent", json!([])).await;
            assert!(hint.as_str().unwrap().contains("${BUILD_ID}"), "the tag hint names ${{}} variables");
            chrome.screenshot(&shots.join("04-task-dialog-image.png")).await;
        }
    }
    chrome.click("dialog[open] [data-action=cancel]").await;
    chrome.wait("the dialog to close", "!document.querySelector('dialog[open]')").await;
    expect_order(&chrome, "Build", &["build", "second"]).await;
    // The stage dialog: parallel, then undone.
    chrome.click("[data-stage=Build] [data-action=edit-stage]").await;
    chrome.js("document.querySelector('dialog[open] select[name=mode]').value = 'parallel'", json!([])).await;
    confirm(&chrome).await;
    chrome
        .wait("a parallel stage", "document.querySelector('[data-stage=Build] .mode')?.textContent === 'parallel'")
        .await;
    chrome.click("[data-action=undo]").await;
    chrome
        .wait("sequential again", "document.querySelector('[data-stage=Build] .mode')?.textContent === 'sequential'")
        .await;

    // The YAML tab shows the same pipeline; an edit there changes the cards.
    chrome.click("#tab-yaml").await;
    let yaml = chrome.wait("the YAML", "document.querySelector('#yaml-text').value.includes('name: ui-demo')").await;
    let _ = yaml;
    let text = chrome.js("return document.querySelector('#yaml-text').value", json!([])).await;
    let text = text.as_str().unwrap().to_owned();
    assert!(text.contains("- name: second") && text.contains("GREETING: hi"), "{text}");
    let with_third = text.replace(
        "      - name: build\n",
        "      - name: third\n        type: script\n        script: echo third\n      - name: build\n",
    );
    assert_ne!(with_third, text, "the build task is in the YAML:\n{text}");
    set_yaml(&chrome, &with_third).await;
    chrome.wait("the new task's card", "document.querySelector('[data-stage=Build] li.task[data-task=third]')").await;
    // Invalid YAML: the error is shown at its line, and the cards keep the last valid model.
    let broken =
        with_third.replace("type: script\n        script: echo third", "type: scrpt\n        script: echo third");
    set_yaml(&chrome, &broken).await;
    let line = broken.lines().position(|l| l.contains("type: scrpt")).unwrap() + 1;
    chrome
        .wait(
            "the problem at its line",
            &format!(
                "document.querySelector('#yaml-problems li[data-line=\"{line}\"]')?.textContent.includes('did you mean `script`') && document.querySelector('.gutter [data-line=\"{line}\"]').classList.contains('bad') && document.querySelector('#panel-cards').inert"
            ),
        )
        .await;
    chrome.screenshot(&shots.join("05-editor-yaml-error.png")).await;
    set_yaml(&chrome, &with_third).await;
    chrome.wait("no problems", "document.querySelectorAll('#yaml-problems li').length === 0").await;
    chrome.click("#tab-cards").await;
    expect_order(&chrome, "Build", &["third", "build", "second"]).await;

    // Save and run; the run page follows the run to its end.
    chrome.click("[data-action=save]").await;
    chrome.click("dialog[open] input[value=run]").await;
    confirm(&chrome).await;
    no_js_errors(&chrome, "the editor").await;
    chrome.wait("the run page", "location.pathname.startsWith('/runs/')").await;
    chrome.click("tr[data-task=second] button").await;
    chrome.wait("the log streaming", "document.querySelector('.log')?.dataset.state === 'live'").await;
    // Lines arrive while the task runs (one every 150 ms), not all at the end.
    chrome.wait("the first lines", "Number(document.querySelector('.log').dataset.received || 0) >= 2").await;
    let early = chrome.js("return Number(document.querySelector('.log').dataset.received)", json!([])).await;
    let early = early.as_f64().unwrap();
    let ended_early = chrome.js("return document.querySelector('.log').dataset.state", json!([])).await;
    assert!(early < 21.0 && ended_early != "ended", "lines should arrive live; saw {early} at once");
    chrome.screenshot(&shots.join("05-run-live.png")).await;
    chrome
        .wait("the run to succeed", "document.querySelector('.run-head .badge')?.dataset.status === 'succeeded'")
        .await;
    chrome
        .wait(
            "the checkout row",
            "document.querySelector('tr[data-task=\"@checkout\"] .badge')?.dataset.status === 'succeeded'",
        )
        .await;
    chrome.wait("the end of the log", "document.querySelector('.log').dataset.state === 'ended'").await;
    // ANSI colours as spans, and markup in a log line stays text.
    let shown = chrome
        .js(
            "const l = document.querySelector('.log-lines');
             return {green: l.querySelector('span.a32')?.textContent, bold: l.querySelectorAll('b').length,
                     text: l.textContent.includes('<b>not bold</b>'), lines: l.querySelectorAll('.line').length}",
            json!([]),
        )
        .await;
    assert_eq!(shown["green"], "green", "{shown}");
    assert_eq!(shown["bold"], 0, "{shown}");
    assert_eq!(shown["text"], true, "{shown}");
    assert!(shown["lines"].as_u64().unwrap() >= 21, "{shown}");
    // Search filters the lines and marks the matches (as text: the markup stays text).
    chrome.type_into("#log-search", "NOT bold").await;
    let marked = chrome
        .wait(
            "the match marked",
            "document.querySelectorAll('.log-lines .line').length === 1 && document.querySelector('.log-lines mark')?.textContent",
        )
        .await;
    assert_eq!(marked, "not bold");
    let bold = chrome.js("return document.querySelectorAll('.log-lines b').length", json!([])).await;
    assert_eq!(bold, 0, "the log's markup stays text when marked");
    chrome
        .js(
            "const s = document.querySelector('#log-search'); s.value = ''; s.dispatchEvent(new Event('input'))",
            json!([]),
        )
        .await;
    chrome.wait("the whole log again", "document.querySelectorAll('.log-lines .line').length >= 21").await;
    chrome.screenshot(&shots.join("06-run-succeeded.png")).await;

    // Download the full log.
    chrome.click("[data-action=download]").await;
    let file = downloads.join("ui-demo-1.log");
    let until = Instant::now() + Duration::from_secs(20);
    while !file.exists() {
        assert!(Instant::now() < until, "the log was not downloaded to {}", file.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = std::fs::read_to_string(&file).unwrap();
    assert!(log.contains("line 20") && log.contains("third"), "{log}");

    // Re-run from the run page, then from the details page's records.
    chrome.click("[data-action=rerun]").await;
    confirm(&chrome).await;
    no_js_errors(&chrome, "the first run page").await;
    chrome.wait("run #2", "document.querySelector('.run-head h1')?.textContent === 'Run #2'").await;
    let pipeline = server.api(reqwest::Method::GET, "/pipelines/ui-demo", None).await;
    let id = pipeline["id"].as_i64().unwrap();
    chrome.goto(&format!("{base}/pipelines/{id}")).await;
    chrome.wait("two records", "document.querySelectorAll('table.runs tr[data-run]').length === 2").await;
    chrome.screenshot(&shots.join("07-details.png")).await;
    chrome.click("tr[data-run='1'] [data-action=rerun]").await;
    confirm(&chrome).await;
    chrome.wait("run #3", "document.querySelector('.run-head h1')?.textContent === 'Run #3'").await;
    let run3 = chrome.url().await;
    chrome
        .wait("run #3 to succeed", "document.querySelector('.run-head .badge')?.dataset.status === 'succeeded'")
        .await;
    assert!(run3.contains("/runs/"), "{run3}");

    // A failed run offers "Retry failed stage": a new run that skips what succeeded.
    let flaky = "name: flaky\nstages:\n  - name: One\n    tasks: [{name: one, type: script, script: echo one}]\n  - name: Two\n    tasks: [{name: two, type: script, script: 'test -f marker || { touch marker; exit 3; }'}]\n";
    server.api(reqwest::Method::POST, "/pipelines", Some(flaky)).await;
    let failed = server.api(reqwest::Method::POST, "/pipelines/flaky/runs", Some("{}")).await;
    chrome.goto(&format!("{base}/runs/{}", failed["id"])).await;
    chrome.wait("the run to fail", "document.querySelector('.run-head .badge')?.dataset.status === 'failed'").await;
    // Opened after the fact, a failed run lands on the task that failed, not the first.
    chrome.goto(&format!("{base}/runs/{}", failed["id"])).await;
    chrome
        .wait(
            "the failed task's log",
            "document.querySelector('tr.selected')?.dataset.task === 'two' && document.querySelector('.log-title')?.textContent === 'Log: two'",
        )
        .await;
    chrome.click("[data-action=retry]").await;
    confirm(&chrome).await;
    chrome.wait("the retry", "document.querySelector('.run-head h1')?.textContent === 'Run #2'").await;
    chrome
        .wait(
            "stage One skipped and the run succeeded",
            "document.querySelector('tr[data-task=one] .badge')?.dataset.status === 'skipped' && document.querySelector('.run-head .badge')?.dataset.status === 'succeeded'",
        )
        .await;
    no_js_errors(&chrome, "the retry").await;

    // A task printing 5,000 lines a second: every line is received and rendered, the
    // page holds a bounded window, and long tasks (main-thread blocks > 50 ms) are counted.
    let flood = "name: flood\nstages:\n  - name: Flood\n    tasks:\n      - name: flood\n        type: script\n        script: |\n          awk 'BEGIN { for (s = 0; s < 4; s++) { for (i = 0; i < 5000; i++) printf \"%d \\033[32mok\\033[0m line %d of the flood\\n\", s, i; fflush(); system(\"sleep 1\") } }'\n";
    server.api(reqwest::Method::POST, "/pipelines", Some(flood)).await;
    let run = server.api(reqwest::Method::POST, "/pipelines/flood/runs", Some("{}")).await;
    no_js_errors(&chrome, "the details page").await;
    chrome.goto(&format!("{base}/runs/{}?task=flood", run["id"])).await;
    chrome
        .js(
            "window.__long = []; new PerformanceObserver(l => window.__long.push(...l.getEntries().map(e => e.duration))).observe({type: 'longtask', buffered: true});",
            json!([]),
        )
        .await;
    chrome.wait("the flood to end", "document.querySelector('.log')?.dataset.state === 'ended'").await;
    // 20,000 lines of the task and the engine's line saying where it runs.
    chrome.wait("every line rendered", "document.querySelector('.log').dataset.rendered === '20001'").await;
    let m = chrome
        .js(
            "const l = document.querySelector('.log');
             return {received: Number(l.dataset.received), rendered: Number(l.dataset.rendered),
                     in_dom: l.querySelectorAll('.line').length, long_tasks: window.__long.length,
                     longest_ms: Math.max(0, ...window.__long), total_long_ms: window.__long.reduce((a, b) => a + b, 0)}",
            json!([]),
        )
        .await;
    eprintln!("5,000 lines/s for 4 s in the run page: {m}");
    assert_eq!(m["received"], 20001, "{m}");
    assert!(m["in_dom"].as_u64().unwrap() <= 1000, "the page keeps a bounded window: {m}");
    chrome.screenshot(&shots.join("08-run-flood.png")).await;

    // The list: copy, deactivate, delete — all through the "More" menu.
    chrome.goto(&format!("{base}/pipelines")).await;
    chrome.wait("the list", "document.querySelector('tr[data-pipeline=ui-demo]')").await;
    chrome.screenshot(&shots.join("09-pipelines.png")).await;
    // Advanced settings and triggers change the definition (a new version).
    menu_item(&chrome, "More actions for ui-demo", "advanced").await;
    chrome.type_into("dialog[open] input[name=timeout]", "30").await;
    confirm(&chrome).await;
    menu_item(&chrome, "More actions for ui-demo", "triggers").await;
    chrome.click("dialog[open] input[name=event-push]").await;
    chrome.type_into("dialog[open] input[name=branches]", "main, release/*").await;
    chrome
        .js(
            "const k = document.querySelector('dialog[open] select[name=timer-kind]'); k.value = 'every_minutes'; k.dispatchEvent(new Event('change'));",
            json!([]),
        )
        .await;
    chrome.type_into("dialog[open] input[name=n]", "5").await;
    chrome.screenshot(&shots.join("10-edit-triggers.png")).await;
    confirm(&chrome).await;
    let until = Instant::now() + Duration::from_secs(20);
    let definition = loop {
        let shown = server.api(reqwest::Method::GET, "/pipelines/ui-demo", None).await;
        if shown["version"] == 3 {
            break shown["definition"].clone();
        }
        assert!(Instant::now() < until, "the two dialogs did not save two versions: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(definition["timeout"], 30 * 60_000, "{definition}");
    assert_eq!(
        definition["triggers"],
        json!([{"events": {"events": ["push"], "branches": ["main", "release/*"]}}, {"every_minutes": {"every_minutes": 5}}]),
        "{definition}"
    );
    let yaml = reqwest::Client::new()
        .get(format!("{base}/api/v1/pipelines/ui-demo/yaml"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(yaml.contains("every_minutes: 5") && yaml.contains("timeout: 30"), "{yaml}");

    // "Create pipeline" → "copy an existing pipeline" opens the editor on a copy.
    chrome.goto(&format!("{base}/pipelines")).await;
    chrome.click("[data-action=create]").await;
    chrome.click("dialog[open] input[value=copy]").await;
    chrome
        .js(
            "const s = document.querySelector('dialog[open] select[name=source]'); s.value = [...s.options].find(o => o.textContent === 'ui-demo').value;",
            json!([]),
        )
        .await;
    chrome.click("dialog[open] button[type=submit]").await;
    chrome.wait("the copy in the editor", "document.querySelector('#pipeline-name')?.value === 'ui-demo-copy'").await;
    chrome.type_into("#pipeline-name", "ui-demo-clone").await;
    chrome.click("[data-action=save]").await;
    confirm(&chrome).await;
    chrome.wait("the clone's details", "document.querySelector('h1')?.textContent === 'ui-demo-clone'").await;
    let clone = server.api(reqwest::Method::GET, "/pipelines/ui-demo-clone", None).await;
    let mut expected = definition.clone();
    expected["name"] = json!("ui-demo-clone");
    // The seed's copy: stages, tasks and timeout; not the triggers (it must not start
    // running by itself on the original's timer).
    expected.as_object_mut().unwrap().remove("triggers");
    assert_eq!(clone["definition"], expected, "the clone has the original's stages, tasks and settings");

    chrome.goto(&format!("{base}/pipelines")).await;
    chrome.wait("the list", "document.querySelector('tr[data-pipeline=ui-demo-clone]')").await;
    menu_item(&chrome, "More actions for ui-demo", "copy").await;
    chrome.type_into("dialog[open] input[name=name]", "ui-demo-copy").await;
    confirm(&chrome).await;
    chrome.wait("the copy in the list", "document.querySelector('tr[data-pipeline=ui-demo-copy]')").await;
    // A copy starts inactive: its triggers fire nothing until it is activated.
    chrome
        .wait(
            "the copy inactive",
            "document.querySelector('tr[data-pipeline=ui-demo-copy] .pill')?.textContent === 'Inactive'",
        )
        .await;
    menu_item(&chrome, "More actions for ui-demo-copy", "activate").await;
    confirm(&chrome).await;
    chrome
        .wait(
            "the copy active",
            "document.querySelector('tr[data-pipeline=ui-demo-copy] .pill')?.textContent !== 'Inactive'",
        )
        .await;
    assert_eq!(
        server.api(reqwest::Method::GET, "/pipelines/ui-demo-copy", None).await["active"],
        true,
        "activated on the server"
    );
    menu_item(&chrome, "More actions for ui-demo-copy", "delete").await;
    confirm(&chrome).await;
    chrome.wait("the copy gone", "!document.querySelector('tr[data-pipeline=ui-demo-copy]')").await;

    no_js_errors(&chrome, "the list").await;
    // A narrow window.
    chrome.set_size(420, 800).await;
    chrome.screenshot(&shots.join("11-pipelines-narrow.png")).await;
    chrome.goto(&format!("{base}{}", run3.trim_start_matches(base.as_str()))).await;
    chrome.wait("the run page", "document.querySelector('.run-head h1')").await;
    chrome.screenshot(&shots.join("12-run-narrow.png")).await;

    no_js_errors(&chrome, "the end").await;
    chrome.quit().await;
}

/// The visible text of the page.
async fn page_text(chrome: &Chrome) -> String {
    chrome.js("return document.body.innerText", json!([])).await.as_str().unwrap().to_owned()
}

/// No uncaught error or rejected promise in the page so far.
async fn no_js_errors(chrome: &Chrome, at: &str) {
    let v = chrome
        .js(
            "const d = document.documentElement.dataset; return d.jsErrors ? d.jsErrors + ': ' + d.lastJsError : null",
            json!([]),
        )
        .await;
    assert!(v.is_null(), "{at}: the page had JavaScript errors: {v}");
}

/// Replaces the YAML tab's text as a person typing would (an input event).
async fn set_yaml(chrome: &Chrome, text: &str) {
    chrome
        .js(
            "const t = document.querySelector('#yaml-text'); t.value = arguments[0]; t.dispatchEvent(new Event('input'));",
            json!([text]),
        )
        .await;
}

/// Logs in as `name` through the login page and waits for the pipeline list.
async fn log_in(chrome: &Chrome, base: &str, name: &str, password: &str) {
    chrome.goto(&format!("{base}/login")).await;
    chrome.type_into("input[name=username]", name).await;
    chrome.type_into("input[name=password]", password).await;
    chrome.click("form.login button[type=submit]").await;
    chrome
        .wait("the pipeline list", "location.pathname === '/pipelines' && document.querySelector('.list-body > *')")
        .await;
}

/// Starts the browser, or None (printed) where Chromium is missing outside CI.
async fn browser(root: &Path, width: u32, height: u32) -> Option<Chrome> {
    let (browser, driver) = match webdriver::find_browser() {
        Ok(found) => found,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true and {why}"),
        Err(why) => {
            eprintln!("skipping the browser test: {why}");
            return None;
        }
    };
    let downloads = root.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    Some(Chrome::start(&browser, &driver, &downloads, width, height).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_registers_a_registry_uploads_an_image_and_deletes_its_tag_in_the_browser() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let Some(chrome) = browser(&root, 1280, 800).await else { return };
    let server = Server::start(&root).await;
    let base = &server.url;
    let shots = screenshots();
    log_in(&chrome, base, "admin", PASSWORD).await;

    // The link in the shell leads to an empty list that says what to do.
    chrome.click("#nav a[href='/registries']").await;
    chrome
        .wait("no registries yet", "document.querySelector('.empty')?.textContent.includes('No registries yet')")
        .await;
    chrome.screenshot(&shots.join("20-registries-empty.png")).await;

    // A registry that is down: the dialog stays open with the server's words (502).
    let workspace = format!("ui{}", std::process::id());
    let fill = |url: String, password: String| {
        let chrome = &chrome;
        let env = &env;
        let workspace = &workspace;
        async move {
            chrome.type_into("dialog[open] input[name=name]", "local").await;
            chrome.type_into("dialog[open] input[name=url]", &url).await;
            chrome.type_into("dialog[open] input[name=username]", &env.registry_user).await;
            chrome.type_into("dialog[open] input[name=password]", &password).await;
            chrome.type_into("dialog[open] input[name=workspaces]", workspace).await;
        }
    };
    chrome.click("[data-action=add-registry]").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    fill(dead_url.clone(), env.registry_password.clone()).await;
    chrome.click("dialog[open] input[name=insecure]").await;
    chrome.click("dialog[open] button[type=submit]").await;
    let shown = chrome
        .wait(
            "the registry's failure in the dialog",
            "document.querySelector('dialog[open] .form-error:not([hidden])')?.textContent",
        )
        .await;
    let host = dead_url.trim_start_matches("http://");
    assert!(shown.as_str().unwrap().contains(host), "the message names the registry that is down: {shown}");
    chrome.screenshot(&shots.join("21-registry-down.png")).await;
    fill(env.registry_url.clone(), env.registry_password.clone()).await;
    confirm(&chrome).await;
    chrome
        .wait(
            "the registry in the list",
            &format!("document.querySelector('tr[data-registry=local] .workspaces')?.textContent === '{workspace}'"),
        )
        .await;
    chrome.screenshot(&shots.join("22-registries.png")).await;

    // A second workspace through its dialog.
    chrome.click("[data-action=add-workspace]").await;
    chrome.type_into("dialog[open] input[name=workspace]", "second").await;
    confirm(&chrome).await;
    chrome
        .wait(
            "two workspaces",
            &format!(
                "document.querySelector('tr[data-registry=local] .workspaces')?.textContent === 'second, {workspace}'"
            ),
        )
        .await;

    // A `docker save` tarball of busybox under two tags of one image.
    let image = format!("uibox{}", std::process::id());
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let tarball = root.join("image.tar");
    let (one, two) = (format!("wharf-ui/{image}:one"), format!("wharf-ui/{image}:two"));
    docker(&["tag", &env.busybox_image, &one]);
    docker(&["tag", &env.busybox_image, &two]);
    docker(&["save", &one, &two, "-o", tarball.to_str().unwrap()]);
    docker(&["rmi", &one, &two]);

    chrome.click("tr[data-registry=local] a.name").await;
    chrome.wait("the registry page", "document.querySelector('form.upload select[name=workspace]')").await;
    chrome.choose_file("form.upload input[type=file]", &tarball).await;
    chrome
        .js(
            "const s = document.querySelector('form.upload select[name=workspace]'); s.value = arguments[0];",
            json!([workspace]),
        )
        .await;
    chrome.click("[data-action=upload]").await;
    let pushed =
        chrome.wait("the upload to finish", "document.querySelector('.upload-status[data-done]')?.textContent").await;
    let reference = format!("{}/{workspace}/{image}:one", env.registry);
    assert!(pushed.as_str().unwrap().contains(&reference), "{pushed}");
    let bar = chrome.js("return document.querySelector('form.upload progress').value", json!([])).await;
    assert_eq!(bar, 100, "the progress bar ends full");
    no_js_errors(&chrome, "the upload").await;

    // Its tags, with a size a person reads and the creation time; deleting one names
    // the other tag of the same digest, and both go.
    let repository = format!("{workspace}/{image}");
    chrome.find(&format!("li[data-repository='{repository}']")).await;
    chrome.type_into("input[name=filter]", &image).await;
    chrome.click(&format!("li[data-repository='{repository}'] button")).await;
    let size =
        chrome.wait("the tag one", "document.querySelector('tr[data-tag=one] td:nth-child(2)')?.textContent").await;
    let size = size.as_str().unwrap();
    assert!(
        size.ends_with(" KiB") || size.ends_with(" MiB"),
        "a size in powers of 1,024, as the CLI writes it: {size}"
    );
    chrome.find("tr[data-tag=two]").await;
    chrome.screenshot(&shots.join("23-registry-tags.png")).await;
    chrome.click("[data-action=delete-tag][aria-label='Delete tag one']").await;
    let text = chrome.wait("the confirmation", "document.querySelector('dialog[open] p')?.textContent").await;
    assert!(text.as_str().unwrap().contains("together with the tags two"), "{text}");
    confirm(&chrome).await;
    let toast = chrome
        .wait(
            "both tags gone",
            "!document.querySelector('tr[data-tag]') && [...document.querySelectorAll('.toast')].map(t => t.textContent).find(t => t.startsWith('Deleted'))",
        )
        .await;
    assert!(toast.as_str().unwrap().contains("and two"), "the answer's also_removed is shown: {toast}");
    let left = reqwest::Client::new()
        .get(format!("{base}/api/v1/registries/local/repositories/{workspace}/{image}/tags"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = left.status();
    let text = left.text().await.unwrap();
    assert!(status == 404 || !text.contains("\"one\""), "the tag is gone from the registry: {status} {text}");

    // A chart packaged and pushed with the CLI shows under Charts, its versions with `+`.
    let chart_dir = root.join("uichart");
    std::fs::create_dir_all(chart_dir.join("templates")).unwrap();
    std::fs::write(chart_dir.join("Chart.yaml"), "apiVersion: v2\nname: uichart\nversion: 0.1.0\n").unwrap();
    std::fs::write(
        chart_dir.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n",
    )
    .unwrap();
    let wharf = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(WHARF)
            .args(args)
            .current_dir(&root)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "wharf {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    wharf(&["chart", "package", "uichart", "--version", "0.1.0+b.1"], "");
    let target = format!("{}/{workspace}", env.registry);
    wharf(
        &[
            "chart",
            "push",
            "uichart-0.1.0+b.1.tgz",
            &target,
            "-u",
            &env.registry_user,
            "--password-stdin",
            "--insecure",
        ],
        &env.registry_password,
    );
    chrome.goto(&format!("{base}/registries/local")).await;
    let chart_repo = format!("{workspace}/uichart");
    chrome.find(&format!(".charts li[data-artifact=chart][data-repository='{chart_repo}']")).await;
    chrome.click(&format!(".charts li[data-repository='{chart_repo}'] button")).await;
    let version = chrome
        .wait("the chart's version", "document.querySelector('tr[data-tag=\"0.1.0_b.1\"] td.name')?.textContent")
        .await;
    assert_eq!(version, "0.1.0+b.1");
    let header = chrome.js("return document.querySelector('table.tags th').textContent", json!([])).await;
    assert_eq!(header, "Version");
    let heading = chrome.js("return document.querySelector('section.tags h2').textContent", json!([])).await;
    assert_eq!(heading, format!("Versions of chart {chart_repo}").as_str());
    chrome.screenshot(&shots.join("23b-registry-charts.png")).await;
    no_js_errors(&chrome, "the charts").await;

    chrome.set_size(420, 800).await;
    chrome.goto(&format!("{base}/registries")).await;
    chrome
        .wait("the list, narrow", "document.querySelector('tr[data-registry=local] .workspaces')?.offsetParent")
        .await;
    chrome.screenshot(&shots.join("24-registries-narrow.png")).await;
    no_js_errors(&chrome, "the end").await;
    chrome.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_adds_a_repository_binding_and_logs_it_out_in_the_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let Some(chrome) = browser(&root, 1280, 800).await else { return };
    let server = Server::start(&root).await;
    let base = &server.url;
    let shots = screenshots();
    log_in(&chrome, base, "admin", PASSWORD).await;

    chrome.click("#nav a[href='/repositories']").await;
    chrome
        .wait("no bindings yet", "document.querySelector('.empty')?.textContent.includes('No repository bindings yet')")
        .await;
    // A plain git binding: the provider-only fields hide when `git` is chosen.
    chrome.click("[data-action=add-binding]").await;
    chrome.type_into("dialog[open] input[name=name]", "ui-git").await;
    // The OAuth part shows the callback to register at the provider, per provider.
    let browser_ = &chrome;
    let callback = |provider: &'static str| async move {
        browser_
            .js(
                "const p = document.querySelector('dialog[open] select[name=provider]'); p.value = arguments[0]; p.dispatchEvent(new Event('change'));
                 return document.querySelector('dialog[open] input[name=callback]').value",
                json!([provider]),
            )
            .await
    };
    assert_eq!(callback("gitlab").await, format!("{base}/devops/repository/gitlab/redirect"));
    assert_eq!(callback("github").await, format!("{base}/devops/repository/github/redirect"));
    chrome
        .js(
            "const p = document.querySelector('dialog[open] select[name=provider]'); p.value = 'git'; p.dispatchEvent(new Event('change'));",
            json!([]),
        )
        .await;
    let hidden = chrome
        .js("return document.querySelector('dialog[open] input[name=client_id]').offsetParent === null", json!([]))
        .await;
    assert_eq!(hidden, true, "no OAuth fields for a plain git binding");
    chrome.type_into("dialog[open] input[name=token]", "s3cret-token").await;
    chrome.screenshot(&shots.join("30-binding-dialog.png")).await;
    confirm(&chrome).await;
    chrome
        .wait(
            "the binding with its token set",
            "document.querySelector('tr[data-binding=ui-git] .secrets')?.textContent === 'token'",
        )
        .await;
    let shown = server.api(reqwest::Method::GET, "/bindings/ui-git", None).await;
    assert_eq!((shown["provider"].as_str(), shown["has_token"].as_bool()), (Some("git"), Some(true)), "{shown}");
    chrome.screenshot(&shots.join("31-repositories.png")).await;

    // A pipeline naming it keeps it: "log out" shows the 409 naming that pipeline.
    let pipeline = "name: uses-binding\nsource:\n  repo: https://example.invalid/app.git\n  binding: ui-git\nstages:\n  - name: Build\n    tasks:\n      - name: hi\n        type: script\n        script: echo hi\n";
    server.api(reqwest::Method::POST, "/pipelines", Some(pipeline)).await;
    chrome.click("[data-action=delete-binding][aria-label='Log out ui-git']").await;
    confirm(&chrome).await;
    chrome
        .wait(
            "the refusal naming the pipeline",
            "[...document.querySelectorAll('.toast.error')].some(t => t.textContent.includes('uses-binding'))",
        )
        .await;
    chrome.find("tr[data-binding=ui-git]").await;
    server.api(reqwest::Method::DELETE, "/pipelines/uses-binding", None).await;
    chrome.click("[data-action=delete-binding][aria-label='Log out ui-git']").await;
    confirm(&chrome).await;
    chrome
        .wait(
            "the binding gone",
            "document.querySelector('.empty')?.textContent.includes('No repository bindings yet')",
        )
        .await;
    no_js_errors(&chrome, "the end").await;
    chrome.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_adds_a_project_and_a_user_who_sees_only_their_share() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let Some(chrome) = browser(&root, 1280, 800).await else { return };
    let server = Server::start(&root).await;
    let base = &server.url;
    let shots = screenshots();
    // The admin's pipeline, which a normal user must not see.
    let pipeline = "name: admins-only\nstages:\n  - name: Build\n    tasks:\n      - name: hi\n        type: script\n        script: echo hi\n";
    server.api(reqwest::Method::POST, "/pipelines", Some(pipeline)).await;
    // The login page shows none of the app's links (they all need a login).
    chrome.goto(&format!("{base}/login")).await;
    chrome.find("form.login").await;
    let nav = chrome.js("return document.querySelector('#nav a')?.offsetParent !== null", json!([])).await;
    assert_eq!(nav, false, "no navigation links on the login page");
    log_in(&chrome, base, "admin", PASSWORD).await;
    chrome.wait("the admin's pipeline", "document.querySelector('tr[data-pipeline=admins-only]')").await;
    let create = chrome.js("return document.querySelector('[data-action=create]').disabled", json!([])).await;
    assert_eq!(create, false, "an admin may create pipelines");

    chrome.click("#nav a[href='/users']").await;
    chrome.wait("the users", "document.querySelector('tr[data-user=admin] .role')?.textContent === 'admin'").await;
    chrome.click("[data-action=add-department]").await;
    chrome.type_into("dialog[open] input[name=name]", "Platform").await;
    confirm(&chrome).await;
    chrome.wait("the department", "document.querySelector('li[data-department=Platform]')").await;
    chrome.click("[data-action=add-project]").await;
    chrome.type_into("dialog[open] input[name=name]", "ui-team").await;
    chrome.js("document.querySelector('dialog[open] select[name=department]').value = 'Platform'", json!([])).await;
    confirm(&chrome).await;
    chrome
        .wait(
            "the project in its department",
            "document.querySelector('li[data-department=Platform] li[data-project=ui-team]')",
        )
        .await;
    chrome.click("[data-action=add-user]").await;
    chrome.type_into("dialog[open] input[name=name]", "alice").await;
    chrome.type_into("dialog[open] input[name=password]", "alice-password").await;
    chrome.click("dialog[open] input[name=project][value=ui-team]").await;
    confirm(&chrome).await;
    chrome
        .wait(
            "alice, a user in ui-team",
            "document.querySelector('tr[data-user=alice] .role')?.textContent === 'user' && document.querySelector('tr[data-user=alice] .projects').textContent === 'ui-team'",
        )
        .await;
    // Editing a user's role and projects; the server's refusal shows in the dialog.
    chrome.click("[data-action=edit-user][aria-label='Edit alice']").await;
    chrome.js("document.querySelector('dialog[open] select[name=role]').value = 'manager'", json!([])).await;
    chrome.click("dialog[open] input[name=project][value=ui-team]").await;
    confirm(&chrome).await;
    chrome
        .wait(
            "alice, a manager in no project",
            "document.querySelector('tr[data-user=alice] .role')?.dataset.role === 'manager' && !document.querySelector('tr[data-user=alice] .projects').textContent.includes('ui-team')",
        )
        .await;
    chrome.click("[data-action=edit-user][aria-label='Edit alice']").await;
    chrome.js("document.querySelector('dialog[open] select[name=role]').value = 'user'", json!([])).await;
    chrome.click("dialog[open] input[name=project][value=ui-team]").await;
    confirm(&chrome).await;
    chrome
        .wait(
            "alice, a user in ui-team again",
            "document.querySelector('tr[data-user=alice] .role')?.dataset.role === 'user' && document.querySelector('tr[data-user=alice] .projects').textContent === 'ui-team'",
        )
        .await;
    chrome.click("[data-action=edit-user][aria-label='Edit admin']").await;
    chrome.js("document.querySelector('dialog[open] select[name=role]').value = 'user'", json!([])).await;
    chrome.click("dialog[open] button[type=submit]").await;
    let refusal = chrome
        .wait(
            "the refusal in the dialog",
            "document.querySelector('dialog[open] .form-error:not([hidden])')?.textContent",
        )
        .await;
    assert!(refusal.as_str().unwrap().contains("admin"), "{refusal}");
    chrome.click("dialog[open] [data-action=cancel]").await;
    // Disable and enable: alice cannot log in while disabled.
    chrome.click("[data-action=disable-user][aria-label='Disable alice']").await;
    confirm(&chrome).await;
    chrome.wait("alice disabled", "document.querySelector('tr[data-user=alice] [data-action=enable-user]')").await;
    let login = |name: &'static str, password: &'static str| async move {
        reqwest::Client::new()
            .post(format!("{base}/api/v1/login"))
            .json(&json!({"name": name, "password": password}))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(login("alice", "alice-password").await, 403, "a disabled user cannot log in");
    chrome.click("[data-action=enable-user][aria-label='Enable alice']").await;
    confirm(&chrome).await;
    chrome.wait("alice enabled", "document.querySelector('tr[data-user=alice] [data-action=disable-user]')").await;

    // My API tokens: shown once with a copy button; it works; revoked, it stops.
    chrome.click("[data-action=add-token]").await;
    chrome.type_into("dialog[open] input[name=name]", "ui-script").await;
    chrome.click("dialog[open] button[type=submit]").await;
    let token =
        chrome.wait("the token, once", "document.querySelector('dialog[open] input[name=new-token]')?.value").await;
    let token = token.as_str().unwrap().to_owned();
    chrome.click("dialog[open] [data-action=copy-token]").await;
    chrome.screenshot(&shots.join("40-token-once.png")).await;
    confirm(&chrome).await;
    let me = |token: String| async move {
        reqwest::Client::new().get(format!("{base}/api/v1/me")).bearer_auth(token).send().await.unwrap().status()
    };
    assert_eq!(me(token.clone()).await, 200, "the new token works");
    chrome
        .wait("the token listed", "document.querySelector('tr[data-token=ui-script] .state')?.textContent === 'active'")
        .await;
    chrome.screenshot(&shots.join("41-users.png")).await;
    chrome.click("[data-action=revoke][aria-label='Revoke ui-script']").await;
    confirm(&chrome).await;
    chrome
        .wait(
            "the token revoked",
            "document.querySelector('tr[data-token=ui-script] .state')?.textContent.startsWith('revoked')",
        )
        .await;
    assert_eq!(me(token).await, 401, "a revoked token stops at once");

    // Alice: the page refuses her, her pipeline list does not show the admin's.
    chrome.click("#logout").await;
    chrome.wait("the login page", "location.pathname === '/login'").await;
    let nav = chrome.js("return document.querySelector('#nav a')?.offsetParent !== null", json!([])).await;
    assert_eq!(nav, false, "no navigation links once logged out");
    log_in(&chrome, base, "alice", "alice-password").await;
    chrome
        .wait("an empty list for alice", "document.querySelector('.empty')?.textContent.includes('No pipelines yet')")
        .await;
    // A normal user may not create pipelines: the page says so instead of offering it.
    let text = page_text(&chrome).await;
    assert!(text.contains("Normal users may not create pipelines"), "{text}");
    assert!(!text.contains("Create one from scratch"), "{text}");
    let create = chrome.js("return document.querySelector('[data-action=create]').disabled", json!([])).await;
    assert_eq!(create, true, "no Create for a normal user");
    chrome.click("#nav a[href='/users']").await;
    let refused = chrome.wait("the refusal", "document.querySelector('.refused')?.textContent").await;
    assert!(
        refused.as_str().unwrap().contains("Only administrators") && refused.as_str().unwrap().contains("ui-team"),
        "{refused}"
    );
    chrome.find("[data-action=add-token]").await;
    let admin_parts =
        chrome.js("return !!document.querySelector('[data-action=add-user], tr[data-user]')", json!([])).await;
    assert_eq!(admin_parts, false, "no user list for a normal user");
    chrome.set_size(420, 800).await;
    chrome.screenshot(&shots.join("42-users-refused-narrow.png")).await;
    no_js_errors(&chrome, "the end").await;
    chrome.quit().await;
}

/// Jenkins' "Build with Parameters": the Run dialog asks for a pipeline's parameters
/// (defaults filled in, choices as a list, required ones marked), and the editor edits
/// variables and parameters and asks for them on "Save and run".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_runs_a_pipeline_with_parameters_and_edits_them_in_the_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let Some(chrome) = browser(&root, 1280, 800).await else { return };
    let server = Server::start(&root).await;
    let base = &server.url;
    let shots = screenshots();
    log_in(&chrome, base, "admin", PASSWORD).await;

    let yaml = "name: params\nparameters:\n  - name: WHO\n    description: Whom to greet\n  - name: TARGET\n    choices: [staging, production]\n  - name: MOOD\n    default: glad\nstages:\n  - name: S\n    tasks:\n      - {name: greet, type: script, script: 'echo \"$WHO $TARGET $MOOD\"'}\n";
    server.api(reqwest::Method::POST, "/pipelines", Some(yaml)).await;
    chrome.goto(&format!("{base}/pipelines")).await;
    chrome.click("[data-action=run][aria-label='Run params']").await;
    chrome.wait("the parameters", "document.querySelector('dialog[open] [data-param=WHO]')").await;
    let shown = chrome
        .js(
            "const d = document.querySelector('dialog[open]');
             return {
               who_required: d.querySelector('[data-param=WHO]').required,
               who_label: d.querySelector('label[for=' + d.querySelector('[data-param=WHO]').id + ']').textContent,
               hint: d.textContent.includes('Whom to greet'),
               target: d.querySelector('[data-param=TARGET]').tagName + ':' + d.querySelector('[data-param=TARGET]').value,
               options: [...d.querySelectorAll('[data-param=TARGET] option')].map(o => o.value).join(','),
               mood: d.querySelector('[data-param=MOOD]').value,
             };",
            json!([]),
        )
        .await;
    assert_eq!(
        shown,
        json!({"who_required": true, "who_label": "WHO *", "hint": true, "target": "SELECT:staging", "options": "staging,production", "mood": "glad"})
    );
    chrome.screenshot(&shots.join("40-run-with-parameters.png")).await;
    chrome.type_into("dialog[open] [data-param=WHO]", "world").await;
    chrome
        .js("const s = document.querySelector('dialog[open] [data-param=TARGET]'); s.value = 'production';", json!([]))
        .await;
    confirm(&chrome).await;
    chrome
        .wait(
            "the run started",
            "[...document.querySelectorAll('.toast')].some(t => t.textContent.includes('Run #1 of params started'))",
        )
        .await;
    let runs = server.api(reqwest::Method::GET, "/pipelines/params/runs", None).await;
    let run = server.api(reqwest::Method::GET, &format!("/runs/{}", runs["items"][0]["id"]), None).await;
    assert_eq!(run["parameters"], json!({"WHO": "world", "TARGET": "production", "MOOD": "glad"}), "{run}");

    // The editor: a type this server cannot run says what it needs, in the dialog.
    chrome.goto(&format!("{base}/pipelines/params/edit")).await;
    chrome.click("[data-stage=S] [data-action=add-task]").await;
    chrome.wait("the task dialog", "document.querySelector('dialog[open] select[name=task-type]')").await;
    let hidden =
        chrome.js("return document.querySelector('dialog[open] [data-role=type-needs]').hidden", json!([])).await;
    assert_eq!(hidden, true, "script tasks run here: no note");
    // A type this server refuses (which ones depends on what is built): the dialog
    // says what it needs, in the server's words.
    let types: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/task-types"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refused = types["items"].as_array().unwrap().iter().find(|t| {
        t["runs"] == false
            && ["image", "deploy-yaml", "chart-publish", "chart-deploy", "approval"]
                .contains(&t["name"].as_str().unwrap())
    });
    if let Some(refused) = refused {
        let name = refused["name"].as_str().unwrap();
        let needs = refused["needs"].as_str().unwrap().replace('`', "");
        chrome
            .js(
                "const t = document.querySelector('dialog[open] select[name=task-type]'); t.value = arguments[0]; t.dispatchEvent(new Event('change'));",
                json!([name]),
            )
            .await;
        chrome
            .wait(
                "the note on what a refused type needs",
                &format!(
                    "document.querySelector('dialog[open] [data-role=type-needs]')?.textContent === {}",
                    json!(format!("This server cannot run this type yet: {needs}"))
                ),
            )
            .await;
    }
    // The image type offers the registries and the chosen one's workspaces.
    for (name, workspaces) in [("pick-a", json!(["team-a", "team-b"])), ("pick-b", json!(["other"]))] {
        let made = reqwest::Client::new()
            .post(format!("{base}/api/v1/registries?verify=false"))
            .bearer_auth(TOKEN)
            .json(&json!({"name": name, "url": "registry.invalid:5000", "username": "u", "password": "p", "workspaces": workspaces}))
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 201, "{}", made.text().await.unwrap());
    }
    chrome
        .js(
            "const t = document.querySelector('dialog[open] select[name=task-type]'); t.value = 'image'; t.dispatchEvent(new Event('change'));",
            json!([]),
        )
        .await;
    let options = |role: &'static str| {
        format!("[...document.querySelectorAll('dialog[open] [data-role={role}] option')].map(o => o.value).join(',')")
    };
    chrome.wait("the registries offered", &format!("{} === 'pick-a,pick-b'", options("registry-choices"))).await;
    chrome.type_into("dialog[open] input[name=registry]", "pick-a").await;
    chrome.wait("pick-a's workspaces offered", &format!("{} === 'team-a,team-b'", options("workspace-choices"))).await;
    chrome.click("dialog[open] [data-action=cancel]").await;

    // Add a parameter and a variable, then save and run with them.
    chrome.click("[data-action=edit-vars]").await;
    chrome.wait("the variables dialog", "document.querySelector('dialog[open] .param-0')").await;
    chrome.click("dialog[open] [data-action=add-var]").await;
    chrome.type_into("dialog[open] tr:last-child .var-0", "PLANET").await;
    chrome.type_into("dialog[open] tr:last-child .var-1", "mars").await;
    chrome.click("dialog[open] [data-action=add-param]").await;
    chrome.type_into("dialog[open] fieldset:last-of-type tr:last-child .param-0", "SHOUT").await;
    chrome.type_into("dialog[open] fieldset:last-of-type tr:last-child .param-3", "yes, no").await;
    confirm(&chrome).await;
    chrome.click("[data-action=save]").await;
    chrome.wait("the save dialog", "document.querySelector('dialog[open] input[value=run]')").await;
    chrome.click("dialog[open] input[value=run]").await;
    chrome.type_into("dialog[open] [data-param=WHO]", "again").await;
    chrome.js("const s = document.querySelector('dialog[open] [data-param=SHOUT]'); s.value = 'no';", json!([])).await;
    confirm(&chrome).await;
    chrome.wait("the new run's page", "location.pathname.startsWith('/runs/')").await;
    let shown = server.api(reqwest::Method::GET, "/pipelines/params", None).await;
    assert_eq!(shown["definition"]["variables"], json!([{"name": "PLANET", "value": "mars"}]), "{shown}");
    assert_eq!(shown["definition"]["parameters"][3], json!({"name": "SHOUT", "choices": ["yes", "no"]}));
    let runs = server.api(reqwest::Method::GET, "/pipelines/params/runs", None).await;
    assert_eq!(runs["total"], 2, "{runs}");
    let run = server.api(reqwest::Method::GET, &format!("/runs/{}", runs["items"][0]["id"]), None).await;
    assert_eq!(run["parameters"]["WHO"], "again");
    assert_eq!(run["parameters"]["SHOUT"], "no");
    no_js_errors(&chrome, "the end").await;
    chrome.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_adds_a_cluster_sees_its_health_and_removes_it_in_the_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let Some(chrome) = browser(&root, 1280, 800).await else { return };
    let options = wharf_kube_fake::Options { ready_nodes: 2, unready_nodes: 1, ..Default::default() };
    let fake = wharf_kube_fake::KubeFake::start(options).await.expect("start the kube-fake");
    // The fake listens on loopback, which the server refuses to call unless listed.
    let server = Server::start_with(&root, &[("WHARF_OUTBOUND_ALLOW", "127.0.0.1")]).await;
    let base = &server.url;
    let shots = screenshots();
    log_in(&chrome, base, "admin", PASSWORD).await;

    // The link in the shell leads to an empty list that says how to add one, here and
    // from a terminal.
    chrome.click("#nav a[href='/clusters']").await;
    let empty = chrome.wait("no clusters yet", "document.querySelector('.empty')?.textContent").await;
    let empty = empty.as_str().unwrap();
    assert!(empty.contains("No clusters yet") && empty.contains("wharf clusters add NAME --kubeconfig"), "{empty}");
    chrome.screenshot(&shots.join("50-clusters-empty.png")).await;

    // A kubeconfig the cluster refuses (a wrong token): the dialog stays open with the
    // server's words, and what was typed stays.
    let kubeconfig = fake.kubeconfig();
    let wrong = kubeconfig.replace(fake.token(), "not-the-token");
    chrome.click("[data-action=add-cluster-empty]").await;
    chrome.type_into("dialog[open] input[name=name]", "fake").await;
    chrome.type_into("dialog[open] textarea[name=kubeconfig]", &wrong).await;
    let hint =
        chrome.wait("the context hint", "document.querySelector('dialog[open] .row-2 .hint')?.textContent").await;
    assert!(hint.as_str().unwrap().contains("kube-fake"), "the file's current-context is named: {hint}");
    chrome.click("dialog[open] button[type=submit]").await;
    let shown = chrome
        .wait(
            "the refusal in the dialog",
            "document.querySelector('dialog[open] .form-error:not([hidden])')?.textContent",
        )
        .await;
    assert!(shown.as_str().unwrap().to_lowercase().contains("unauthorized"), "the API server's words: {shown}");
    let kept = chrome
        .js(
            "return [document.querySelector('dialog[open] input[name=name]').value, document.querySelector('dialog[open] textarea[name=kubeconfig]').value]",
            json!([]),
        )
        .await;
    assert_eq!(kept, json!(["fake", wrong]), "nothing typed is lost");
    chrome.screenshot(&shots.join("51-cluster-refused.png")).await;

    // Text that is no kubeconfig: a 422 saying so, in place.
    chrome.type_into("dialog[open] textarea[name=kubeconfig]", "apiVersion: v1\nkind: Config\nclusters: [\n").await;
    chrome.click("dialog[open] button[type=submit]").await;
    chrome
        .wait(
            "the bad kubeconfig's message",
            "document.querySelector('dialog[open] .form-error:not([hidden])')?.textContent.toLowerCase().includes('kubeconfig')",
        )
        .await;

    // The right file, chosen: healthy, with version, nodes and the pipeline namespace.
    let file = root.join("kube-fake.yaml");
    std::fs::write(&file, &kubeconfig).unwrap();
    chrome.choose_file("dialog[open] input[name=kubeconfig-file]", &file).await;
    chrome
        .wait(
            "the file read into the dialog",
            "document.querySelector('dialog[open] textarea[name=kubeconfig]')?.value.includes('current-context: kube-fake')",
        )
        .await;
    confirm(&chrome).await;
    chrome.wait("the healthy cluster", "document.querySelector('tr[data-cluster=fake] [data-health=healthy]')").await;
    let row = chrome
        .js(
            "const r = document.querySelector('tr[data-cluster=fake]');
             return ['.server', '.version', '.nodes-cell', '.namespace', '.checked'].map(c => r.querySelector(c).textContent)",
            json!([]),
        )
        .await;
    assert_eq!(row[0], fake.url().trim_start_matches("https://"), "the host, HTTPS being the norm: {row}");
    let title = chrome.js("return document.querySelector('tr[data-cluster=fake] .server').title", json!([])).await;
    assert_eq!(title, fake.url(), "the whole URL on hover");
    assert_eq!(row[1], "v1.32.0-kube-fake", "{row}");
    assert_eq!(row[2], "2/3", "{row}");
    assert!(row[3].as_str().unwrap().starts_with("ecp-devops-"), "{row}");
    assert!(row[4].as_str().unwrap().ends_with("ago"), "when it was checked: {row}");
    let page = chrome.js("return document.documentElement.outerHTML", json!([])).await;
    assert!(!page.as_str().unwrap().contains(fake.token()), "the kubeconfig is shown nowhere after saving");
    chrome.screenshot(&shots.join("52-clusters-1280.png")).await;

    // Check now: the server checks again and the page says how it went.
    chrome.click("[data-action=check-cluster][aria-label='Check fake now']").await;
    chrome
        .wait(
            "the check's answer",
            "[...document.querySelectorAll('.toast')].some(t => t.textContent.startsWith('fake: Healthy'))",
        )
        .await;

    // Usable at 1024 px: every column in view, nothing scrolled sideways.
    chrome.set_size(1024, 768).await;
    let fits = chrome
        .wait(
            "the list at 1024 px",
            "(() => { const w = document.querySelector('.table-wrap'); return w && w.scrollWidth <= w.clientWidth ? 'fits' : null })()",
        )
        .await;
    assert_eq!(fits, "fits");
    chrome.screenshot(&shots.join("52-clusters-1024.png")).await;

    // One that cannot be reached, added without verifying: "Not checked", then Check
    // says why, on the badge's hover and under it.
    chrome.set_size(1280, 800).await;
    let dead = format!(
        "https://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    chrome.click("[data-action=add-cluster]").await;
    chrome.type_into("dialog[open] input[name=name]", "gone").await;
    chrome
        .js(
            "const t = document.querySelector('dialog[open] textarea[name=kubeconfig]'); t.value = arguments[0]; t.dispatchEvent(new Event('input'));",
            json!([kubeconfig.replace(&fake.url(), &dead)]),
        )
        .await;
    chrome.click("dialog[open] input[name=verify]").await;
    confirm(&chrome).await;
    chrome.wait("not checked", "document.querySelector('tr[data-cluster=gone] [data-health=unchecked]')").await;
    chrome.click("[data-action=check-cluster][aria-label='Check gone now']").await;
    let title = chrome
        .wait("the reason on hover", "document.querySelector('tr[data-cluster=gone] [data-health=unreachable]')?.title")
        .await;
    assert!(title.as_str().unwrap().contains(&format!("{dead} is unreachable")), "{title}");
    let under =
        chrome.js("return document.querySelector('tr[data-cluster=gone] .health-error').textContent", json!([])).await;
    assert!(under.as_str().unwrap().contains("is unreachable"), "{under}");
    chrome.screenshot(&shots.join("53-clusters-unreachable.png")).await;
    chrome.click("[data-action=remove-cluster][aria-label='Remove gone']").await;
    confirm(&chrome).await;
    chrome.wait("gone removed", "!document.querySelector('tr[data-cluster=gone]')").await;

    // The cluster's page: everything the list shows, and how a pipeline names it.
    chrome.click("tr[data-cluster=fake] a.name").await;
    let detail = chrome.wait("the cluster's page", "document.querySelector('pre.snippet')?.textContent").await;
    assert!(detail.as_str().unwrap().contains("cluster: fake"), "{detail}");
    let facts = chrome.js("return document.querySelector('main').innerText", json!([])).await;
    let facts = facts.as_str().unwrap();
    assert!(facts.contains("2 of 3 ready") && facts.contains("kube-fake") && facts.contains("ecp-devops-"), "{facts}");
    assert!(!facts.contains("null") && !facts.contains("undefined"), "no empty value written as text: {facts}");
    chrome.screenshot(&shots.join("54-cluster.png")).await;

    // A pipeline deploying to it holds it: the confirmation shows that pipeline.
    let pipeline = "name: shop-deploy\nexecutor: host\nstages:\n  - name: Deploy\n    tasks:\n      - name: apply\n        type: deploy-yaml\n        file: k8s/app.yaml\n        cluster: fake\n        namespace: games\n";
    server.api(reqwest::Method::POST, "/pipelines", Some(pipeline)).await;
    chrome.click("#nav a[href='/clusters']").await;
    chrome.click("[data-action=remove-cluster][aria-label='Remove fake']").await;
    chrome.click("dialog[open] button[type=submit]").await;
    chrome
        .wait(
            "the pipeline that holds it",
            "document.querySelector('dialog[open] .in-use li[data-pipeline=shop-deploy]')",
        )
        .await;
    chrome.screenshot(&shots.join("55-cluster-in-use.png")).await;
    server.api(reqwest::Method::DELETE, "/pipelines/shop-deploy", None).await;
    confirm(&chrome).await;
    chrome.wait("no clusters again", "document.querySelector('.empty')?.textContent.includes('No clusters yet')").await;
    let left = server.api(reqwest::Method::GET, "/clusters", None).await;
    assert_eq!(left["total"], 0, "{left}");
    no_js_errors(&chrome, "the end").await;
    chrome.quit().await;
    drop(fake);
}

/// The main journey in a browser set to Simplified Chinese: the UI picks zh-CN from the
/// browser's language, and logging in, creating a pipeline from scratch in the editor,
/// running it, its run page (with a localized duration) and the pipeline list all read
/// in the seed's Chinese terms, not English; the language switch then changes to
/// English and keeps that choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_whose_browser_reads_chinese_builds_and_runs_a_pipeline_in_chinese() {
    let (browser, driver) = match webdriver::find_browser() {
        Ok(found) => found,
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => panic!("CI=true and {why}"),
        Err(why) => {
            eprintln!("skipping the browser test: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let downloads = root.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let server = Server::start(&root).await;
    let chrome = Chrome::start_in(&browser, &driver, &downloads, 1280, 800, "zh-CN").await;
    let shots = screenshots();
    let base = &server.url;
    // That none of these English words is in the page's visible text.
    let no_english = |text: &str, words: &[&str], at: &str| {
        for word in words {
            assert!(!text.contains(word), "{at}: English `{word}` shown in the Chinese UI:\n{text}");
        }
    };

    // The login page, in Chinese because the browser's language is.
    chrome.goto(&format!("{base}/login")).await;
    chrome.wait("the Chinese login page", "document.querySelector('#login-title')?.textContent === '登录 Wharf'").await;
    let lang =
        chrome.js("return [document.documentElement.lang, document.querySelector('#language').value]", json!([])).await;
    assert_eq!(lang, json!(["zh-CN", "zh-CN"]), "the language follows the browser's");
    chrome.type_into("input[name=password]", "wrong").await;
    chrome.click("form.login button[type=submit]").await;
    chrome
        .wait(
            "the login error in Chinese",
            "document.querySelector('.form-error:not([hidden])')?.textContent === '用户名或密码错误。'",
        )
        .await;
    chrome.screenshot(&shots.join("zh-01-login.png")).await;
    chrome.type_into("input[name=password]", PASSWORD).await;
    chrome.click("form.login button[type=submit]").await;
    chrome
        .wait("the empty list in Chinese", "document.querySelector('.empty')?.textContent.includes('还没有流水线')")
        .await;
    let nav = chrome.js("return document.querySelector('#nav').innerText", json!([])).await;
    for word in ["流水线", "代码仓库", "镜像仓库", "集群"] {
        assert!(nav.as_str().unwrap().contains(word), "the navigation names {word}: {nav}");
    }

    // Create from scratch in the card editor.
    chrome.click("[data-action=create]").await;
    let dialog = chrome.wait("the create dialog", "document.querySelector('dialog[open]')?.innerText").await;
    assert!(
        dialog.as_str().unwrap().contains("从零开始创建") && dialog.as_str().unwrap().contains("从已有流水线复制"),
        "{dialog}"
    );
    chrome.click("dialog[open] button[type=submit]").await;
    chrome
        .wait("the editor", "location.pathname === '/pipelines/new' && document.querySelector('[data-stage=Deploy]')")
        .await;
    chrome.type_into("#pipeline-name", "zh-demo").await;
    chrome
        .wait("a sequential stage", "document.querySelector('[data-stage=Build] .mode')?.textContent === '串行'")
        .await;
    let editor = page_text(&chrome).await;
    for word in ["添加任务", "添加代码源", "保存", "撤销", "运行脚本", "流水线名称"] {
        assert!(editor.contains(word), "the editor says {word}:\n{editor}");
    }
    no_english(&editor, &["Add task", "Add source", "Save", "Undo", "Run a script", "sequential"], "the editor");
    chrome.screenshot(&shots.join("zh-02-editor.png")).await;

    // Save and run: the run page in Chinese, its duration in Chinese units.
    chrome.click("[data-action=save]").await;
    let save = chrome.wait("the save dialog", "document.querySelector('dialog[open]')?.innerText").await;
    assert!(save.as_str().unwrap().contains("仅保存") && save.as_str().unwrap().contains("保存并立即执行"), "{save}");
    chrome.click("dialog[open] input[value=run]").await;
    confirm(&chrome).await;
    chrome.wait("the run page", "location.pathname.startsWith('/runs/')").await;
    chrome
        .wait("the run to succeed", "document.querySelector('.run-head .badge')?.dataset.status === 'succeeded'")
        .await;
    chrome.wait("the end of the log", "document.querySelector('.log')?.dataset.state === 'ended'").await;
    let head = chrome
        .js(
            "return {title: document.querySelector('.run-head h1').textContent,
                     badge: document.querySelector('.run-head .badge').textContent,
                     facts: [...document.querySelectorAll('.run-head .facts dt')].map(d => d.textContent),
                     duration: [...document.querySelectorAll('.run-head .facts > div')].find(d => d.querySelector('dt').textContent === '耗时')?.querySelector('dd').textContent,
                     columns: [...document.querySelectorAll('.steps-table th')].map(th => th.textContent),
                     log: document.querySelector('.log-state').textContent}",
            json!([]),
        )
        .await;
    assert_eq!(head["title"], "运行记录 #1", "{head}");
    assert_eq!(head["badge"], "成功", "the status label is translated, data-status is not: {head}");
    assert_eq!(head["facts"], json!(["状态", "开始时间", "耗时", "触发原因"]), "{head}");
    assert_eq!(head["columns"], json!(["阶段", "任务", "状态", "耗时"]), "{head}");
    assert_eq!(head["log"], "日志结束", "{head}");
    let duration = head["duration"].as_str().unwrap_or_default();
    let number = duration.trim_end_matches("毫秒").trim_end_matches('秒');
    assert!(
        number != duration && !number.is_empty() && number.chars().all(|c| c.is_ascii_digit() || c == '.'),
        "a duration in Chinese units (350毫秒, 1.2秒): {head}"
    );
    let run_page = page_text(&chrome).await;
    no_english(
        &run_page,
        &["Succeeded", "Duration", "Download full log", "Re-run", "Stage", "End of log"],
        "the run page",
    );
    chrome.screenshot(&shots.join("zh-03-run.png")).await;

    // The pipeline's page and the pipeline list.
    chrome.click(".run-head .crumbs a:nth-of-type(2)").await;
    chrome.wait("the pipeline's page", "document.querySelector('.records h2')?.textContent === '运行记录'").await;
    chrome.wait("its run record", "document.querySelector('tr[data-run=\"1\"]')").await;
    let details = page_text(&chrome).await;
    for word in ["基本信息", "触发规则", "高级设置", "超时时间（分钟）", "仅手动触发", "时间轴"]
    {
        assert!(details.contains(word), "the pipeline's page says {word}:\n{details}");
    }
    no_english(
        &details,
        &["Basic information", "Triggers", "Advanced settings", "Run records", "Manual ("],
        "the details page",
    );
    chrome.screenshot(&shots.join("zh-04-details.png")).await;
    chrome.click(".crumbs a").await;
    chrome
        .wait("the list", "document.querySelector('tr[data-pipeline=zh-demo] .badge')?.dataset.status === 'succeeded'")
        .await;
    let list = page_text(&chrome).await;
    for word in ["创建流水线", "名称", "最近执行", "已激活", "成功", "执行", "更多", "共 1 条流水线"]
    {
        assert!(list.contains(word), "the list says {word}:\n{list}");
    }
    no_english(&list, &["Create pipeline", "Last run", "Active", "Succeeded", "More", "1 pipeline"], "the list");
    let labels =
        chrome.js("return document.querySelector('[data-action=run]').getAttribute('aria-label')", json!([])).await;
    assert_eq!(labels, "执行 zh-demo", "accessible names are translated too");
    chrome.screenshot(&shots.join("zh-05-list.png")).await;

    // The other pages open in Chinese too (their empty states).
    for (n, (path, title, empty)) in [
        ("/repositories", "代码仓库", "还没有代码仓库绑定。"),
        ("/registries", "镜像仓库", "还没有镜像仓库。"),
        ("/clusters", "集群", "还没有集群。"),
        ("/instances", "模板实例", "还没有集群。"),
        ("/users", "用户和项目", "我的 API 令牌"),
    ]
    .into_iter()
    .enumerate()
    {
        chrome.goto(&format!("{base}{path}")).await;
        chrome
            .wait(
                &format!("{path} in Chinese"),
                &format!(
                    "document.querySelector('main h1')?.textContent === {} && document.body.innerText.includes({})",
                    json!(title),
                    json!(empty)
                ),
            )
            .await;
        chrome.screenshot(&shots.join(format!("zh-{:02}-{}.png", n + 6, &path[1..]))).await;
    }
    no_js_errors(&chrome, "the Chinese journey").await;

    // The switch: English now, and kept for the next pages.
    chrome.goto(&format!("{base}/pipelines")).await;
    chrome.wait("the Chinese list", "document.querySelector('main h1')?.textContent === '流水线'").await;
    chrome
        .js(
            "const s = document.querySelector('#language'); s.value = 'en'; s.dispatchEvent(new Event('change'));",
            json!([]),
        )
        .await;
    chrome.wait("the English list", "document.querySelector('main h1')?.textContent === 'Pipelines'").await;
    chrome.goto(&format!("{base}/pipelines")).await;
    chrome
        .wait(
            "English again after a reload",
            "document.querySelector('main h1')?.textContent === 'Pipelines' && document.documentElement.lang === 'en'",
        )
        .await;
    no_js_errors(&chrome, "the switch").await;
    chrome.quit().await;
}

/// Revision after revision of release `web` in `default`, as `chart-deploy` writes them
/// (a ConfigMap per revision).
async fn release_revision(fake: &wharf_kube_fake::KubeFake, value: &str) {
    use wharf_kube::release::{ChartRecord, ReleaseRequest, install_or_upgrade};
    let policy = wharf_kube::Policy::new(&["127.0.0.1"]).unwrap();
    let conn =
        wharf_kube::Connection::from_kubeconfig(&fake.kubeconfig(), None, &wharf_kube::FileAccess::Refuse, &policy)
            .unwrap();
    let ctx = wharf_kube::deploy::Ctx { cluster: "fake", conn: &conn, namespace: "default" };
    let chart: ChartRecord = serde_json::from_value(json!({
        "metadata": {"name": "nginx", "version": format!("1.0.{value}"), "apiVersion": "v2", "appVersion": "1.27"}
    }))
    .unwrap();
    let request = ReleaseRequest {
        release: "web".into(),
        chart,
        config: serde_json::from_value(json!({"replicaCount": value.parse::<i64>().unwrap()})).unwrap(),
        manifest: format!(
            "---\n# Source: nginx/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  v: \"{value}\"\n"
        ),
        hooks: vec![],
        notes: "Thanks for installing nginx.".into(),
        crds: String::new(),
        source: Some("local/charts/nginx".into()),
    };
    struct Quiet;
    impl wharf_executor::LogSink for Quiet {
        fn line(&self, _: wharf_executor::LogLine) {}
    }
    let (_tx, mut stop) = tokio::sync::watch::channel(None);
    install_or_upgrade(&conn, &ctx, request, &Quiet, &mut stop).await.unwrap();
}

/// The instances page: releases of every cluster listed, one release's history, a
/// rollback to an earlier revision (a new revision, as helm makes it), and an uninstall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_rolls_back_and_uninstalls_an_instance_in_the_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let Some(chrome) = browser(&root, 1280, 800).await else { return };
    let fake = wharf_kube_fake::KubeFake::start(Default::default()).await.expect("start the kube-fake");
    let server = Server::start_with(&root, &[("WHARF_OUTBOUND_ALLOW", "127.0.0.1")]).await;
    let base = &server.url;
    let shots = screenshots();
    log_in(&chrome, base, "admin", PASSWORD).await;

    // No cluster yet: the page says where to add one.
    chrome.click("#nav a[href='/instances']").await;
    let empty = chrome.wait("no clusters", "document.querySelector('.empty')?.textContent").await;
    assert!(empty.as_str().unwrap().contains("No clusters yet"), "{empty}");

    let added = reqwest::Client::new()
        .post(format!("{base}/api/v1/clusters"))
        .bearer_auth(TOKEN)
        .json(&json!({ "name": "fake", "kubeconfig": fake.kubeconfig() }))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    chrome.goto(&format!("{base}/instances")).await;
    let none = chrome.wait("no instances", "document.querySelector('.empty pre.snippet')?.textContent").await;
    assert!(none.as_str().unwrap().contains("type: chart-deploy") && none.as_str().unwrap().contains("cluster: fake"));
    release_revision(&fake, "1").await;
    release_revision(&fake, "2").await;

    chrome.goto(&format!("{base}/instances")).await;
    chrome.wait("the release's row", "document.querySelector('tr[data-release=web] [data-status=deployed]')").await;
    let row = chrome
        .js(
            "const r = document.querySelector('tr[data-release=web]'); return ['.namespace', '.chart', '.app-version', '.revision'].map(c => r.querySelector(c).textContent)",
            json!([]),
        )
        .await;
    assert_eq!(row, json!(["default", "nginx-1.0.2", "1.27", "2"]));
    chrome.screenshot(&shots.join("60-instances.png")).await;

    // Its page: the history, newest first, and where its chart came from.
    chrome.click("tr[data-release=web] a.name").await;
    chrome.wait("the history", "document.querySelectorAll('table.history tbody tr').length === 2").await;
    let text = page_text(&chrome).await;
    assert!(text.contains("local/charts/nginx") && text.contains("Thanks for installing nginx."), "{text}");
    assert!(text.contains("Install complete") && text.contains("Upgrade complete"), "{text}");
    chrome.screenshot(&shots.join("61-instance.png")).await;

    // Roll back to revision 1: revision 3, deployed, described as helm describes it.
    chrome.click("[data-action=rollback][data-revision='1']").await;
    confirm(&chrome).await;
    chrome.wait("revision 3", "document.querySelectorAll('table.history tbody tr').length === 3").await;
    let first = chrome.js("return document.querySelector('table.history tbody tr').innerText", json!([])).await;
    assert!(
        first.as_str().unwrap().contains("Rollback to 1") && first.as_str().unwrap().contains("nginx-1.0.1"),
        "{first}"
    );
    let shown = server.api(reqwest::Method::GET, "/clusters/fake/namespaces/default/releases/web", None).await;
    assert_eq!(shown["release"]["revision"], 3);
    assert_eq!(shown["values"], json!({"replicaCount": 1}));
    chrome.screenshot(&shots.join("62-instance-rolled-back.png")).await;

    // Uninstall: asked first, then gone from the list.
    chrome.click(".page-head [data-action=uninstall]").await;
    confirm(&chrome).await;
    chrome
        .wait(
            "back on the empty list",
            "location.pathname === '/instances' && document.querySelector('.empty pre.snippet')",
        )
        .await;
    let left = server.api(reqwest::Method::GET, "/clusters/fake/releases", None).await;
    assert_eq!(left["total"], 0, "{left}");
    no_js_errors(&chrome, "the instances page").await;
    chrome.quit().await;
    drop(fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_and_rejects_waiting_runs_in_the_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let Some(chrome) = browser(&root, 1280, 800).await else { return };
    let server = Server::start(&root).await;
    let base = &server.url;
    let shots = screenshots();
    // Its failure webhook points at loopback, which this server's outbound policy
    // refuses: an attempt the run page shows, and the run is what it was anyway.
    let pipeline = "name: gated\nconcurrency: allow\nstages:\n  - name: Review\n    tasks:\n      - {name: sign, type: approval, approvers: [admin], message: 'Ship build ${BUILD_ID}?'}\n  - name: Ship\n    tasks:\n      - {name: ship, type: script, script: echo shipped}\nnotify:\n  - on: [failure]\n    webhook: {url: 'http://127.0.0.1:9/hook'}\n";
    server.api(reqwest::Method::POST, "/pipelines", Some(pipeline)).await;
    let first = server.api(reqwest::Method::POST, "/pipelines/gated/runs", None).await["id"].as_i64().unwrap();
    let second = server.api(reqwest::Method::POST, "/pipelines/gated/runs", None).await["id"].as_i64().unwrap();
    log_in(&chrome, base, "admin", PASSWORD).await;

    // The "waiting for me" list: both runs, each with its message and the buttons.
    chrome.click("#nav a[href='/approvals']").await;
    chrome
        .wait("two waiting approvals", "document.querySelectorAll('.approval-card [data-action=approve]').length === 2")
        .await;
    let text = page_text(&chrome).await;
    assert!(text.contains("Ship build 1?") && text.contains("Ship build 2?"), "{text}");
    chrome.screenshot(&shots.join("40-approvals-waiting.png")).await;
    let card = format!(".approval-card[data-run='{first}']");
    chrome.type_into(&format!("{card} textarea[name=comment]"), "looks good").await;
    chrome.click(&format!("{card} [data-action=approve]")).await;
    chrome.wait("the approved card gone", &format!("!document.querySelector(\"{card}\")")).await;
    let run = server.api(reqwest::Method::GET, &format!("/runs/{first}"), None).await;
    assert_eq!(run["stages"][0]["tasks"][0]["approval"]["decisions"][0]["comment"], "looks good", "{run:#}");

    // The run page: the approval panel with the message, the decision, and the outcome.
    chrome.goto(&format!("{base}/runs/{second}")).await;
    chrome.wait("the approval panel", "document.querySelector('[data-approval=sign] [data-action=reject]')").await;
    assert!(page_text(&chrome).await.contains("Ship build 2?"));
    chrome.screenshot(&shots.join("41-run-waiting-for-approval.png")).await;
    chrome.type_into("[data-approval=sign] textarea[name=comment]", "not today").await;
    chrome.click("[data-approval=sign] [data-action=reject]").await;
    chrome
        .wait(
            "the run failed with the comment",
            "document.querySelector('.facts')?.textContent.includes('rejected by admin: not today')",
        )
        .await;
    chrome.wait("the decision listed", "document.querySelector('[data-approval=sign] li[data-user=admin] q')").await;
    chrome
        .wait(
            "the refused notification on the run page",
            "document.querySelector('.notify-table tr[data-outcome=failed]')?.textContent.includes('127.0.0.1')",
        )
        .await;
    assert!(page_text(&chrome).await.contains("Not delivered"));
    chrome.screenshot(&shots.join("42-run-rejected.png")).await;
    chrome.goto(&format!("{base}/approvals")).await;
    chrome.wait("nothing waiting", "document.querySelector('.approvals .empty')").await;
    no_js_errors(&chrome, "approvals").await;
    chrome.quit().await;
}
