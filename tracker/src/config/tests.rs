//! Precedence, checks and messages of [`Cli::load_from`], with the environment and the
//! config file passed in (never the process's own), so the tests may run in parallel.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

/// Loads `tracker ARGS` with the variables `vars`; `file`, when given, is the text of the
/// config file `tracker.toml`, which the command line names.
fn load_cli(args: &[&str], vars: &[(&str, &str)], file: Option<&str>) -> Result<Cli, LoadError> {
    let mut argv = vec!["tracker"];
    if file.is_some() {
        argv.extend(["--config", "tracker.toml"]);
    }
    argv.extend(args);
    let text = file.map(str::to_owned);
    load(
        argv.into_iter().map(OsString::from).collect(),
        env(vars),
        move |path| {
            assert_eq!(path, Path::new("tracker.toml"));
            text.clone()
                .ok_or_else(|| std::io::ErrorKind::NotFound.into())
        },
    )
}

/// The settings of `tracker ARGS`, or the message a user would see.
fn resolve(args: &[&str], vars: &[(&str, &str)], file: Option<&str>) -> Result<Config, String> {
    load_cli(args, vars, file)
        .map(|cli| cli.settings)
        .map_err(|e| e.to_string())
}

#[test]
fn should_declare_a_valid_command() {
    Cli::command().debug_assert();
}

