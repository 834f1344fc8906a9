//! Reads what the packaging files make the binaries run: every command line of
//! `docker-compose.yml` (with the Dockerfile's `ENTRYPOINT` and `ENV`) and of the systemd
//! units in `packaging/systemd/`, with the environment each one gets. No compiler reads
//! those files, so the packaging tests of the peer (`peer/tests/integration/packaging.rs`)
//! and of the tracker (`tracker/tests/packaging`) run what this finds, each the commands of
//! its own binary. It reads only the shapes these files use and fails on anything else, so
//! a new shape is noticed rather than skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};

pub type Env = BTreeMap<String, String>;

/// Shell words that start a command without being it.
const KEYWORDS: &[&str] = &[
    "exec", "until", "while", "do", "done", "then", "if", "fi", "else",
];

/// The repository's root (the workspace this crate sits in).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates live in the workspace root")
        .to_path_buf()
}

/// A free address on 127.0.0.1 (bound, then released for the command under test to take),
/// for a listen address a packaging file gives that a test machine may not have free.
///
/// # Errors
/// When no port can be bound.
pub fn free_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

fn read(rel: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(repo().join(rel)).with_context(|| format!("reading {rel}"))
}

/// What a command reads on stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stdin {
    Text(String),
    File(String),
}

/// One command a packaging file runs.
#[derive(Clone, Debug)]
pub struct Cmd {
    /// Where it is written, for messages.
    pub origin: String,
    /// The program's file name (`peer`, `tracker`, `sleep`, …).
    pub program: String,
    pub args: Vec<String>,
    pub stdin: Option<Stdin>,
}

/// A container or unit: its environment and its commands in the order they run; the last
/// is the long-running one.
#[derive(Debug)]
pub struct Service {
    pub origin: String,
    pub env: Env,
    /// Credentials a unit loads (`LoadCredential=NAME:…`), found in `$CREDENTIALS_DIRECTORY`.
    pub credentials: Vec<String>,
    pub commands: Vec<Cmd>,
    /// A compose service's `image`, `build` and `pull_policy` values.
    pub image: Option<String>,
    pub build: Option<String>,
    pub pull_policy: Option<String>,
}

impl Service {
    /// The commands of one program.
    pub fn of(&self, program: &str) -> Vec<&Cmd> {
        self.commands
            .iter()
            .filter(|c| c.program == program)
            .collect()
    }

    /// Checks that every variable starting with `prefix` that this service sets is read:
    /// by the shell (`$NAME` or `${NAME}` in `file`, the file it is written in, relative to
    /// the repository) or by the program (its `help` lists `[env: NAME]` or
    /// `[env: NAME=…]`).
    ///
    /// # Errors
    /// When `file` cannot be read, or naming a variable nothing reads.
    pub fn ensure_every_variable_is_read(
        &self,
        file: &str,
        prefix: &str,
        help: &str,
    ) -> anyhow::Result<()> {
        let text = read(file)?;
        for name in self.env.keys().filter(|k| k.starts_with(prefix)) {
            let read = text.contains(&format!("${name}"))
                || text.contains(&format!("${{{name}}}"))
                || help.contains(&format!("[env: {name}]"))
                || help.contains(&format!("[env: {name}="));
            ensure!(read, "{}: {name} is set but nothing reads it", self.origin);
        }
        Ok(())
    }
}

fn indent(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// The lines below `lines[at]` that are indented deeper than it (blank lines included).
fn block<'a>(lines: &[&'a str], at: usize) -> Vec<&'a str> {
    let base = indent(lines[at]);
    lines[at + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent(l) > base)
        .copied()
        .collect()
}

fn find(lines: &[&str], key: &str) -> anyhow::Result<usize> {
    lines
        .iter()
        .position(|l| l.trim() == key)
        .with_context(|| format!("no `{key}` line"))
}

/// Compose's `${NAME:-default}` (the default, as on a machine that sets nothing).
fn compose_value(v: &str) -> anyhow::Result<String> {
    let v = v.trim().trim_matches('"');
    match v.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(inner) => Ok(inner
            .split_once(":-")
            .with_context(|| format!("{v} has no default"))?
            .1
            .to_string()),
        None => Ok(v.to_string()),
    }
}

