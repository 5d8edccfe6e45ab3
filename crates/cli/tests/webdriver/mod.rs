//! A minimal W3C WebDriver client over reqwest (the few commands the UI tests use),
//! instead of a WebDriver crate: reqwest is built already, so this costs no new
//! dependency. `Chrome::start` runs Debian's `chromedriver` on a free loopback port
//! with headless Chromium.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Chromium and its driver are, or why the browser tests cannot run.
pub fn find_browser() -> Result<(PathBuf, PathBuf), String> {
    let which = |names: &[&str]| {
        names.iter().map(PathBuf::from).find(|p| p.exists()).or_else(|| {
            names.iter().find_map(|n| {
                let out = Command::new("sh").arg("-c").arg(format!("command -v {n}")).output().ok()?;
                let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                (!path.is_empty()).then(|| PathBuf::from(path))
            })
        })
    };
    let browser = which(&["/usr/bin/chromium", "chromium", "chromium-browser"]);
    let driver = which(&["/usr/bin/chromedriver", "chromedriver"]);
    match (browser, driver) {
        (Some(b), Some(d)) => Ok((b, d)),
        _ => Err("Chromium or chromedriver is not installed (Debian: apt-get install chromium chromium-driver; \
                  scripts/test.sh installs them when run as root)"
            .into()),
    }
}

pub struct Chrome {
    driver: Child,
    http: reqwest::Client,
    session: String,
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Chrome {
    /// A browser whose language is English (the tests read the English UI).
    pub async fn start(browser: &Path, driver: &Path, downloads: &Path, width: u32, height: u32) -> Chrome {
        Chrome::start_in(browser, driver, downloads, width, height, "en-US").await
    }

    /// A browser whose preferred language is `lang` (`navigator.languages`), as a
    /// person's browser set to that language.
    pub async fn start_in(
        browser: &Path,
        driver: &Path,
        downloads: &Path,
        width: u32,
        height: u32,
        lang: &str,
    ) -> Chrome {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < until, "chromedriver did not answer within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         format!("--window-size={width},{height}"), "--no-first-run", "--no-default-browser-check",
                         format!("--lang={lang}")],
                "prefs": { "download.default_directory": downloads, "download.prompt_for_download": false,
                           "intl.accept_languages": lang }
            }
        } } });
        let answer: Value =
            http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start a session: {answer}"))
            .to_owned();
        Chrome { driver: child, http, session: format!("{base}/session/{id}") }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_cmd(method, path, body)
            .await
            .unwrap_or_else(|(error, message)| panic!("WebDriver {path}: {error}: {message}"))
    }

    /// A command, or the WebDriver error's name and message.
    async fn try_cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, (Value, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(error) = answer["value"].get("error") {
            return Err((error.clone(), answer["value"]["message"].clone()));
        }
        Ok(answer["value"].clone())
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.cmd(reqwest::Method::GET, "/url", None).await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn set_size(&self, width: u32, height: u32) {
        self.cmd(reqwest::Method::POST, "/window/rect", Some(json!({ "width": width, "height": height }))).await;
    }

    /// Runs `body` as a function with `arguments`; returns its JSON value.
    pub async fn js(&self, body: &str, args: Value) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": body, "args": args }))).await
    }

    /// Polls `expression` (JS) until it is truthy; its value. Fails naming `what`.
    pub async fn wait(&self, what: &str, expression: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(30);
        let script = format!("try {{ return ({expression}); }} catch (e) {{ return null; }}");
        loop {
            let v = self.js(&script, json!([])).await;
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v.as_str() != Some("") && v.as_f64() != Some(0.0);
            if truthy {
                return v;
            }
            if Instant::now() > until {
                let body = self.js("return document.body.innerText.slice(0, 3000)", json!([])).await;
                panic!("waited 30 s for {what} ({expression}); the page shows:\n{}", body.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first element matching `css` (waiting for it to appear).
    pub async fn find(&self, css: &str) -> String {
        self.wait(&format!("`{css}`"), &format!("document.querySelector({})", json!(css))).await;
        let v =
            self.cmd(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element for `{css}`: {v}")).to_owned()
    }

    /// A real click (WebDriver scrolls it into view and fails if something covers it).
    /// A page that re-renders between the find and the click (live updates) makes the
    /// element stale: it is found again, a few times at most.
    pub async fn click(&self, css: &str) {
        for _ in 0..5 {
            let el = self.find(css).await;
            match self.try_cmd(reqwest::Method::POST, &format!("/element/{el}/click"), Some(json!({}))).await {
                Ok(_) => return,
                Err((error, _)) if error == "stale element reference" => continue,
                Err((error, message)) => panic!("WebDriver click on `{css}`: {error}: {message}"),
            }
        }
        panic!("`{css}` went stale five times in a row");
    }

    /// Clears the field and types `text` into it, as keystrokes.
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{el}/clear"), Some(json!({}))).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{el}/value"), Some(json!({ "text": text }))).await;
    }

    /// Chooses a file in an `<input type=file>` (WebDriver sends its path as keystrokes).
    pub async fn choose_file(&self, css: &str, path: &Path) {
        let el = self.find(css).await;
        let text = path.to_str().expect("a UTF-8 path");
        self.cmd(reqwest::Method::POST, &format!("/element/{el}/value"), Some(json!({ "text": text }))).await;
    }

    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(v.as_str().unwrap_or_default());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub async fn quit(&self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let clean: Vec<u8> = text.bytes().filter(|c| !matches!(c, b'=' | b'\n' | b'\r')).collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, c)| acc | (u32::from(value(*c)) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
