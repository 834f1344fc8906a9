//! Names reach a terminal escaped: a right-to-left override (U+202E) would show
//! `invoice\u{202e}fdp.exe` as `invoiceexe.pdf`, and zero-width characters hide what a name
//! holds, so tables, lines and error lines print them as `\u{202e}`; JSON keeps the name
//! as it is. Real tracker, real `peer` processes on 127.0.0.1.

use crate::common::*;
use anyhow::Context;

const BIDI: &str = "invoice\u{202e}fdp.exe";
const BIDI_SHOWN: &str = r"invoice\u{202e}fdp.exe";
const HIDDEN: &str = "zero\u{200b}width\u{2066}\u{feff}.txt";
const HIDDEN_SHOWN: &str = r"zero\u{200b}width\u{2066}\u{feff}.txt";

/// Asserts that neither stream holds a raw bidi or invisible character.
fn no_raw(what: &str, out: &Out) {
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text.contains(['\u{202e}', '\u{200b}', '\u{2066}', '\u{feff}']),
            "{what} {stream}: {text:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_print_bidi_and_invisible_characters_of_names_escaped() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let alice = TestPeer::register(&tracker, "alice").await?;
        let dir = tempfile::tempdir()?;
        random_file(dir.path(), BIDI, 1000)?;
        random_file(dir.path(), HIDDEN, 10)?;
        let dir_arg = dir.path().to_str().context("utf-8")?;

        let index = alice.run(&["index", dir_arg]).await?.ok()?;
        for (args, out) in [
            ("index", index),
            ("search", alice.run(&["search"]).await?.ok()?),
            ("files", alice.run(&["files"]).await?.ok()?),
        ] {
            no_raw(args, &out);
            for shown in [BIDI_SHOWN, HIDDEN_SHOWN] {
                assert!(out.stdout.contains(shown), "{args}: {}", out.stdout);
            }
        }
        let files = alice.run(&["files"]).await?.stdout;
        let bidi_row = files
            .lines()
            .find(|l| l.contains(BIDI_SHOWN))
            .context("a row for the file")?;
        assert!(
            bidi_row.ends_with(&format!("/{BIDI_SHOWN}")),
            "the PATH column is escaped too: {bidi_row}"
        );

        // JSON is for scripts: the name as it is, in a JSON string.
        let json = alice.run(&["--json", "search"]).await?.ok()?.json()?;
        let mut names: Vec<&str> = json
            .as_array()
            .context("an array")?
            .iter()
            .filter(|f| f["type"] != "collection")
            .filter_map(|f| f["name"].as_str())
            .collect();
        names.sort_unstable();
        assert_eq!(names, [BIDI, HIDDEN], "the two files (and their folder)");

        // An error line that repeats a name escapes it too.
        let out = alice.run(&["get", "no\u{202e}such"]).await?;
        no_raw("get", &out);
        let line = one_error_line(&out);
        assert!(line.contains(r"no\u{202e}such"), "{line}");
        Ok(())
    })
    .await
}
