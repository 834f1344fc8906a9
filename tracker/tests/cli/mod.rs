//! The real `tracker` binary: `user add` from stdin, then `serve` on a free port.

mod secrets;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::json;
use tempfile::TempDir;

use crate::common::within;

fn tracker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracker"));
    cmd.env_remove("TRACKER_LISTEN")
        .env_remove("TRACKER_DATABASE_URL")
        .env_remove("TRACKER_CONFIG")
        .env("RUST_LOG", "warn");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn should_add_a_user_then_serve_on_the_printed_address() {
    within(async {
        let dir = TempDir::new().unwrap();
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());

        let mut add = tracker()
            .args(["--database-url", &db, "user", "add", "carol"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        add.stdin.take().unwrap().write_all(b"s3cret-pw\n").unwrap();
        assert!(add.wait().unwrap().success());
        let dup = tracker()
            .args(["--database-url", &db, "user", "add", "carol"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(dup.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&dup.stderr).starts_with("error: "));
        let usage = tracker().arg("--no-such-flag").output().unwrap();
        assert_eq!(usage.status.code(), Some(2));
        let list = tracker()
            .args(["--database-url", &db, "user", "list"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&list.stdout).contains("carol"));

        let mut serve = tracker()
            .args(["--database-url", &db, "--listen", "127.0.0.1:0", "serve"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(serve.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("tracker listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let health = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        assert_eq!(health.status(), reqwest::StatusCode::OK);
        let login = reqwest::Client::new()
            .post(format!("http://{addr}/api/v1/sessions"))
            .json(&json!({"user": "carol", "password": "s3cret-pw"}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), reqwest::StatusCode::OK);
        serve.kill().unwrap();
        serve.wait().unwrap();

        let remove = || {
            tracker()
                .args(["--database-url", &db, "user", "remove", "carol"])
                .output()
                .unwrap()
        };
        assert!(remove().status.success());
        let again = remove();
        assert_eq!(again.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&again.stderr).contains("no user"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_log_one_json_object_per_line_with_log_format_json() {
    within(async {
        let dir = TempDir::new().unwrap();
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let mut serve = tracker()
            .env("RUST_LOG", "info")
            .args(["--database-url", &db, "--listen", "127.0.0.1:0"])
            .args(["--log-format", "json", "serve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(serve.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("tracker listening on http://"), "{line:?}");
        // A clean stop logs the shutdown too; then stderr ends.
        let pid = serve.id().to_string();
        let term = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(term.success());
        let stderr = BufReader::new(serve.stderr.take().unwrap());
        let mut messages = Vec::new();
        for l in stderr.lines() {
            let l = l.unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
            assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
            messages.push(
                v["fields"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
        assert!(serve.wait().unwrap().success());
        assert!(
            messages.iter().any(|m| m.contains("serving gRPC and HTTP")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("shutting down")),
            "{messages:?}"
        );
    })
    .await
}