/// `KEY: VALUE` lines into `env`, following `<<: *anchor` merges.
fn mapping(lines: &[&str], body: &[&str], env: &mut Env) -> anyhow::Result<()> {
    for l in body.iter().map(|l| l.trim()).filter(|l| !l.is_empty()) {
        let (k, v) = l
            .split_once(':')
            .with_context(|| format!("not KEY: VALUE: {l}"))?;
        if k == "<<" {
            let anchor = format!("&{}", v.trim().trim_start_matches('*'));
            let at = lines
                .iter()
                .position(|l| l.ends_with(&anchor) && indent(l) == 0)
                .with_context(|| format!("no anchor {anchor}"))?;
            mapping(lines, &block(lines, at), env)?;
        } else {
            env.insert(k.to_string(), compose_value(v)?);
        }
    }
    Ok(())
}

/// The value of `key` in a service block, following a `<<: *anchor` merge.
fn compose_key<'a>(lines: &[&'a str], body: &[&'a str], key: &str) -> Option<Vec<&'a str>> {
    let depth = body
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| indent(l))?;
    for (i, l) in body.iter().enumerate() {
        if indent(l) != depth {
            continue;
        }
        let t = l.trim();
        if let Some(rest) = t.strip_prefix(&format!("{key}:")) {
            let mut v = vec![rest.trim()];
            v.extend(block(body, i));
            return Some(v);
        }
    }
    let merge = body.iter().find(|l| l.trim().starts_with("<<: *"))?;
    let anchor = format!("&{}", merge.trim().trim_start_matches("<<: *"));
    let at = lines
        .iter()
        .position(|l| l.ends_with(&anchor) && indent(l) == 0)?;
    compose_key(lines, &block(lines, at), key)
}

/// `["a", "b"]` (JSON).
fn json_words(v: &str) -> anyhow::Result<Vec<String>> {
    serde_json::from_str(v).with_context(|| format!("not a JSON list of strings: {v}"))
}

/// The Dockerfile's `ENTRYPOINT` and `ENV`.
pub fn dockerfile() -> anyhow::Result<(Vec<String>, Env)> {
    let text = read("Dockerfile")?.replace("\\\n", " ");
    let mut entrypoint = None;
    let mut env = Env::new();
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("ENTRYPOINT ") {
            entrypoint = Some(json_words(v)?);
        } else if let Some(v) = l.strip_prefix("ENV ") {
            for kv in v.split_whitespace() {
                let (k, v) = kv.split_once('=').with_context(|| format!("ENV {kv}"))?;
                env.insert(k.to_string(), v.to_string());
            }
        }
    }
    Ok((entrypoint.context("no ENTRYPOINT")?, env))
}

/// Every service of `docker-compose.yml` with the commands its container runs.
pub fn compose() -> anyhow::Result<Vec<Service>> {
    let text = read("docker-compose.yml")?;
    let lines: Vec<&str> = text.lines().collect();
    let (entrypoint, image_env) = dockerfile()?;
    let services = block(&lines, find(&lines, "services:")?);
    let mut out = Vec::new();
    for (i, l) in services.iter().enumerate() {
        if l.trim().is_empty() || indent(l) != 2 {
            continue;
        }
        let name = l.trim().trim_end_matches(':').to_string();
        let origin = format!("docker-compose.yml, service {name}");
        let body = block(&services, i);
        let mut env = image_env.clone();
        if let Some(e) = compose_key(&lines, &body, "environment") {
            mapping(&lines, &e[1..], &mut env)?;
        }
        let command = compose_key(&lines, &body, "command").context("no command")?;
        let commands = match compose_key(&lines, &body, "entrypoint") {
            None => {
                let mut words = entrypoint.clone();
                words.extend(json_words(command[0]).with_context(|| origin.clone())?);
                vec![cmd(&origin, &words, None)]
            }
            Some(e) => {
                ensure!(
                    json_words(e[0])? == ["/bin/sh", "-c"] && command[1].trim() == "- |",
                    "{origin}: only `sh -c` with a `- |` script is read"
                );
                let depth = command[2..].iter().map(|l| indent(l)).min().unwrap_or(0);
                let script: Vec<&str> = command[2..]
                    .iter()
                    .map(|l| l.get(depth..).unwrap_or(""))
                    .collect();
                // `$$` is Compose's escape for the shell's `$`.
                shell(&script.join("\n").replace("$$", "$"), &env, &origin)?
            }
        };
        let scalar = |key| compose_key(&lines, &body, key).map(|v| v[0].trim().to_string());
        out.push(Service {
            origin,
            env,
            credentials: Vec::new(),
            commands,
            image: scalar("image"),
            build: scalar("build"),
            pull_policy: scalar("pull_policy"),
        });
    }
    Ok(out)
}

