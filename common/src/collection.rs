//! A collection: a shared folder as one thing. Its listing is a small text file of
//! (relative path, file id, size) lines and directory lines, shared like any file, so its
//! content id commits to the whole list and a getter checks it like any chunk map.
//!
//! The listing comes from other machines and is hostile until [`Collection::parse`] has
//! accepted it: every path is relative, made of components that are each one plain file
//! name (not `.` or `..`, no separator, backslash, NUL or control character, at most 255
//! bytes), no two paths differ only in
//! case (they would land on one file on a case-insensitive disk), no path runs through a
//! file, and the lines are sorted and unique, so one folder has one listing and one id.
//!
//! The format, fields separated by one tab (shown as `→`), one entry per line:
//!
//! ```text
//! tessera-collection/1
//! d→empty
//! f→<64 hex digits>→<size>→photos/a.jpg
//! ```

use std::collections::HashSet;
use std::fmt;

use crate::FileId;

/// The first line of every listing.
pub const HEADER: &str = "tessera-collection/1\n";
/// The most entries a collection may list.
pub const MAX_ENTRIES: usize = 100_000;
/// The largest listing, in bytes (one to a few chunks).
pub const MAX_LISTING: usize = 8 << 20;
/// The longest relative path, in bytes.
pub const MAX_PATH: usize = 4096;
/// The most components a path may have.
pub const MAX_DEPTH: usize = 64;
/// The longest component, in bytes (what most file systems take).
const MAX_COMPONENT: usize = 255;

/// Why a listing or an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CollectionError {
    #[error("not a collection listing (no '{}' line)", HEADER.trim_end())]
    NotAListing,
    #[error("a collection listing of {0} bytes is more than the {MAX_LISTING} allowed")]
    TooBig(usize),
    #[error("a collection of more than {MAX_ENTRIES} entries")]
    TooManyEntries,
    #[error("line {line} of the listing: {why}")]
    BadLine { line: usize, why: String },
    #[error("path {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{0:?} and {1:?} differ only in case")]
    CaseClash(String, String),
    #[error("{0:?} is listed twice")]
    Duplicate(String),
    #[error("{inner:?} lies under {file:?}, which is a file")]
    UnderFile { inner: String, file: String },
}

