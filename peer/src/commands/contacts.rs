//! `contacts add|remove|list`: the nodes this peer reaches without a tracker.

use serde::Serialize;

use super::Ctx;
use crate::cli::ContactsAction;
use crate::contacts::Contacts;
use crate::error::Result;
use crate::output::{self, safe};

#[derive(Serialize)]
struct ContactJson<'a> {
    addr: &'a str,
    /// `added` (by hand or `serve --bootstrap`) or `learnt` (from the tracker or peers).
    source: &'static str,
    seen_at: Option<String>,
}

pub fn contacts(cx: &Ctx, action: ContactsAction) -> Result<()> {
    let c = Contacts::new(&cx.home);
    match action {
        ContactsAction::Add { addrs } => {
            for a in addrs {
                let new = c.add(&a)?;
                if !cx.json {
                    let what = if new { "added" } else { "already a contact:" };
                    output::println(&format!("{what} {}", safe(a.trim())));
                }
            }
            if cx.json {
                return list(cx, &c);
            }
            Ok(())
        }
        ContactsAction::Remove { addrs } => {
            for a in addrs {
                let found = c.remove(&a)?;
                if !cx.json {
                    let what = if found { "removed" } else { "not a contact:" };
                    output::println(&format!("{what} {}", safe(a.trim())));
                }
            }
            if cx.json {
                return list(cx, &c);
            }
            Ok(())
        }
        ContactsAction::List => list(cx, &c),
    }
}

fn list(cx: &Ctx, c: &Contacts) -> Result<()> {
    let added = c.added();
    let learned: Vec<_> = c
        .learned()
        .into_iter()
        .filter(|l| !added.iter().any(|a| a.addr == l.addr))
        .collect();
    let rows: Vec<ContactJson> = added
        .iter()
        .map(|x| (x, "added"))
        .chain(learned.iter().map(|x| (x, "learnt")))
        .map(|(x, source)| ContactJson {
            addr: &x.addr,
            source,
            seen_at: crate::rfc3339_ms(x.seen_ms),
        })
        .collect();
    if cx.json {
        return Ok(output::json(&rows)?);
    }
    if rows.is_empty() {
        eprintln!("no contacts; add one with `peer contacts add HOST:PORT`");
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                safe(r.addr),
                r.source.to_string(),
                r.seen_at.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::print(&output::table(&["ADDR", "SOURCE", "SINCE"], &table));
    Ok(())
}
