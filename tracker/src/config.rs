//! The tracker's settings and where they come from. Each setting is taken from the first of:
//! command-line flag, `TRACKER_*` environment variable, TOML config file, built-in default.
//! The environment is read through a lookup function so the precedence is testable without
//! touching the process environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::Error;

/// Everything `tracker::run` needs to know.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind: one port serves gRPC and HTTP.
    pub listen: String,
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Target number of live copies of every chunk.
    pub replication: u32,
    /// A peer with no heartbeat for this long is `down`.
    pub peer_timeout: Duration,
    /// How much longer than `peer_timeout` a down holder still counts as a copy; after
    /// that its chunks are placed on other peers.
    pub repair_grace: Duration,
    /// How long a node has to complete a pushed task before it is pushed again.
    pub task_lease: Duration,
    /// Whether `Register` may create accounts.
    pub open_registration: bool,
    /// How long a session token stays valid.
    pub session_ttl: Duration,
    /// How long a ticket (the signed permission to fetch chunks of a file) stays valid;
    /// getters renew theirs by calling Locate again.
    pub ticket_ttl: Duration,
    /// Certificate chain and private key (PEM) to serve TLS with; plain when `None`.
    pub tls: Option<TlsFiles>,
}

/// Where the tracker's TLS certificate chain and private key are (both PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".to_string(),
            database_url: "sqlite://tracker.db?mode=rwc".to_string(),
            replication: 3,
            peer_timeout: Duration::from_secs(30),
            repair_grace: Duration::from_secs(60),
            task_lease: Duration::from_secs(60),
            open_registration: true,
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            ticket_ttl: Duration::from_secs(600),
            tls: None,
        }
    }
}

impl Config {
    /// A configuration for tests: an SQLite file inside `dir` and port 0.
    pub fn ephemeral(dir: &Path) -> Config {
        Config {
            listen: "127.0.0.1:0".to_string(),
            database_url: format!("sqlite://{}?mode=rwc", dir.join("tracker.db").display()),
            ..Config::default()
        }
    }

