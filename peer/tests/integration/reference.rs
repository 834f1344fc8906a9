//! The user reference stays true to the command lines. `docs/reference.md` embeds the
//! `--help` text of every command and subcommand of `peer` and `tracker`, each between
//! `<!-- help: peer get -->` and `<!-- /help -->`, and `docs/man/` holds one man page per
//! command. These tests render both from the clap definitions (`peer::cli::Cli`,
//! `tracker::config::Cli`) and fail on any difference, on a command without a block, and on
//! a block or man page of a command that no longer exists. They also run the real `peer`
//! binary, so the check covers what users see.
//!
//! After changing a flag or a help text, rewrite the blocks and the man pages with
//!
//! ```text
//! TESSERA_BLESS=1 cargo test -p peer --test integration reference::
//! ```
//!
//! and review the diff. A new command needs an empty `<!-- help: NAME -->` and
//! `<!-- /help -->` pair where the reference describes it; blessing fills it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::{ColorChoice, Command, CommandFactory};

/// The width help is wrapped at: clap's own when it cannot ask the terminal.
const WIDTH: usize = 100;
const OPEN: &str = "<!-- help: ";
const CLOSE: &str = "<!-- /help -->";

/// Whether this run rewrites the reference instead of checking it.
fn blessing() -> bool {
    std::env::var("TESSERA_BLESS").is_ok_and(|v| v == "1")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the peer crate sits in the workspace root")
        .to_path_buf()
}

/// The two command lines, configured as the binaries render them on a pipe.
fn roots() -> Vec<Command> {
    [peer::cli::Cli::command(), tracker::config::Cli::command()]
        .into_iter()
        .map(|c| c.term_width(WIDTH).color(ColorChoice::Never))
        .collect()
}

