//! A small W3C WebDriver client for the dashboard test: it starts Debian's `chromedriver` on
//! an ephemeral 127.0.0.1 port, opens one headless Chromium session with a fresh profile,
//! and speaks the JSON wire protocol with reqwest. Dropping the [`Browser`] ends the
//! session and kills chromedriver and every Chromium process of that profile by pid, so a
//! failing test leaves no browser behind.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The W3C key under which an element reference travels.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Fails with how to install the browser when it is missing: the test must not pass
/// silently on a machine without it.
pub fn require_chromium() -> anyhow::Result<()> {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the dashboard test drives a real headless Chromium, but {} is missing; \
             install it with `sudo apt-get install -y chromium chromium-driver` \
             (.ci/run does this when they are missing)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// chromedriver plus one browser session; everything is killed on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: Option<String>,
    /// The fresh `--user-data-dir`: its path names this browser's processes.
    profile: tempfile::TempDir,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a `width`×`height` window.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        require_chromium()?;
        let profile = tempfile::tempdir()?;
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {CHROMEDRIVER}"))?;
        let stdout = driver.stdout.take().context("chromedriver stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                // "ChromeDriver was started successfully on port 40903."
                if let Some(rest) = line.split("successfully on port ").nth(1) {
                    return rest
                        .trim_end_matches('.')
                        .trim()
                        .parse::<u16>()
                        .map_err(Into::into);
                }
            }
            bail!("chromedriver exited before it was ready")
        })
        .await
        .context("chromedriver did not get ready")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let mut b = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            profile,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        };
        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            "--disable-dev-shm-usage".to_string(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", b.profile.path().display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let v = b
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await?;
        let id = v["sessionId"]
            .as_str()
            .context("no sessionId in the new-session answer")?;
        b.session = Some(id.to_string());
        b.cmd(
            reqwest::Method::POST,
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await?;
        Ok(b)
    }

    /// One WebDriver call; returns its `value`, or fails with the driver's error message.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("WebDriver {method} {path}"))?;
        let status = resp.status();
        let v: Value = resp.json().await?;
        if !status.is_success() {
            bail!(
                "WebDriver {method} {path}: {status}: {} {}",
                v["value"]["error"],
                v["value"]["message"]
            );
        }
        Ok(v["value"].clone())
    }

    /// A call on the session.
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let id = self.session.as_deref().context("no session")?;
        let body = (method != reqwest::Method::GET).then_some(body);
        self.call(method, &format!("/session/{id}{path}"), body)
            .await
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.cmd(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await?;
        Ok(())
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    pub async fn eval(&self, script: &str) -> anyhow::Result<Value> {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The reference of the first element matching a CSS selector.
    pub async fn find(&self, css: &str) -> anyhow::Result<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await
            .with_context(|| format!("finding {css}"))?;
        v[ELEMENT_KEY]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no element reference in {v}"))
    }

    /// Clicks like a user: the driver scrolls the element into view and fires real events.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let el = self.find(css).await?;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            json!({}),
        )
        .await?;
        Ok(())
    }

    /// Types `text` into an element as key presses.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let el = self.find(css).await?;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        )
        .await?;
        Ok(())
    }

    /// The browser console's errors since the last call (script exceptions, refused
    /// loads, content-security-policy violations).
    pub async fn console_errors(&self) -> anyhow::Result<Vec<String>> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/se/log",
                json!({ "type": "browser" }),
            )
            .await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect())
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        let v = self
            .cmd(reqwest::Method::GET, "/screenshot", Value::Null)
            .await?;
        let b64 = v.as_str().context("screenshot is not a string")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
    }

    /// Pids of the Chromium processes started with this browser's profile directory.
    fn chromium_pids(&self) -> Vec<u32> {
        let needle = format!("--user-data-dir={}", self.profile.path().display());
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.split(|&b| b == 0).any(|arg| arg == needle.as_bytes()))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Ends the session with a blocking HTTP call (usable in `drop`): chromedriver then
    /// closes the browser it started.
    fn end_session_blocking(&mut self) {
        let Some(id) = self.session.take() else {
            return;
        };
        let addr = self.base.trim_start_matches("http://");
        let Ok(mut s) = TcpStream::connect(addr) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            s,
            "DELETE /session/{id} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.end_session_blocking();
        let pids: Vec<String> = self.chromium_pids().iter().map(u32::to_string).collect();
        if !pids.is_empty() {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .status();
        }
        let _ = self.driver.start_kill();
    }
}
