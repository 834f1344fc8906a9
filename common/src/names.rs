//! Names that arrive from other machines are hostile until made safe. A file name from a
//! tracker or a peer becomes one plain path component: no separators, no `.`/`..`, no
//! control characters, no reserved device names, at most 255 bytes. Text shown on a terminal
//! goes through [`printable`], which escapes what could move the cursor, recolour the screen
//! or make it show something else than the bytes say (bidi overrides, invisible characters).
//!
//! What a file name may be at all (in a manifest or a replication task) is decided here
//! too, by [`check_file_name`]. It is deliberately loose (separators, `..` and control
//! characters pass, and [`safe_file_name`] deals with them): manifests already stored by
//! trackers and in peers' homes are read back through it.

/// Longest component most file systems accept, in bytes.
const MAX_COMPONENT: usize = 255;
/// Longest file name the tracker stores, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// Why a name cannot name a file; each says what is wrong, so a refused announce or task
/// tells its sender what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("file name is empty")]
    Empty,
    #[error("file name is {0} bytes long, more than the {MAX_NAME_LEN} allowed")]
    TooLong(usize),
    /// No file system takes a NUL, and C APIs would cut the name at it.
    #[error("file name contains a NUL character (at byte {0})")]
    Nul(usize),
}

/// Checks that `name` may name a file in a manifest or a task: not empty, at most
/// [`MAX_NAME_LEN`] bytes, and no NUL. Such a name is still untrusted: pass it through
/// [`safe_file_name`] before using it as a path, and [`printable`] before showing it.
///
/// # Errors
/// The first [`NameError`] that applies, in the order above.
pub fn check_file_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    match name.find('\0') {
        Some(at) => Err(NameError::Nul(at)),
        None => Ok(()),
    }
}

/// Whether [`check_file_name`] accepts `name`.
pub fn is_valid_file_name(name: &str) -> bool {
    check_file_name(name).is_ok()
}

/// Turns an untrusted name into one safe file name component. Never fails: what cannot be
/// kept is replaced by `_`, and an empty result becomes `unnamed`.
pub fn safe_file_name(untrusted: &str) -> String {
    let mut s: String = untrusted
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    let trimmed = s
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' ']);
    s = trimmed.to_string();
    if s.is_empty() {
        return "unnamed".to_string();
    }
    let stem = s.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        s.insert(0, '_');
    }
    let s = truncate_keeping_extension(s, MAX_COMPONENT);
    // A cut can end on a dot or a space, which the trimming above exists to prevent.
    s.trim_end_matches(['.', ' ']).to_string()
}

fn truncate_keeping_extension(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let ext = match s.rfind('.') {
        Some(i) if s.len() - i <= 16 => s[i..].to_string(),
        _ => String::new(),
    };
    let mut cut = max - ext.len();
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &s[..cut], ext)
}

/// Escapes what must not reach a terminal raw and cuts `text` to `max` characters, so that
/// untrusted text can be printed on a terminal or in one log line. Escaped, as `\u{202e}`
/// (or `\n`, `\t`, ...), are control characters, Unicode format characters (bidi overrides
/// and isolates, which make a terminal show text in another order than it is, and
/// zero-width ones, which hide characters) and the line and paragraph separators.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if must_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether [`printable`] escapes `c`: general categories Cc, Cf, Zl and Zp.
fn must_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_format(c)
}