/// A checked relative path: `/`-separated components, each one plain file name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    /// Checks an untrusted relative path.
    ///
    /// # Errors
    /// [`CollectionError::BadPath`] saying what is wrong.
    pub fn parse(path: &str) -> Result<Self, CollectionError> {
        let bad = |why| CollectionError::BadPath {
            path: crate::names::printable(path, 200),
            why,
        };
        if path.is_empty() {
            return Err(bad("empty"));
        }
        if path.len() > MAX_PATH {
            return Err(bad("too long"));
        }
        let mut depth = 0;
        for c in path.split('/') {
            depth += 1;
            if c.is_empty() {
                return Err(bad("absolute, or an empty component"));
            }
            if c == "." || c == ".." {
                return Err(bad("a '.' or '..' component"));
            }
            if c.chars().any(char::is_control) {
                return Err(bad("a control character"));
            }
            if c.contains('\\') {
                return Err(bad("a backslash"));
            }
            if c.len() > MAX_COMPONENT {
                return Err(bad("a component longer than 255 bytes"));
            }
        }
        if depth > MAX_DEPTH {
            return Err(bad("too deep"));
        }
        Ok(Self(path.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, each one plain file name.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The path of each directory above this one, shortest first.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        self.0.match_indices('/').map(|(i, _)| &self.0[..i])
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One line of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory (listed so that empty ones survive the round trip).
    Dir(RelPath),
    /// A file, shared under its own id.
    File {
        path: RelPath,
        id: FileId,
        size: u64,
    },
}

impl Entry {
    pub fn path(&self) -> &RelPath {
        match self {
            Entry::Dir(p) | Entry::File { path: p, .. } => p,
        }
    }
}

/// A checked collection: sorted, unique, safe entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    entries: Vec<Entry>,
}

impl Collection {
    /// A collection of `entries` in any order.
    ///
    /// # Errors
    /// When two paths are the same or differ only in case, a path runs through a file, or
    /// there are too many entries.
    pub fn new(mut entries: Vec<Entry>) -> Result<Self, CollectionError> {
        entries.sort_by(|a, b| a.path().cmp(b.path()));
        check(&entries)?;
        Ok(Self { entries })
    }

    /// Reads a listing from the network or a disk, refusing anything
    /// [`Collection::encode`] would not have written.
    ///
    /// # Errors
    /// The first [`CollectionError`] found.
    pub fn parse(bytes: &[u8]) -> Result<Self, CollectionError> {
        if bytes.len() > MAX_LISTING {
            return Err(CollectionError::TooBig(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| CollectionError::NotAListing)?;
        let body = text
            .strip_prefix(HEADER)
            .ok_or(CollectionError::NotAListing)?;
        let mut entries = Vec::new();
        if !body.is_empty() {
            let Some(body) = body.strip_suffix('\n') else {
                return Err(CollectionError::BadLine {
                    line: body.lines().count() + 1,
                    why: "no line end".into(),
                });
            };
            for (n, line) in body.split('\n').enumerate() {
                if entries.len() == MAX_ENTRIES {
                    return Err(CollectionError::TooManyEntries);
                }
                entries.push(
                    entry(line).map_err(|why| CollectionError::BadLine { line: n + 2, why })?,
                );
            }
        }
        for pair in entries.windows(2) {
            if pair[0].path() >= pair[1].path() {
                return Err(CollectionError::BadLine {
                    line: 0,
                    why: format!("{:?} is out of order", pair[1].path().as_str()),
                });
            }
        }
        check(&entries)?;
        Ok(Self { entries })
    }

    /// The canonical listing: what [`Collection::parse`] reads back.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::from(HEADER);
        for e in &self.entries {
            match e {
                Entry::Dir(p) => out.push_str(&format!("d\t{p}\n")),
                Entry::File { path, id, size } => {
                    out.push_str(&format!("f\t{id}\t{size}\t{path}\n"))
                }
            }
        }
        out.into_bytes()
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The files, in path order.
    pub fn files(&self) -> impl Iterator<Item = (&RelPath, &FileId, u64)> {
        self.entries.iter().filter_map(|e| match e {
            Entry::File { path, id, size } => Some((path, id, *size)),
            Entry::Dir(_) => None,
        })
    }

    /// The bytes of all its files together.
    pub fn total_size(&self) -> u64 {
        self.files().map(|(_, _, s)| s).sum()
    }
}

/// Whether `bytes` begin like a listing (a cheap test before [`Collection::parse`]).
pub fn looks_like_listing(bytes: &[u8]) -> bool {
    bytes.starts_with(HEADER.as_bytes())
}

fn entry(line: &str) -> Result<Entry, String> {
    let mut f = line.split('\t');
    let kind = f.next().unwrap_or_default();
    let e = match kind {
        "d" => {
            let path = f.next().ok_or("no path")?;
            Entry::Dir(RelPath::parse(path).map_err(|e| e.to_string())?)
        }
        "f" => {
            let id = f.next().ok_or("no file id")?;
            let id: FileId = id
                .parse()
                .ok()
                .filter(|_| {
                    id.len() == 64
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                })
                .ok_or("a file id that is not 64 lower-case hex digits")?;
            let size = f.next().ok_or("no size")?;
            let size = size
                .parse::<u64>()
                .ok()
                .filter(|s| s.to_string() == size)
                .ok_or("a size that is not a plain number")?;
            let path = f.next().ok_or("no path")?;
            let path = RelPath::parse(path).map_err(|e| e.to_string())?;
            Entry::File { path, id, size }
        }
        _ => return Err("neither a 'd' nor an 'f' line".into()),
    };
    if f.next().is_some() {
        return Err("too many fields".into());
    }
    Ok(e)
}

/// The rules every collection keeps, on sorted entries.
fn check(entries: &[Entry]) -> Result<(), CollectionError> {
    if entries.len() > MAX_ENTRIES {
        return Err(CollectionError::TooManyEntries);
    }
    let mut folded: HashSet<String> = HashSet::with_capacity(entries.len());
    let mut files: HashSet<&str> = HashSet::new();
    let mut prev: Option<&RelPath> = None;
    for e in entries {
        let p = e.path();
        if prev == Some(p) {
            return Err(CollectionError::Duplicate(p.to_string()));
        }
        prev = Some(p);
        if !folded.insert(p.as_str().to_lowercase()) {
            let other = entries
                .iter()
                .map(Entry::path)
                .find(|o| *o != p && o.as_str().to_lowercase() == p.as_str().to_lowercase())
                .map_or_else(String::new, ToString::to_string);
            return Err(CollectionError::CaseClash(other, p.to_string()));
        }
        if let Some(file) = p.ancestors().find(|a| files.contains(a)) {
            return Err(CollectionError::UnderFile {
                inner: p.to_string(),
                file: file.to_string(),
            });
        }
        if let Entry::File { path, .. } = e {
            files.insert(path.as_str());
        }
    }
    // Sorted order puts "a" before "a/b", but "a b" and "a.b" sort between them, so a
    // directory's contents need not follow it: the file set above is checked as a whole.
    for e in entries {
        if let Some(file) = e.path().ancestors().find(|a| files.contains(a)) {
            return Err(CollectionError::UnderFile {
                inner: e.path().to_string(),
                file: file.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> FileId {
        c.to_string().repeat(64).parse().unwrap()
    }

    fn file(p: &str, c: char, size: u64) -> Entry {
        Entry::File {
            path: RelPath::parse(p).unwrap(),
            id: id(c),
            size,
        }
    }

    #[test]
    fn a_listing_round_trips_and_is_canonical() {
        let c = Collection::new(vec![
            file("b/x.jpg", 'b', 7),
            Entry::Dir(RelPath::parse("empty").unwrap()),
            file("a.txt", 'a', 0),
            Entry::Dir(RelPath::parse("b").unwrap()),
        ])
        .unwrap();
        let bytes = c.encode();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "tessera-collection/1\nf\t{}\t0\ta.txt\nd\tb\nf\t{}\t7\tb/x.jpg\nd\tempty\n",
                id('a'),
                id('b')
            )
        );
        assert_eq!(Collection::parse(&bytes).unwrap(), c);
        assert_eq!(c.total_size(), 7);
        assert!(
            Collection::parse(HEADER.as_bytes())
                .unwrap()
                .entries()
                .is_empty()
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/",
            "./a",
            "a/.",
            "nul\0x",
            "a\nb",
            "a\\b",
            "tab\tx",
            "esc\u{1b}[2J",
            "\u{85}",
        ] {
            assert!(RelPath::parse(p).is_err(), "{p:?}");
        }
        assert!(RelPath::parse("a/".repeat(70).trim_end_matches('/')).is_err());
        for p in ["a", "a b/c.d", "ünï/cödé", ".hidden"] {
            assert!(RelPath::parse(p).is_ok(), "{p:?}");
        }
    }

    #[test]
    fn hostile_listings_are_refused() {
        let a = id('a');
        let bad = [
            format!("f\t{a}\t1\t../escape\n"),
            format!("f\t{a}\t1\t/abs\n"),
            format!("f\t{a}\t1\tA.txt\nf\t{a}\t1\ta.txt\n"),
            format!("f\t{a}\t1\ta\nf\t{a}\t1\ta\n"),
            format!("f\t{a}\t1\tb\nf\t{a}\t1\ta\n"),
            format!("f\t{a}\t1\ta\nf\t{a}\t1\ta/b\n"),
            format!("f\t{a}\t1\ta\nd\ta b\nf\t{a}\t1\ta/b\n"),
            format!("f\t{a}\t01\ta\n"),
            format!("f\t{a}\t-1\ta\n"),
            format!("f\t{}\t1\ta\n", a.to_string().to_uppercase()),
            format!("f\t{a}\t1\ta\textra\n"),
            format!("f\t{a}\t1\ta"),
            "x\ta\n".to_string(),
            "\n".to_string(),
        ];
        for body in bad {
            let bytes = format!("{HEADER}{body}");
            assert!(Collection::parse(bytes.as_bytes()).is_err(), "{body:?}");
        }
        assert_eq!(
            Collection::parse(b"tessera-collection/2\n"),
            Err(CollectionError::NotAListing)
        );
        assert_eq!(
            Collection::parse(&vec![b'a'; MAX_LISTING + 1]),
            Err(CollectionError::TooBig(MAX_LISTING + 1))
        );
    }

    #[test]
    fn a_path_through_a_file_is_refused_in_any_order() {
        let e = Collection::new(vec![file("a", 'a', 1), file("a/b", 'b', 1)]).unwrap_err();
        assert!(matches!(e, CollectionError::UnderFile { .. }), "{e}");
        let e = Collection::new(vec![
            file("a", 'a', 1),
            file("a.b", 'b', 1),
            file("a/c", 'c', 1),
        ])
        .unwrap_err();
        assert!(matches!(e, CollectionError::UnderFile { .. }), "{e}");
    }
}
