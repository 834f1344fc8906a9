//! The real `tracker` binary logs no secret: at `RUST_LOG=trace` with JSON logs, after
//! accounts are made, logged in and out over REST and gRPC (with wrong passwords and
//! authenticated calls among them), neither stdout nor stderr holds a password or a token.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;
use tonic::Code;

use super::tracker;
use crate::common::{authed, within};

/// Reads all of a child's pipe on a thread of its own (so neither pipe fills and blocks it).
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        pipe.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// Passwords sent in this test (right, wrong and for unknown users).
const PASSWORDS: [&str; 6] = [
    "carol-Pw-7f3a91",
    "carol-Wrong-c2d4e6",
    "alice-Pw-5b8e20",
    "alice-Wrong-9a1c37",
    "mallory-Pw-44e1d0",
    "bob-Pw-0d6f5a",
];

#[tokio::test(flavor = "multi_thread")]
async fn should_never_log_a_password_or_a_token() {
    within(async {
        let dir = TempDir::new().unwrap();
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let traced = || {
            let mut cmd: Command = tracker();
            cmd.env("RUST_LOG", "trace")
                .args(["--database-url", &db, "--log-format", "json"]);
            cmd
        };

        // An account made by the operator, its password on stdin.
        let mut add = traced()
            .args(["user", "add", "carol"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (add_out, add_err) = (
            drain(add.stdout.take().unwrap()),
            drain(add.stderr.take().unwrap()),
        );
        writeln!(add.stdin.take().unwrap(), "{}", PASSWORDS[0]).unwrap();
        assert!(add.wait().unwrap().success());
        let mut logs = add_out.join().unwrap() + &add_err.join().unwrap();

        let mut serve = traced()
            .args(["--listen", "127.0.0.1:0", "serve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let serve_err = drain(serve.stderr.take().unwrap());
        let mut stdout = BufReader::new(serve.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let serve_out = drain(stdout);
        let url = first
            .trim()
            .strip_prefix("tracker listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        let mut tokens = Vec::new();

        // gRPC: register, a wrong password, log in, an authenticated call, log out twice.
        let mut c = TrackerClient::connect(url.clone()).await.unwrap();
        let creds = |user: &str, password: &str| pb::Credentials {
            user: user.into(),
            password: password.into(),
        };
        let registered = c
            .register(creds("alice", PASSWORDS[2]))
            .await
            .unwrap()
            .into_inner()
            .token;
        tokens.push(registered.clone());
        let wrong = c.login(creds("alice", PASSWORDS[3])).await.unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
        let unknown = c.login(creds("mallory", PASSWORDS[4])).await.unwrap_err();
        assert_eq!(unknown.code(), Code::Unauthenticated);
        let bad_name = c
            .register(creds("bad name", PASSWORDS[5]))
            .await
            .unwrap_err();
        assert_eq!(bad_name.code(), Code::InvalidArgument);
        let session = c
            .login(creds("alice", PASSWORDS[2]))
            .await
            .unwrap()
            .into_inner()
            .token;
        tokens.push(session.clone());
        c.search(authed(pb::SearchRequest::default(), &session))
            .await
            .unwrap();
        c.logout(authed(pb::LogoutRequest {}, &session))
            .await
            .unwrap();
        let revoked = c
            .logout(authed(pb::LogoutRequest {}, &session))
            .await
            .unwrap_err();
        assert_eq!(revoked.code(), Code::Unauthenticated);
        c.search(authed(pb::SearchRequest::default(), &registered))
            .await
            .unwrap();

        // REST: a wrong password, log in, log out twice.
        let http = reqwest::Client::new();
        let sessions = format!("{url}/api/v1/sessions");
        let wrong = http
            .post(&sessions)
            .json(&json!({"user": "carol", "password": PASSWORDS[1]}))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let ok = http
            .post(&sessions)
            .json(&json!({"user": "carol", "password": PASSWORDS[0]}))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let rest_token = ok.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        tokens.push(rest_token.clone());
        // A client that wrongly puts the token in the URL: refused, and not logged either
        // (request spans name the path, not the query).
        let in_url = http
            .delete(format!("{sessions}?access_token={rest_token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(in_url.status(), StatusCode::UNAUTHORIZED);
        for expected in [StatusCode::NO_CONTENT, StatusCode::UNAUTHORIZED] {
            let r = http
                .delete(&sessions)
                .bearer_auth(&rest_token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), expected);
        }

        // A clean stop, so everything buffered is written.
        let pid = serve.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        assert!(serve.wait().unwrap().success());
        let serve_err = serve_err.join().unwrap();
        logs += &serve_out.join().unwrap();
        logs += &serve_err;

        // The logs are the real thing: many JSON lines, at trace level, about these requests.
        let lines: Vec<Value> = serve_err
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert!(lines.len() > 50, "only {} log lines", lines.len());
        assert!(lines.iter().any(|l| l["level"] == "TRACE"), "trace is on");
        for route in ["/tracker.v1.Tracker/Login", "/api/v1/sessions"] {
            assert!(serve_err.contains(route), "no log line names {route}");
        }
        for user in ["alice", "carol"] {
            let account_event =
                |l: &&Value| l["target"] == "tracker::app::accounts" && l["fields"]["user"] == user;
            assert!(
                lines.iter().any(|l| account_event(&l)),
                "no event about {user}"
            );
        }

        for secret in PASSWORDS
            .iter()
            .copied()
            .chain(tokens.iter().map(String::as_str))
        {
            assert!(
                !logs.contains(secret),
                "the tracker logged the secret {secret}: {}",
                logs.lines()
                    .find(|l| l.contains(secret))
                    .unwrap_or_default()
            );
        }
    })
    .await
}
