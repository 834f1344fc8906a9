//! Names that arrive from other machines are hostile until made safe. A file name from a
//! tracker or a peer becomes one plain path component: no separators, no `.`/`..`, no
//! control characters, no reserved device names, at most 255 bytes. Text shown on a terminal
//! has its control characters escaped so it cannot move the cursor or recolour the screen.
//!
//! What a file name may be at all (in a manifest or a replication task) is decided here
//! too, by [`is_valid_file_name`].

/// Longest component most file systems accept, in bytes.
const MAX_COMPONENT: usize = 255;
/// Longest file name the tracker stores, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// Whether `name` may name a file in a manifest or a task: not empty, at most
/// [`MAX_NAME_LEN`] bytes, and no NUL. Such a name is still untrusted: pass it through
/// [`safe_file_name`] before using it as a path.
pub fn is_valid_file_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.contains('\0')
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

/// Escapes control characters (`\n`, `\x1b`, …) and cuts `text` to `max` characters, so that
/// untrusted text can be printed on a terminal or in one log line.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
    fn printable_escapes_control_characters() {
        assert_eq!(printable("a\x1b[2Jb", 80), "a\\u{1b}[2Jb");
        assert_eq!(printable("abcdef", 3), "abc…");
    }
}
