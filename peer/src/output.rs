//! What commands print: aligned text tables for people, JSON for scripts. Untrusted text
//! (names from the tracker or other peers, local paths, messages) goes through
//! `names::printable` before it reaches a terminal: [`safe`] for a cell or a name in a line,
//! [`report_error`] and [`warn`] for a whole stderr line. JSON needs neither: its string
//! escapes keep control characters out, and scripts, not terminals, read it.

use std::io::Write;

use serde::Serialize;

/// Escapes control, bidi and invisible characters (as `\u{202e}`) and caps the length of
/// untrusted text for a terminal.
pub fn safe(text: &str) -> String {
    common::names::printable(text, 120)
}

/// Renders rows under headers, columns separated by two spaces; the last column is not
/// padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut width = headers
        .iter()
        .map(|h| h.chars().count())
        .collect::<Vec<_>>();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 < cols {
                s.push_str(c);
                s.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
            } else {
                s.push_str(c);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// Prints to stdout; a closed pipe (`peer search | head`) is not an error.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Prints one line to stdout.
pub fn println(line: &str) {
    print(&format!("{line}\n"));
}

/// Prints a value as pretty JSON (one document, newline-terminated).
///
/// # Errors
/// When `value` cannot be encoded (a map with non-string keys, a failing `Serialize`).
pub fn json<T: Serialize>(value: &T) -> Result<(), serde_json::Error> {
    let s = serde_json::to_string_pretty(value)?;
    println(&s);
    Ok(())
}

/// Reports one failed item on stderr, in the same form `main` uses for a fatal error. The
/// peer's errors carry their causes in their own messages (`cannot write X: No space left
/// on device`), so the one line says what failed and why.
pub fn report_error(err: &dyn std::fmt::Display) {
    eprintln!(
        "error: {}",
        common::names::printable(&format!("{err:#}"), 2000)
    );
}

/// Prints one `warning: ...` line on stderr, escaped as [`report_error`] escapes.
pub fn warn(message: &str) {
    eprintln!("warning: {}", common::names::printable(message, 2000));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_escape() {
        let t = table(
            &["ID", "NAME", "SIZE"],
            &[
                vec!["abc".into(), safe("evil\x1b[2Jname"), "1 B".into()],
                vec!["abcdef".into(), "x".into(), "10 KiB".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ID      NAME               SIZE");
        assert_eq!(lines[1], "abc     evil\\u{1b}[2Jname  1 B");
        assert_eq!(lines[2], "abcdef  x                  10 KiB");
        assert!(!t.contains('\x1b'));
    }

    #[test]
    fn safe_shows_bidi_and_invisible_characters_as_escapes() {
        assert_eq!(safe("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
        assert_eq!(safe("a\u{200b}b\u{feff}"), "a\\u{200b}b\\u{feff}");
        let t = table(
            &["NAME", "SIZE"],
            &[vec![safe("\u{2067}x\u{2069}"), "1 B".into()]],
        );
        assert_eq!(t.lines().nth(1), Some("\\u{2067}x\\u{2069}  1 B"));
    }
}