/// Every command and subcommand as the words that invoke it (`["peer", "get"]`), parents
/// first; clap's generated `help` subcommand is left out.
fn paths(root: &Command) -> Vec<Vec<String>> {
    fn walk(cmd: &Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        path.push(cmd.get_name().to_string());
        out.push(path.clone());
        for sub in cmd.get_subcommands() {
            if sub.get_name() != "help" && !sub.is_hide_set() {
                walk(sub, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &[], &mut out);
    out
}

/// Fails when a variable whose value `--help` shows is set here: the rendering would
/// depend on this shell.
fn assert_clean_env(root: &Command) {
    fn walk(cmd: &Command, set: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(name) = arg.get_env()
                && !arg.is_hide_env_values_set()
                && std::env::var_os(name).is_some()
            {
                set.push(name.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, set);
        }
    }
    let mut set = Vec::new();
    walk(root, &mut set);
    assert!(
        set.is_empty(),
        "unset {} to run this test: clap shows the value of a set variable in --help",
        set.join(", ")
    );
}

/// The `--help` text of the command at `path`, exactly as the binary prints it.
fn render_help(root: &Command, path: &[String]) -> String {
    let mut argv = path.to_vec();
    argv.push("--help".into());
    let err = root
        .clone()
        .try_get_matches_from(argv)
        .expect_err("--help stops the parse");
    assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{path:?}");
    err.render().to_string()
}

/// Every command's `--help`, by its name as the reference writes it (`peer get`).
fn helps() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for root in roots() {
        assert_clean_env(&root);
        for path in paths(&root) {
            out.insert(path.join(" "), render_help(&root, &path));
        }
    }
    out
}

/// Every man page, by file name (`peer-get.1`), as `clap_mangen::generate_to` would write
/// them, rendered in memory. Each names Tessera and its version as its source, subcommands
/// too (clap gives them no version of their own). clap_mangen leaves the date out, so `man`
/// shows the source where the date goes, at the foot of the page.
fn man_pages() -> BTreeMap<String, String> {
    fn walk(cmd: Command, source: &str, out: &mut BTreeMap<String, String>) {
        let subs = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help");
        for sub in subs.cloned() {
            walk(sub, source, out);
        }
        let man = clap_mangen::Man::new(cmd).source(source);
        let mut bytes = Vec::new();
        man.render(&mut bytes).expect("rendering into memory");
        let text = String::from_utf8(bytes).expect("man pages are UTF-8");
        out.insert(man.get_filename(), text);
    }
    let mut out = BTreeMap::new();
    for root in roots() {
        let mut root = root.disable_help_subcommand(true);
        root.build();
        let source = format!("Tessera {}", root.get_version().unwrap_or_default());
        walk(root, &source, &mut out);
    }
    out
}

/// A block of the reference: the command it names and where its body is.
struct Block {
    name: String,
    /// Byte range of the lines between the two marker lines.
    body: std::ops::Range<usize>,
}

/// The blocks of `doc`. A marker is a line of its own, so prose may quote one.
fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(String, usize)> = None;
    let mut at = 0;
    for line in doc.split_inclusive('\n') {
        let text = line.trim_end();
        if let Some(rest) = text.strip_prefix(OPEN) {
            let name = rest
                .strip_suffix("-->")
                .unwrap_or_else(|| panic!("bad help marker: {text}"))
                .trim();
            if let Some((prev, _)) = &open {
                panic!("<!-- help: {prev} --> is not closed before {text}");
            }
            open = Some((name.to_string(), at + line.len()));
        } else if text == CLOSE {
            let (name, start) = open
                .take()
                .unwrap_or_else(|| panic!("{CLOSE} without an opening marker"));
            out.push(Block {
                name,
                body: start..at,
            });
        }
        at += line.len();
    }
    if let Some((name, _)) = open {
        panic!("<!-- help: {name} --> is never closed");
    }
    out
}

/// A block's body: the help as a fenced code block.
fn fenced(help: &str) -> String {
    format!("```text\n{}\n```\n", help.trim_end_matches('\n'))
}

/// The lines of `want` and `got` from the first that differs, for a failure message.
fn first_difference(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let n = w.iter().zip(&g).take_while(|(a, b)| a == b).count();
    format!(
        "line {}:\n  now:        {:?}\n  documented: {:?}",
        n + 1,
        w.get(n).copied().unwrap_or("<end>"),
        g.get(n).copied().unwrap_or("<end>")
    )
}

const BLESS_HINT: &str =
    "run `TESSERA_BLESS=1 cargo test -p peer --test integration reference::` and review the diff";

#[test]
fn should_embed_the_help_of_every_command() {
    let path = repo_root().join("docs/reference.md");
    let doc = std::fs::read_to_string(&path).expect("docs/reference.md exists");
    let helps = helps();
    let found = blocks(&doc);

    let mut problems = Vec::new();
    let mut seen = BTreeMap::new();
    for b in &found {
        if !helps.contains_key(&b.name) {
            problems.push(format!(
                "a help block names `{}`, which is no command: remove it",
                b.name
            ));
        }
        *seen.entry(b.name.as_str()).or_insert(0) += 1;
    }
    for (name, n) in &seen {
        if *n > 1 {
            problems.push(format!("`{name}` has {n} help blocks; keep one"));
        }
    }
    for name in helps.keys() {
        if !seen.contains_key(name.as_str()) {
            problems.push(format!(
                "`{name}` has no help block: add `{OPEN}{name} -->` and `{CLOSE}` where the \
                 reference describes it, then bless"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    if blessing() {
        let mut out = String::with_capacity(doc.len());
        let mut last = 0;
        for b in &found {
            out.push_str(&doc[last..b.body.start]);
            out.push_str(&fenced(&helps[&b.name]));
            last = b.body.end;
        }
        out.push_str(&doc[last..]);
        if out != doc {
            std::fs::write(&path, out).expect("writing docs/reference.md");
        }
        return;
    }
    for b in &found {
        let want = fenced(&helps[&b.name]);
        let got = &doc[b.body.clone()];
        if want != got {
            problems.push(format!(
                "the help of `{}` in docs/reference.md is out of date, {}",
                b.name,
                first_difference(&want, got)
            ));
        }
    }
    assert!(problems.is_empty(), "{}\n{BLESS_HINT}", problems.join("\n"));
}

#[test]
fn man_pages_should_be_what_clap_mangen_renders() {
    let dir = repo_root().join("docs/man");
    let pages = man_pages();
    let mut on_disk = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries {
            let p = e.expect("listing docs/man").path();
            if p.extension().is_some_and(|x| x == "1") {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(&p).expect("reading a man page");
                on_disk.insert(name, text);
            }
        }
    }

    if blessing() {
        std::fs::create_dir_all(&dir).expect("creating docs/man");
        for (name, text) in &pages {
            if on_disk.get(name) != Some(text) {
                std::fs::write(dir.join(name), text).expect("writing a man page");
            }
        }
        for name in on_disk.keys().filter(|n| !pages.contains_key(*n)) {
            std::fs::remove_file(dir.join(name)).expect("removing a stale man page");
        }
        return;
    }
    let mut problems = Vec::new();
    for (name, text) in &pages {
        match on_disk.get(name) {
            None => problems.push(format!("docs/man/{name} is missing")),
            Some(got) if got != text => problems.push(format!(
                "docs/man/{name} is out of date, {}",
                first_difference(text, got)
            )),
            Some(_) => {}
        }
    }
    for name in on_disk.keys().filter(|n| !pages.contains_key(*n)) {
        problems.push(format!("docs/man/{name} names no command"));
    }
    assert!(problems.is_empty(), "{}\n{BLESS_HINT}", problems.join("\n"));
}

#[test]
fn peer_binary_should_print_the_documented_help() {
    fn env_names(cmd: &Command, out: &mut Vec<OsString>) {
        out.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_env())
                .map(Into::into),
        );
        for sub in cmd.get_subcommands() {
            env_names(sub, out);
        }
    }
    let root = peer::cli::Cli::command()
        .term_width(WIDTH)
        .color(ColorChoice::Never);
    // The binary runs without the variables whose values clap would print.
    let mut vars = Vec::new();
    env_names(&root, &mut vars);
    assert_clean_env(&root);
    for path in paths(&root) {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_peer"));
        cmd.args(&path[1..]).arg("--help");
        // COLUMNS too, in case clap ever learns the terminal's width (`wrap_help`).
        for v in vars
            .iter()
            .map(|v| v.as_os_str())
            .chain([OsStr::new("COLUMNS")])
        {
            cmd.env_remove(v);
        }
        let out = cmd.output().expect("running peer --help");
        let name = path.join(" ");
        assert!(out.status.success(), "`{name} --help` failed: {out:?}");
        assert!(out.stderr.is_empty(), "`{name} --help` wrote to stderr");
        let printed = String::from_utf8(out.stdout).expect("help is UTF-8");
        let rendered = render_help(&root, &path);
        assert_eq!(
            printed,
            rendered,
            "`{name} --help` of the binary differs from the clap definition, {}",
            first_difference(&rendered, &printed)
        );
    }
}