    /// Layers flags over the environment over the config file over the defaults.
    ///
    /// # Errors
    /// [`Error::Config`] when a value from the environment or the file does not parse, or
    /// the file is not valid TOML with known keys.
    pub fn resolve(
        args: &ConfigArgs,
        env: impl Fn(&str) -> Option<String>,
        file: Option<&str>,
    ) -> Result<Config, Error> {
        let file: FileConfig = match file {
            Some(text) => toml::from_str(text).map_err(|e| file_error(text, &e))?,
            None => FileConfig::default(),
        };
        let mut cfg = Config::default();
        if let Some(v) = pick(args.listen.clone(), env("TRACKER_LISTEN"), file.listen, Ok)? {
            cfg.listen = v;
        }
        if let Some(v) = pick(
            args.database_url.clone(),
            env("TRACKER_DATABASE_URL"),
            file.database_url,
            Ok,
        )? {
            cfg.database_url = v;
        }
        if let Some(v) = pick(
            args.replication,
            env("TRACKER_REPLICATION"),
            file.replication,
            |s| {
                s.parse()
                    .map_err(|_| format!("TRACKER_REPLICATION: invalid number {s:?}"))
            },
        )? {
            cfg.replication = v;
        }
        let file_timeout = file
            .peer_timeout
            .map(|s| parse_duration(&s).map_err(|e| Error::Config(format!("peer_timeout: {e}"))))
            .transpose()?;
        if let Some(v) = pick(
            args.peer_timeout,
            env("TRACKER_PEER_TIMEOUT"),
            file_timeout,
            |s| parse_duration(&s).map_err(|e| format!("TRACKER_PEER_TIMEOUT: {e}")),
        )? {
            cfg.peer_timeout = v;
        }
        let file_grace = file
            .repair_grace
            .map(|s| parse_duration(&s).map_err(|e| Error::Config(format!("repair_grace: {e}"))))
            .transpose()?;
        if let Some(v) = pick(
            args.repair_grace,
            env("TRACKER_REPAIR_GRACE"),
            file_grace,
            |s| parse_duration(&s).map_err(|e| format!("TRACKER_REPAIR_GRACE: {e}")),
        )? {
            cfg.repair_grace = v;
        }
        let file_lease = file
            .task_lease
            .map(|s| parse_duration(&s).map_err(|e| Error::Config(format!("task_lease: {e}"))))
            .transpose()?;
        if let Some(v) = pick(
            args.task_lease,
            env("TRACKER_TASK_LEASE"),
            file_lease,
            |s| parse_duration(&s).map_err(|e| format!("TRACKER_TASK_LEASE: {e}")),
        )? {
            cfg.task_lease = v;
        }
        let file_ticket_ttl = file
            .ticket_ttl
            .map(|s| parse_duration(&s).map_err(|e| Error::Config(format!("ticket_ttl: {e}"))))
            .transpose()?;
        if let Some(v) = pick(
            args.ticket_ttl,
            env("TRACKER_TICKET_TTL"),
            file_ticket_ttl,
            |s| parse_duration(&s).map_err(|e| format!("TRACKER_TICKET_TTL: {e}")),
        )? {
            cfg.ticket_ttl = v;
        }
        if let Some(v) = pick(
            args.open_registration,
            env("TRACKER_OPEN_REGISTRATION"),
            file.open_registration,
            |s| parse_bool(&s).map_err(|e| format!("TRACKER_OPEN_REGISTRATION: {e}")),
        )? {
            cfg.open_registration = v;
        }
        let cert = pick(
            args.tls_cert.clone(),
            env("TRACKER_TLS_CERT"),
            file.tls_cert,
            |s| Ok(PathBuf::from(s)),
        )?;
        let key = pick(
            args.tls_key.clone(),
            env("TRACKER_TLS_KEY"),
            file.tls_key,
            |s| Ok(PathBuf::from(s)),
        )?;
        cfg.tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Config(
                    "--tls-cert needs --tls-key (TRACKER_TLS_KEY, tls_key)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "--tls-key needs --tls-cert (TRACKER_TLS_CERT, tls_cert)".into(),
                ));
            }
        };
        if cfg.replication == 0 {
            return Err(Error::Config(
                "replication must be at least 1 (--replication, TRACKER_REPLICATION, replication)"
                    .into(),
            ));
        }
        if cfg.peer_timeout.is_zero() {
            return Err(Error::Config(
                "peer timeout must be positive (--peer-timeout, TRACKER_PEER_TIMEOUT, peer_timeout)".into(),
            ));
        }
        if cfg.task_lease.is_zero() {
            return Err(Error::Config(
                "task lease must be positive (--task-lease, TRACKER_TASK_LEASE, task_lease)".into(),
            ));
        }
        if cfg.ticket_ttl.is_zero() {
            return Err(Error::Config(
                "ticket ttl must be positive (--ticket-ttl, TRACKER_TICKET_TTL, ticket_ttl)".into(),
            ));
        }
        Ok(cfg)
    }
}

/// The first of flag, environment, file that is set.
fn pick<T>(
    flag: Option<T>,
    env: Option<String>,
    file: Option<T>,
    parse_env: impl FnOnce(String) -> Result<T, String>,
) -> Result<Option<T>, Error> {
    if flag.is_some() {
        return Ok(flag);
    }
    if let Some(s) = env.filter(|s| !s.is_empty()) {
        return parse_env(s).map(Some).map_err(Error::Config);
    }
    Ok(file)
}

/// A TOML error as one line naming where in the file it is and, when the line sets a
/// key, which key (the error alone says only what was wrong with the value).
fn file_error(text: &str, e: &toml::de::Error) -> Error {
    let Some(span) = e.span() else {
        return Error::Config(format!("config file: {}", e.message()));
    };
    let line_no = text
        .bytes()
        .take(span.start)
        .filter(|&b| b == b'\n')
        .count();
    let key = text
        .lines()
        .nth(line_no)
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    match key {
        Some(k) => Error::Config(format!(
            "config file, line {} ({k}): {}",
            line_no + 1,
            e.message()
        )),
        None => Error::Config(format!(
            "config file, line {}: {}",
            line_no + 1,
            e.message()
        )),
    }
}

/// `30s`, `2m`, `1h 30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("invalid boolean {s:?} (expected true or false)")),
    }
}