/// Every unit in `packaging/systemd/`, with `extra` (e.g. `CREDENTIALS_DIRECTORY`) in
/// the environment its commands are expanded with.
pub fn units(extra: &Env) -> anyhow::Result<Vec<Service>> {
    let dir = repo().join("packaging/systemd");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "service"));
    paths.sort();
    ensure!(!paths.is_empty(), "no units in {}", dir.display());
    let mut out = Vec::new();
    for path in paths {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let text = std::fs::read_to_string(&path)?;
        let mut env = Env::new();
        let mut credentials = Vec::new();
        let mut exec = Vec::new();
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = l.split_once('=') else {
                continue;
            };
            match key {
                "Environment" => {
                    let (k, v) = value.split_once('=').context("Environment=K=V")?;
                    env.insert(k.to_string(), v.to_string());
                }
                "LoadCredential" => {
                    credentials.push(value.split(':').next().unwrap_or_default().to_string())
                }
                "ExecStartPre" | "ExecStart" => exec.push((key, value)),
                k if k.starts_with("Exec") => bail!("{name}: {k}= is not read here"),
                _ => {}
            }
        }
        ensure!(
            exec.last().is_some_and(|(k, _)| *k == "ExecStart"),
            "{name}: no ExecStart"
        );
        let mut all = env.clone();
        all.extend(extra.clone());
        let mut commands = Vec::new();
        for (key, value) in exec {
            let origin = format!("{name} {key}");
            let words = systemd_words(value, &all).with_context(|| origin.clone())?;
            let program = words
                .first()
                .map(|w| w.trim_start_matches(['-', '@', '+', '!']));
            if program.is_some_and(|p| p.ends_with("/sh"))
                && words.get(1).is_some_and(|w| w == "-c")
            {
                let script = words.get(2).context("sh -c without a script")?;
                commands.extend(shell(script, &all, &origin)?);
            } else {
                commands.push(cmd(&origin, &words, None));
            }
        }
        out.push(Service {
            origin: name.into_owned(),
            env,
            credentials,
            commands,
            image: None,
            build: None,
            pull_policy: None,
        });
    }
    Ok(out)
}

fn cmd(origin: &str, words: &[String], stdin: Option<Stdin>) -> Cmd {
    let program = words.first().map(String::as_str).unwrap_or_default();
    Cmd {
        origin: origin.to_string(),
        program: program.rsplit('/').next().unwrap_or(program).to_string(),
        args: words.get(1..).unwrap_or_default().to_vec(),
        stdin,
    }
}

fn expand(name: &str, env: &Env) -> anyhow::Result<String> {
    env.get(name)
        .cloned()
        .with_context(|| format!("${name} is set nowhere"))
}

/// A systemd command line: words split at blanks, quotes removed, and a word that is a
/// whole `$NAME` or `${NAME}` replaced by its value.
fn systemd_words(line: &str, env: &Env) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (word, after) = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let end = rest[1..].find(q).context("an unclosed quote")? + 1;
                (rest[1..end].to_string(), &rest[end + 1..])
            }
            _ => {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                let w = &rest[..end];
                let name = w.strip_prefix("${").and_then(|w| w.strip_suffix('}'));
                let name = name.or_else(|| w.strip_prefix('$'));
                let w = match name {
                    Some(n) => expand(n, env)?,
                    None => w.to_string(),
                };
                (w, &rest[end..])
            }
        };
        words.push(word);
        rest = after.trim_start();
    }
    Ok(words)
}

