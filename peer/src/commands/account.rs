//! `register`, `login`, `logout`: sessions with the tracker. Passwords come from
//! `--password-stdin`, a terminal prompt, or the first line of piped stdin; they are never
//! logged or stored (only the session token is, in a 0600 file).

use std::io::{BufRead, IsTerminal};

use super::Ctx;
use crate::cli::Credentials;
use crate::error::{Error, Result};
use crate::home::{SessionFile, Settings};
use crate::identity::Identity;
use crate::output;
use crate::tracker_client::{Granted, TrackerError};

fn first_line_of_stdin() -> std::io::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn read_password(from_stdin: bool, confirm: bool) -> Result<String> {
    let pw = if from_stdin || !std::io::stdin().is_terminal() {
        first_line_of_stdin().map_err(Error::ReadPassword)?
    } else {
        let prompt = |p| rpassword::prompt_password(p).map_err(Error::ReadPassword);
        let pw = prompt("Password: ")?;
        if confirm && prompt("Repeat password: ")? != pw {
            return Err(Error::PasswordsDiffer);
        }
        pw
    };
    if pw.is_empty() {
        return Err(Error::EmptyPassword);
    }
    Ok(pw)
}

fn save(cx: &Ctx, g: &Granted) -> Result<()> {
    cx.home.save_session(&SessionFile {
        user: g.user.clone(),
        token: g.token.clone(),
        expires_at_ms: g.expires_at_ms,
    })?;
    if !g.ticket_public_key.is_empty() {
        cx.home.save_tracker_key(&g.ticket_public_key)?;
    }
    let mut settings: Settings = cx.home.settings()?;
    settings.trackers = cx.trackers.clone();
    Ok(cx.home.save_settings(&settings)?)
}

/// Has the tracker certify this home's key, so the peer can prove who it is to other peers
/// when no tracker answers. A refusal does not undo the login: the node asks again with
/// its heartbeats.
async fn certify(cx: &Ctx) -> Result<()> {
    let identity = Identity::load(&cx.home)?;
    let client = cx.client()?;
    if let Err(e) = client
        .renew_certificate(&identity, &cx.home.peer_id()?)
        .await
    {
        output::warn(&format!(
            "the tracker did not certify this peer's key (a running node asks again): {e}"
        ));
    }
    Ok(())
}

fn say(cx: &Ctx, verb: &str, g: &Granted) -> Result<()> {
    let expires = crate::rfc3339_ms(g.expires_at_ms);
    if cx.json {
        output::json(&serde_json::json!({
            "user": g.user,
            "expires_at": expires,
            "trackers": cx.trackers,
        }))?;
        return Ok(());
    }
    let until = expires.map(|e| format!(" until {e}")).unwrap_or_default();
    output::println(&format!("{verb} as {}{until}", output::safe(&g.user)));
    Ok(())
}

pub async fn register(cx: &Ctx, c: Credentials) -> Result<()> {
    let pw = read_password(c.password_stdin, true)?;
    let client = cx.client()?;
    let g = client.register(&c.user, &pw).await.map_err(|e| match e {
        TrackerError::AlreadyExists { .. } => Error::UserExists {
            user: c.user.clone(),
        },
        TrackerError::PermissionDenied { .. } => Error::RegistrationClosed,
        TrackerError::InvalidInput { message } => Error::CannotRegister(output::safe(&message)),
        e => e.into(),
    })?;
    save(cx, &g)?;
    certify(cx).await?;
    say(cx, "registered and logged in", &g)
}

pub async fn login(cx: &Ctx, c: Credentials) -> Result<()> {
    let pw = read_password(c.password_stdin, false)?;
    let client = cx.client()?;
    let g = client.login(&c.user, &pw).await.map_err(|e| match e {
        TrackerError::Throttled { .. } => Error::TooManyLogins,
        e => e.into(),
    })?;
    save(cx, &g)?;
    certify(cx).await?;
    say(cx, "logged in", &g)
}

pub async fn logout(cx: &Ctx) -> Result<()> {
    if cx.home.session()?.is_none() {
        if cx.json {
            output::json(&serde_json::json!({"logged_out": false, "tracker_notified": false}))?;
            return Ok(());
        }
        output::println("not logged in");
        return Ok(());
    }
    let note = match cx.client()?.logout().await {
        Ok(()) | Err(TrackerError::NotLoggedIn) => None,
        Err(e) => Some(e),
    };
    cx.home.delete_session()?;
    if cx.json {
        output::json(&serde_json::json!({
            "logged_out": true,
            "tracker_notified": note.is_none(),
        }))?;
        return Ok(());
    }
    match note {
        None => output::println("logged out"),
        Some(e) => output::println(&format!(
            "logged out locally; the tracker was not told ({e})"
        )),
    }
    Ok(())
}