/// Whether `c` is a Unicode format character (general category Cf, Unicode 16): the bidi
/// controls (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069), zero-width characters
/// (U+200B–U+200D, U+2060, U+FEFF), invisible operators, tags and the rest.
fn is_format(c: char) -> bool {
    const CF: &[(u32, u32)] = &[
        (0x00AD, 0x00AD),
        (0x0600, 0x0605),
        (0x061C, 0x061C),
        (0x06DD, 0x06DD),
        (0x070F, 0x070F),
        (0x0890, 0x0891),
        (0x08E2, 0x08E2),
        (0x180E, 0x180E),
        (0x200B, 0x200F),
        (0x202A, 0x202E),
        (0x2060, 0x2064),
        (0x2066, 0x206F),
        (0xFEFF, 0xFEFF),
        (0xFFF9, 0xFFFB),
        (0x110BD, 0x110BD),
        (0x110CD, 0x110CD),
        (0x13430, 0x1343F),
        (0x1BCA0, 0x1BCA3),
        (0x1D173, 0x1D17A),
        (0xE0001, 0xE0001),
        (0xE0020, 0xE007F),
    ];
    let c = u32::from(c);
    CF.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_one_component() {
        assert_eq!(safe_file_name("../x"), "_x");
        assert_eq!(safe_file_name("/etc/passwd"), "_etc_passwd");
        assert_eq!(safe_file_name(".."), "unnamed");
        assert_eq!(safe_file_name(""), "unnamed");
        assert_eq!(safe_file_name("a\0b\x1b[31mc\n"), "a_b_[31mc_");
        assert_eq!(safe_file_name("C:\\Windows\\x"), "C__Windows_x");
        assert_eq!(safe_file_name("nul.txt"), "_nul.txt");
        assert_eq!(safe_file_name("COM1"), "_COM1");
        assert_eq!(safe_file_name("Abbey Road.flac"), "Abbey Road.flac");
        assert_eq!(safe_file_name(".hidden"), "hidden");
        let long = format!("{}.flac", "é".repeat(5000));
        let safe = safe_file_name(&long);
        assert!(safe.len() <= 255 && safe.ends_with(".flac"));
        for s in ["../x", "/etc/x", "a/../../b", "\u{7f}", "x\u{202e}"] {
            let safe = safe_file_name(s);
            assert!(!safe.contains('/') && safe != "." && safe != "..");
        }
    }

    #[test]
    fn a_cut_never_leaves_a_trailing_dot() {
        let long = format!("{}.{}", "a".repeat(254), "b".repeat(300));
        let safe = safe_file_name(&long);
        assert_eq!(safe, "a".repeat(254));
        assert_eq!(safe_file_name(&safe), safe);
    }

    #[test]
    fn valid_file_names_are_non_empty_short_and_nul_free() {
        assert!(is_valid_file_name("Abbey Road.flac"));
        assert!(is_valid_file_name("../odd\x1b name"));
        assert!(is_valid_file_name(&"a".repeat(MAX_NAME_LEN)));
        assert!(!is_valid_file_name(""));
        assert!(!is_valid_file_name("a\0b"));
        assert!(!is_valid_file_name(&"a".repeat(MAX_NAME_LEN + 1)));
    }

    #[test]
    fn each_refusal_says_its_own_reason() {
        assert_eq!(check_file_name(""), Err(NameError::Empty));
        assert_eq!(check_file_name("a\0b"), Err(NameError::Nul(1)));
        let long = "é".repeat(MAX_NAME_LEN);
        assert_eq!(
            check_file_name(&long),
            Err(NameError::TooLong(2 * MAX_NAME_LEN))
        );
        assert_eq!(NameError::Empty.to_string(), "file name is empty");
        assert_eq!(
            NameError::Nul(1).to_string(),
            "file name contains a NUL character (at byte 1)"
        );
        assert_eq!(
            NameError::TooLong(5000).to_string(),
            "file name is 5000 bytes long, more than the 4096 allowed"
        );
        // Loose on purpose: these are made safe where they are used, not refused.
        for odd in ["a/b", "..", ".", "x\u{1b}[2J", "\u{202e}txt.exe", "a\\b"] {
            assert_eq!(check_file_name(odd), Ok(()), "{odd:?}");
        }
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("a\x1b[2Jb", 80), "a\\u{1b}[2Jb");
        assert_eq!(
            printable("a\nb\tc\r\u{7f}\u{85}", 80),
            "a\\nb\\tc\\r\\u{7f}\\u{85}"
        );
        assert_eq!(printable("abcdef", 3), "abc…");
    }

    #[test]
    fn printable_escapes_bidi_and_invisible_characters() {
        assert_eq!(
            printable("invoice\u{202e}fdp.exe", 80),
            "invoice\\u{202e}fdp.exe"
        );
        let hidden = [
            '\u{202a}',
            '\u{202b}',
            '\u{202c}',
            '\u{202d}',
            '\u{202e}',
            '\u{2066}',
            '\u{2067}',
            '\u{2068}',
            '\u{2069}',
            '\u{200e}',
            '\u{200f}',
            '\u{061c}',
            '\u{200b}',
            '\u{200c}',
            '\u{200d}',
            '\u{2060}',
            '\u{feff}',
            '\u{00ad}',
            '\u{2028}',
            '\u{2029}',
            '\u{e0041}',
        ];
        for c in hidden {
            let p = printable(&format!("a{c}b"), 80);
            assert_eq!(p, format!("a\\u{{{:x}}}b", u32::from(c)), "{c:?}");
        }
        // Letters of any script, marks, emoji and the escape's own characters stay as they are.
        for kept in [
            "Abbey Road.flac",
            "日本語.txt",
            "עברית.mp3",
            "é",
            "🦀",
            "a\\u{202e}b",
        ] {
            assert_eq!(printable(kept, 80), kept);
        }
    }
}