/// The simple commands of a POSIX shell script, as far as these files need: quotes,
/// `$NAME`/`${NAME}` (an unset name fails), line continuations, comments, `;` `|` `||` `&&`
/// and line ends between commands, `< FILE` as stdin, `> FILE` dropped, and
/// `printf '%s\n' VALUE | cmd` as `VALUE` on cmd's stdin. Leading `exec`, `until`, `do`
/// and the like are dropped.
fn shell(script: &str, env: &Env, origin: &str) -> anyhow::Result<Vec<Cmd>> {
    let mut out = Vec::new();
    let (mut words, mut word, mut in_word) = (Vec::<String>::new(), String::new(), false);
    let (mut redirect, mut stdin, mut piped): (Option<char>, Option<Stdin>, Option<Vec<String>>) =
        (None, None, None);
    let mut chars = script.chars().peekable();
    let end_word = |words: &mut Vec<String>,
                    word: &mut String,
                    in_word: &mut bool,
                    redirect: &mut Option<char>,
                    stdin: &mut Option<Stdin>| {
        if *in_word {
            match redirect.take() {
                Some('<') => *stdin = Some(Stdin::File(std::mem::take(word))),
                Some(_) => word.clear(),
                None => words.push(std::mem::take(word)),
            }
        }
        *in_word = false;
    };
    loop {
        let c = chars.next();
        let sep = matches!(c, None | Some('\n' | ';' | '|' | '&'));
        if sep {
            end_word(
                &mut words,
                &mut word,
                &mut in_word,
                &mut redirect,
                &mut stdin,
            );
            let double = c.is_some() && chars.peek() == c.as_ref();
            if double {
                chars.next();
            }
            let start = words
                .iter()
                .take_while(|w| KEYWORDS.contains(&w.as_str()))
                .count();
            let simple: Vec<String> = words.drain(..).skip(start).collect();
            let mut input = stdin.take();
            if let Some(p) = piped.take()
                && p.len() == 3
                && p[0] == "printf"
                && p[1] == "%s\\n"
            {
                input = input.or(Some(Stdin::Text(format!("{}\n", p[2]))));
            }
            piped = (c == Some('|') && !double).then(|| simple.clone());
            if !simple.is_empty() {
                out.push(cmd(origin, &simple, input));
            }
            if c.is_none() {
                return Ok(out);
            }
            continue;
        }
        match c.unwrap_or_default() {
            ' ' | '\t' => end_word(
                &mut words,
                &mut word,
                &mut in_word,
                &mut redirect,
                &mut stdin,
            ),
            '#' if !in_word => while chars.next_if(|&c| c != '\n').is_some() {},
            '<' | '>' => {
                end_word(
                    &mut words,
                    &mut word,
                    &mut in_word,
                    &mut redirect,
                    &mut stdin,
                );
                redirect = c;
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(x) => {
                    word.push(x);
                    in_word = true;
                }
                None => bail!("{origin}: a trailing backslash"),
            },
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => word.push(x),
                        None => bail!("{origin}: an unclosed '"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('$' | '"' | '\\' | '`')) => word.push(x),
                            Some('\n') => {}
                            Some(x) => word.extend(['\\', x]),
                            None => bail!("{origin}: an unclosed \""),
                        },
                        Some('$') => word.push_str(&variable(&mut chars, env)?),
                        Some(x) => word.push(x),
                        None => bail!("{origin}: an unclosed \""),
                    }
                }
            }
            '$' => {
                in_word = true;
                word.push_str(&variable(&mut chars, env)?);
            }
            x => {
                in_word = true;
                word.push(x);
            }
        }
    }
}

/// The value of the `NAME` or `{NAME}` after a `$`.
fn variable(chars: &mut std::iter::Peekable<std::str::Chars>, env: &Env) -> anyhow::Result<String> {
    let mut name = String::new();
    if chars.next_if_eq(&'{').is_some() {
        for c in chars.by_ref() {
            if c == '}' {
                return expand(&name, env);
            }
            name.push(c);
        }
        bail!("an unclosed ${{");
    }
    while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
        name.push(c);
    }
    if name.is_empty() {
        return Ok("$".to_string());
    }
    expand(&name, env)
}