/// The settings a command line may give; `None` means "not on the command line".
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// Address for gRPC and HTTP [env: TRACKER_LISTEN] [default: 127.0.0.1:7070]
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// sqlite://… or postgres://… [env: TRACKER_DATABASE_URL] [default: sqlite://tracker.db?mode=rwc]
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// Target number of live copies of every chunk [env: TRACKER_REPLICATION] [default: 3]
    #[arg(long, global = true, value_name = "N")]
    pub replication: Option<u32>,
    /// A peer with no heartbeat for this long is down, e.g. 30s, 2m [env: TRACKER_PEER_TIMEOUT] [default: 30s]
    #[arg(long, global = true, value_name = "DUR", value_parser = parse_duration)]
    pub peer_timeout: Option<Duration>,
    /// How much longer than the peer timeout a down holder still counts as a copy before its chunks are re-placed [env: TRACKER_REPAIR_GRACE] [default: 60s]
    #[arg(long, global = true, value_name = "DUR", value_parser = parse_duration)]
    pub repair_grace: Option<Duration>,
    /// How long a node has to complete a replication task before it is pushed again [env: TRACKER_TASK_LEASE] [default: 60s]
    #[arg(long, global = true, value_name = "DUR", value_parser = parse_duration)]
    pub task_lease: Option<Duration>,
    /// How long a ticket to fetch chunks of a file stays valid [env: TRACKER_TICKET_TTL] [default: 10m]
    #[arg(long, global = true, value_name = "DUR", value_parser = parse_duration)]
    pub ticket_ttl: Option<Duration>,
    /// Whether peers may create accounts [env: TRACKER_OPEN_REGISTRATION] [default: true]
    #[arg(long, global = true, value_name = "BOOL", value_parser = parse_bool)]
    pub open_registration: Option<bool>,
    /// Serve TLS with this certificate chain (PEM; needs --tls-key) [env: TRACKER_TLS_CERT]
    #[arg(long, global = true, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM) [env: TRACKER_TLS_KEY]
    #[arg(long, global = true, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