#[test]
fn should_use_defaults_when_nothing_is_set() {
    for cfg in [resolve(&[], &[], None).unwrap(), Config::default()] {
        assert_eq!(cfg.listen, "127.0.0.1:7070");
        assert_eq!(cfg.database_url, "sqlite://tracker.db?mode=rwc");
        assert_eq!(cfg.replication, 3);
        assert_eq!(cfg.peer_timeout, Duration::from_secs(30));
        assert_eq!(cfg.repair_grace, Duration::from_secs(60));
        assert_eq!(cfg.task_lease, Duration::from_secs(60));
        assert_eq!(cfg.ticket_ttl, Duration::from_secs(600));
        assert_eq!(cfg.cert_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(cfg.session_ttl, Duration::from_secs(30 * 24 * 3600));
        assert!(cfg.open_registration);
        assert_eq!(cfg.tls, None);
    }
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
        cert_ttl = "12h"
        open_registration = false
    "#;
    let from_file = resolve(&[], &[], Some(file)).unwrap();
    assert_eq!(from_file.listen, "0.0.0.0:1");
    assert_eq!(from_file.database_url, "sqlite://file.db");
    assert_eq!(from_file.replication, 5);
    assert_eq!(from_file.peer_timeout, Duration::from_secs(120));
    assert_eq!(from_file.repair_grace, Duration::from_secs(300));
    assert_eq!(from_file.task_lease, Duration::from_secs(90));
    assert_eq!(from_file.ticket_ttl, Duration::from_secs(300));
    assert_eq!(from_file.cert_ttl, Duration::from_secs(12 * 3600));
    assert!(!from_file.open_registration);

    let vars = [
        ("TRACKER_LISTEN", "0.0.0.0:2"),
        ("TRACKER_REPLICATION", "4"),
        ("TRACKER_PEER_TIMEOUT", "45s"),
        ("TRACKER_REPAIR_GRACE", "200ms"),
        ("TRACKER_TICKET_TTL", "2m"),
        ("TRACKER_CERT_TTL", "1h"),
        ("TRACKER_OPEN_REGISTRATION", "true"),
        // Empty counts as unset: the file's value stands.
        ("TRACKER_DATABASE_URL", ""),
    ];
    let from_env = resolve(&[], &vars, Some(file)).unwrap();
    assert_eq!(from_env.listen, "0.0.0.0:2");
    assert_eq!(from_env.database_url, "sqlite://file.db");
    assert_eq!(from_env.replication, 4);
    assert_eq!(from_env.peer_timeout, Duration::from_secs(45));
    assert_eq!(from_env.repair_grace, Duration::from_millis(200));
    assert_eq!(from_env.task_lease, Duration::from_secs(90));
    assert_eq!(from_env.ticket_ttl, Duration::from_secs(120));
    assert_eq!(from_env.cert_ttl, Duration::from_secs(3600));
    assert!(from_env.open_registration);

    let flags = [
        "--listen",
        "0.0.0.0:3",
        "--replication=2",
        "--open-registration",
        "false",
        "--repair-grace",
        "1s",
    ];
    // Flags also count after the subcommand.
    let after = ["serve", "--ticket-ttl", "30s", "--cert-ttl", "2h"];
    let cli = load_cli(&[&flags[..], &after[..]].concat(), &vars, Some(file)).unwrap();
    assert_eq!(cli.command, Some(Command::Serve));
    let from_flags = cli.settings;
    assert_eq!(from_flags.ticket_ttl, Duration::from_secs(30));
    assert_eq!(from_flags.cert_ttl, Duration::from_secs(2 * 3600));
    assert_eq!(from_flags.repair_grace, Duration::from_secs(1));
    assert_eq!(from_flags.listen, "0.0.0.0:3");
    assert_eq!(from_flags.replication, 2);
    assert_eq!(from_flags.peer_timeout, Duration::from_secs(45));
    assert_eq!(from_flags.task_lease, Duration::from_secs(90));
    assert!(!from_flags.open_registration);
}

#[test]
fn should_take_the_config_file_from_the_flag_over_the_variable() {
    let read = |path: &Path| match path.to_str() {
        Some("flag.toml") => Ok("replication = 7".to_string()),
        Some("env.toml") => Ok("replication = 8".to_string()),
        _ => Err(std::io::ErrorKind::NotFound.into()),
    };
    let replication = |argv: &[&str], vars: &[(&str, &str)]| {
        let argv = argv.iter().map(OsString::from).collect();
        load(argv, env(vars), read).map(|cli| cli.settings.replication)
    };
    let var = [("TRACKER_CONFIG", "env.toml")];
    assert_eq!(replication(&["tracker"], &var).unwrap(), 8);
    let flag = ["tracker", "--config", "flag.toml"];
    assert_eq!(replication(&flag, &var).unwrap(), 7);
    assert_eq!(
        replication(&["tracker"], &[("TRACKER_CONFIG", "")]).unwrap(),
        3
    );
    let missing = replication(&["tracker", "--config", "none.toml"], &[]).unwrap_err();
    assert!(
        missing
            .to_string()
            .starts_with("reading config file none.toml: "),
        "{missing}"
    );
}

#[test]
fn should_keep_the_subcommands_and_the_log_format() {
    let cli = load_cli(
        &["user", "add", "carol", "--database-url", "sqlite://u.db"],
        &[("TRACKER_LOG_FORMAT", "json")],
        None,
    )
    .unwrap();
    assert_eq!(
        cli.command,
        Some(Command::User(UserCommand::Add {
            name: "carol".into()
        }))
    );
    assert_eq!(cli.log_format, LogFormat::Json);
    assert_eq!(cli.settings.database_url, "sqlite://u.db");
    assert_eq!(
        load_cli(&["migrate"], &[], None).unwrap().command,
        Some(Command::Migrate)
    );
    assert!(matches!(
        load_cli(&["--no-such-flag"], &[], None),
        Err(LoadError::Usage(_))
    ));
}

#[test]
fn should_show_each_variable_and_default_in_the_help() {
    let help = Cli::command().render_help().to_string();
    for expected in [
        "[env: TRACKER_LISTEN]",
        "[default: 127.0.0.1:7070]",
        "[env: TRACKER_CONFIG]",
        "[env: TRACKER_TLS_KEY]",
        "[env: TRACKER_TICKET_TTL]",
        "[default: 10m]",
        "[default: true]",
    ] {
        assert!(help.contains(expected), "no {expected} in\n{help}");
    }
    let Err(LoadError::Usage(shown)) = load_cli(&["user", "--help"], &[], None) else {
        panic!("--help is not a usage error");
    };
    assert!(
        shown.to_string().contains("[env: TRACKER_DATABASE_URL]"),
        "{shown}"
    );
}

#[test]
fn tls_takes_both_files_from_any_source_and_refuses_one_alone() {
    let file = "tls_cert = \"f.crt\"\ntls_key = \"f.key\"\n";
    let tls = resolve(&[], &[], Some(file)).unwrap().tls.unwrap();
    assert_eq!(
        (tls.cert.to_str(), tls.key.to_str()),
        (Some("f.crt"), Some("f.key"))
    );
    let vars = [("TRACKER_TLS_CERT", "e.crt"), ("TRACKER_TLS_KEY", "e.key")];
    let tls = resolve(&["--tls-key", "a.key"], &vars, Some(file))
        .unwrap()
        .tls
        .unwrap();
    assert_eq!(
        (tls.cert.to_str(), tls.key.to_str()),
        (Some("e.crt"), Some("a.key"))
    );
    let alone = resolve(&["--tls-cert", "a.crt"], &[], None).unwrap_err();
    assert_eq!(
        alone,
        "--tls-cert needs --tls-key (TRACKER_TLS_KEY, tls_key)"
    );
}

#[test]
fn should_refuse_bad_values_naming_the_source() {
    let bad_env = resolve(&[], &[("TRACKER_PEER_TIMEOUT", "soon")], None).unwrap_err();
    assert!(
        bad_env.starts_with("TRACKER_PEER_TIMEOUT: ") && bad_env.contains("invalid duration"),
        "{bad_env}"
    );
    let bad_grace = resolve(&[], &[("TRACKER_REPAIR_GRACE", "later")], None).unwrap_err();
    assert!(
        bad_grace.starts_with("TRACKER_REPAIR_GRACE: "),
        "{bad_grace}"
    );
    let bad_ttl = resolve(&[], &[("TRACKER_TICKET_TTL", "a while")], None).unwrap_err();
    assert!(bad_ttl.starts_with("TRACKER_TICKET_TTL: "), "{bad_ttl}");
    let bad_format = resolve(&[], &[("TRACKER_LOG_FORMAT", "xml")], None).unwrap_err();
    assert!(
        bad_format.starts_with("TRACKER_LOG_FORMAT: "),
        "{bad_format}"
    );
    assert_eq!(
        resolve(&["--ticket-ttl", "0s"], &[], None).unwrap_err(),
        "ticket ttl must be positive (--ticket-ttl, TRACKER_TICKET_TTL, ticket_ttl)"
    );
    assert_eq!(
        resolve(&[], &[("TRACKER_CERT_TTL", "0s")], None).unwrap_err(),
        "cert ttl must be positive (--cert-ttl, TRACKER_CERT_TTL, cert_ttl)"
    );
    let bad_cert_ttl = resolve(&[], &[], Some("cert_ttl = \"forever\"")).unwrap_err();
    assert!(
        bad_cert_ttl.starts_with("config file, line 1 (cert_ttl): "),
        "{bad_cert_ttl}"
    );
    assert_eq!(
        resolve(&[], &[("TRACKER_REPLICATION", "0")], None).unwrap_err(),
        "replication must be at least 1 (--replication, TRACKER_REPLICATION, replication)"
    );
    // A flag's own bad value is clap's usage error, as before.
    assert!(matches!(
        load_cli(&["--replication", "three"], &[], None),
        Err(LoadError::Usage(_))
    ));
}

#[test]
fn should_refuse_bad_file_settings_naming_the_line_and_key() {
    let unknown = resolve(&[], &[], Some("listen = \"x\"\nlisen = \"y\"\n")).unwrap_err();
    assert!(
        unknown.starts_with("config file, line 2 (lisen): unknown key, expected one of listen,"),
        "{unknown}"
    );
    let bad_type =
        resolve(&[], &[], Some("listen = \"x\"\nreplication = \"three\"\n")).unwrap_err();
    assert!(
        bad_type.starts_with("config file, line 2 (replication): "),
        "{bad_type}"
    );
    // Checked even when a flag overrides it.
    let overridden = resolve(
        &["--peer-timeout", "1s"],
        &[],
        Some("peer_timeout = \"soon\""),
    );
    assert!(
        overridden
            .unwrap_err()
            .starts_with("config file, line 1 (peer_timeout): ")
    );
    let table = resolve(&[], &[], Some("[listen]\nport = 1\n")).unwrap_err();
    assert!(
        table.starts_with("config file, line 1 (listen): expected a string"),
        "{table}"
    );
    let syntax = resolve(&[], &[], Some("listen = \n")).unwrap_err();
    assert!(
        syntax.starts_with("config file, line 1 (listen): "),
        "{syntax}"
    );
    let same = resolve(
        &[],
        &[],
        Some("replication = \"3\"\nopen_registration = \"no\"\n"),
    )
    .unwrap();
    assert_eq!((same.replication, same.open_registration), (3, false));
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
    ("cert_ttl", "TRACKER_CERT_TTL"),
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
        Just("-5".to_string()),
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
        if let Err(e) = load_cli(&[], &[], Some(&text)) {
            prop_assert!(matches!(e, LoadError::Settings(Error::Config(_))), "{e:?}");
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
        if let Err(e) = load_cli(&[], &pairs, Some(&doc)) {
            prop_assert!(matches!(e, LoadError::Settings(Error::Config(_))), "{e:?}");
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