/// The keys of the TOML config file.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    replication: Option<u32>,
    peer_timeout: Option<String>,
    repair_grace: Option<String>,
    task_lease: Option<String>,
    ticket_ttl: Option<String>,
    open_registration: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn should_use_defaults_when_nothing_is_set() {
        let cfg = Config::resolve(&ConfigArgs::default(), env(&[]), None).unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:7070");
        assert_eq!(cfg.database_url, "sqlite://tracker.db?mode=rwc");
        assert_eq!(cfg.replication, 3);
        assert_eq!(cfg.peer_timeout, Duration::from_secs(30));
        assert_eq!(cfg.repair_grace, Duration::from_secs(60));
        assert_eq!(cfg.task_lease, Duration::from_secs(60));
        assert_eq!(cfg.ticket_ttl, Duration::from_secs(600));
        assert!(cfg.open_registration);
        assert_eq!(cfg.tls, None);
    }

    #[test]
    fn tls_takes_both_files_from_any_source_and_refuses_one_alone() {
        let file = "tls_cert = \"f.crt\"\ntls_key = \"f.key\"\n";
        let cfg = Config::resolve(&ConfigArgs::default(), env(&[]), Some(file)).unwrap();
        let tls = cfg.tls.unwrap();
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str()),
            (Some("f.crt"), Some("f.key"))
        );
        let e = env(&[("TRACKER_TLS_CERT", "e.crt"), ("TRACKER_TLS_KEY", "e.key")]);
        let args = ConfigArgs {
            tls_key: Some("a.key".into()),
            ..ConfigArgs::default()
        };
        let tls = Config::resolve(&args, e, Some(file)).unwrap().tls.unwrap();
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str()),
            (Some("e.crt"), Some("a.key"))
        );
        let alone = ConfigArgs {
            tls_cert: Some("a.crt".into()),
            ..ConfigArgs::default()
        };
        let err = Config::resolve(&alone, env(&[]), None).unwrap_err();
        assert!(err.to_string().contains("--tls-key"), "{err}");
    }

    #[test]
    fn should_prefer_flag_over_env_over_file_over_default() {
        let file = r#"
            listen = "0.0.0.0:1"
            database_url = "sqlite://file.db"
            replication = 5
            peer_timeout = "2m"
            repair_grace = "5m"
            task_lease = "90s"
            ticket_ttl = "5m"
            open_registration = false
        "#;
        let from_file = Config::resolve(&ConfigArgs::default(), env(&[]), Some(file)).unwrap();
        assert_eq!(from_file.listen, "0.0.0.0:1");
        assert_eq!(from_file.database_url, "sqlite://file.db");
        assert_eq!(from_file.replication, 5);
        assert_eq!(from_file.peer_timeout, Duration::from_secs(120));
        assert_eq!(from_file.repair_grace, Duration::from_secs(300));
        assert_eq!(from_file.task_lease, Duration::from_secs(90));
        assert_eq!(from_file.ticket_ttl, Duration::from_secs(300));
        assert!(!from_file.open_registration);

        let e = env(&[
            ("TRACKER_LISTEN", "0.0.0.0:2"),
            ("TRACKER_REPLICATION", "4"),
            ("TRACKER_PEER_TIMEOUT", "45s"),
            ("TRACKER_REPAIR_GRACE", "200ms"),
            ("TRACKER_TICKET_TTL", "2m"),
            ("TRACKER_OPEN_REGISTRATION", "true"),
        ]);
        let from_env = Config::resolve(&ConfigArgs::default(), &e, Some(file)).unwrap();
        assert_eq!(from_env.listen, "0.0.0.0:2");
        assert_eq!(from_env.database_url, "sqlite://file.db");
        assert_eq!(from_env.replication, 4);
        assert_eq!(from_env.peer_timeout, Duration::from_secs(45));
        assert_eq!(from_env.repair_grace, Duration::from_millis(200));
        assert_eq!(from_env.task_lease, Duration::from_secs(90));
        assert_eq!(from_env.ticket_ttl, Duration::from_secs(120));
        assert!(from_env.open_registration);

        let args = ConfigArgs {
            listen: Some("0.0.0.0:3".into()),
            replication: Some(2),
            open_registration: Some(false),
            repair_grace: Some(Duration::from_secs(1)),
            ticket_ttl: Some(Duration::from_secs(30)),
            ..ConfigArgs::default()
        };
        let from_flags = Config::resolve(&args, &e, Some(file)).unwrap();
        assert_eq!(from_flags.ticket_ttl, Duration::from_secs(30));
        assert_eq!(from_flags.repair_grace, Duration::from_secs(1));
        assert_eq!(from_flags.listen, "0.0.0.0:3");
        assert_eq!(from_flags.replication, 2);
        assert_eq!(from_flags.peer_timeout, Duration::from_secs(45));
        assert!(!from_flags.open_registration);
    }

    #[test]
    fn should_refuse_bad_values_naming_the_source() {
        let bad_env = Config::resolve(
            &ConfigArgs::default(),
            env(&[("TRACKER_PEER_TIMEOUT", "soon")]),
            None,
        )
        .unwrap_err();
        assert!(bad_env.to_string().contains("TRACKER_PEER_TIMEOUT"));
        let bad_grace = Config::resolve(
            &ConfigArgs::default(),
            env(&[("TRACKER_REPAIR_GRACE", "later")]),
            None,
        )
        .unwrap_err();
        assert!(bad_grace.to_string().contains("TRACKER_REPAIR_GRACE"));
        let bad_ttl = Config::resolve(
            &ConfigArgs::default(),
            env(&[("TRACKER_TICKET_TTL", "a while")]),
            None,
        )
        .unwrap_err();
        assert!(bad_ttl.to_string().contains("TRACKER_TICKET_TTL"));
        let zero_ttl = ConfigArgs {
            ticket_ttl: Some(Duration::ZERO),
            ..ConfigArgs::default()
        };
        assert!(Config::resolve(&zero_ttl, env(&[]), None).is_err());
        let bad_key = Config::resolve(&ConfigArgs::default(), env(&[]), Some("lisen = \"x\""));
        assert!(bad_key.is_err());
        let bad_type = Config::resolve(
            &ConfigArgs::default(),
            env(&[]),
            Some("listen = \"x\"\nreplication = \"three\"\n"),
        )
        .unwrap_err();
        assert!(
            bad_type
                .to_string()
                .starts_with("config file, line 2 (replication): "),
            "{bad_type}"
        );
        let zero = ConfigArgs {
            replication: Some(0),
            ..ConfigArgs::default()
        };
        assert!(Config::resolve(&zero, env(&[]), None).is_err());
    }

    /// The keys a config file may hold, with the environment variable of each.
    const KEYS: &[(&str, &str)] = &[
        ("listen", "TRACKER_LISTEN"),
        ("database_url", "TRACKER_DATABASE_URL"),
        ("replication", "TRACKER_REPLICATION"),
        ("peer_timeout", "TRACKER_PEER_TIMEOUT"),
        ("repair_grace", "TRACKER_REPAIR_GRACE"),
        ("task_lease", "TRACKER_TASK_LEASE"),
        ("ticket_ttl", "TRACKER_TICKET_TTL"),
        ("open_registration", "TRACKER_OPEN_REGISTRATION"),
        ("tls_cert", "TRACKER_TLS_CERT"),
        ("tls_key", "TRACKER_TLS_KEY"),
    ];

    /// Values of every TOML kind, and strings that are nearly durations, numbers or booleans.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => word().prop_map(|w| format!("{w:?}")),
            1 => word().prop_map(|w| format!("'{w}'")),
            1 => any::<i64>().prop_map(|n| n.to_string()),
            1 => "[0-9]{15,25}",
            1 => any::<bool>().prop_map(|b| b.to_string()),
            1 => any::<f64>().prop_map(|f| format!("{f:?}")),
            1 => Just("[1, \"a\"]".to_string()),
            1 => Just("{ a = 1 }".to_string()),
            1 => "\\PC{0,8}",
        ]
    }

    /// Raw text that is nearly a duration, a number or a boolean.
    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0s".to_string()),
            Just("1ns".to_string()),
            Just("18446744073709551615s".to_string()),
            Just("99999999999999999999999h".to_string()),
            Just("584942417355y".to_string()),
            Just("yes".to_string()),
            Just("".to_string()),
            "[0-9]{1,3}[a-z]{0,3}( [0-9]{1,3}[a-z]{0,3})?",
            "\\PC{0,12}",
        ]
    }

    fn line() -> impl Strategy<Value = String> {
        let key = prop::sample::select(KEYS).prop_map(|(k, _)| k.to_string());
        prop_oneof![
            8 => (key.clone(), value()).prop_map(|(k, v)| format!("{k} = {v}")),
            1 => key.prop_map(|k| format!("[{k}]")),
            1 => "\\PC{0,20}",
        ]
    }

    /// A failure names a key (as in the file, the environment or a flag) or the file.
    fn names_the_source(msg: &str) -> bool {
        msg.contains("config file")
            || KEYS.iter().any(|(k, e)| {
                msg.contains(k)
                    || msg.contains(e)
                    || msg.contains(&format!("--{}", k.replace('_', "-")))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn should_never_panic_on_any_config_file_text(text in "\\PC{0,200}") {
            if let Err(e) = Config::resolve(&ConfigArgs::default(), env(&[]), Some(&text)) {
                prop_assert!(matches!(e, Error::Config(_)), "{e:?}");
                prop_assert!(names_the_source(&e.to_string()), "{e}");
            }
        }

        #[test]
        fn should_refuse_bad_settings_naming_the_key(
            keys in prop::sample::subsequence(KEYS, 0..=KEYS.len()),
            values in prop::collection::vec(value(), KEYS.len()),
            junk in prop::option::of(line()),
            vars in prop::collection::vec((prop::sample::select(KEYS), word()), 0..3),
        ) {
            let mut lines: Vec<String> = keys
                .iter()
                .zip(&values)
                .map(|((k, _), v)| format!("{k} = {v}"))
                .collect();
            lines.extend(junk);
            let doc = lines.join("\n");
            let vars: Vec<(&str, String)> = vars.iter().map(|((_, e), v)| (*e, v.clone())).collect();
            let pairs: Vec<(&str, &str)> = vars.iter().map(|(e, v)| (*e, v.as_str())).collect();
            if let Err(e) = Config::resolve(&ConfigArgs::default(), env(&pairs), Some(&doc)) {
                prop_assert!(matches!(e, Error::Config(_)), "{e:?}");
                prop_assert!(names_the_source(&e.to_string()), "{e}\n{doc}");
            }
        }
    }

    #[test]
    fn ephemeral_uses_port_zero_and_a_file_in_the_dir() {
        let cfg = Config::ephemeral(Path::new("/tmp/x"));
        assert_eq!(cfg.listen, "127.0.0.1:0");
        assert_eq!(cfg.database_url, "sqlite:///tmp/x/tracker.db?mode=rwc");
    }
}
