//! Layering and validation, end to end: a file, an environment and flags in, a `Config` or
//! the error naming the key out.

use super::*;
use std::collections::HashMap;
use std::time::Duration;

fn load(cli: Cli, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_from(&cli, |k| env.get(k).cloned())
}

fn with_file(path: &Path) -> Cli {
    Cli {
        config: Some(path.to_path_buf()),
        ..Cli::default()
    }
}

fn err(cli: Cli, env: &[(&str, &str)]) -> String {
    load(cli, env).unwrap_err().to_string()
}

#[test]
fn defaults_are_valid_and_loopback() {
    let c = load(Cli::default(), &[]).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.limits.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(c.prompt.deadline, Duration::from_secs(300));
    assert_eq!(c.opencode.connect_timeout, Duration::from_millis(2_000));
    assert!(!c.prompt.tools_enabled);
}

#[test]
fn precedence_file_env_cli() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:1\"\n[opencode]\nbase_url = \"http://127.0.0.1:2\"\nusername = \"file\"\n",
    )
    .unwrap();
    let c = load(with_file(&path), &[]).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:1");
    assert_eq!(c.opencode.username, "file");

    let c = load(
        with_file(&path),
        &[
            ("PORTATEK_LISTEN", "127.0.0.1:3"),
            ("OPENCODE_BASE_URL", "http://127.0.0.1:4"),
            ("OPENCODE_SERVER_USERNAME", "env"),
            ("OPENCODE_SERVER_PASSWORD", "pw"),
            ("PORTATEK_API_KEYS", " a, b ,,"),
        ],
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:3");
    assert_eq!(c.opencode.base_url.as_deref(), Some("http://127.0.0.1:4"));
    assert_eq!(c.opencode.username, "env");
    assert_eq!(c.opencode.password.as_deref(), Some("pw"));
    assert_eq!(c.auth.api_keys, vec!["a", "b"]);

    let cli = Cli {
        config: Some(path),
        listen: Some("127.0.0.1:5".into()),
        opencode_url: Some("http://127.0.0.1:6".into()),
        ..Cli::default()
    };
    let c = load(cli, &[("PORTATEK_LISTEN", "127.0.0.1:3")]).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:5");
    assert_eq!(c.opencode.base_url.as_deref(), Some("http://127.0.0.1:6"));
}

#[test]
fn config_path_from_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[prompt]\ndeadline_secs = 7\n").unwrap();
    let c = load(
        Cli::default(),
        &[("PORTATEK_CONFIG", path.to_str().unwrap())],
    )
    .unwrap();
    assert_eq!(c.prompt.deadline, Duration::from_secs(7));
}

#[test]
fn errors_name_the_key() {
    assert!(err(Cli::default(), &[("PORTATEK_LISTEN", "nonsense")]).contains("`listen`"));
    let flag = Cli {
        listen: Some("nonsense".into()),
        ..Cli::default()
    };
    assert!(err(flag, &[]).contains("`listen`"));
    assert!(err(Cli::default(), &[("PORTATEK_LOG_FORMAT", "xml")]).contains("log_format"));
    assert_eq!(
        load(Cli::default(), &[("PORTATEK_LOG_FORMAT", "JSON")])
            .unwrap()
            .log_format,
        LogFormat::Json
    );
    assert!(err(Cli::default(), &[("OPENCODE_BASE_URL", "ftp://x")]).contains("opencode.base_url"));
    let e = err(Cli::default(), &[("PORTATEK_LISTEN", "0.0.0.0:8080")]);
    assert!(e.contains("auth.api_keys"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    for (text, key) in [
        ("[prompt]\ndeadline_secs = \"soon\"\n", "deadline_secs"),
        ("[prompt]\ndeadline_secs = 0\n", "prompt.deadline_secs"),
        (
            "[opencode]\nconnect_timeout_ms = 0\n",
            "opencode.connect_timeout_ms",
        ),
        ("[prompt]\ndeadline = 3\n", "deadline"),
        ("listen = \"nowhere\"\n", "listen"),
    ] {
        std::fs::write(&path, text).unwrap();
        let e = err(with_file(&path), &[]);
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[test]
fn non_loopback_ok_with_keys_or_explicitly_disabled_auth() {
    load(
        Cli::default(),
        &[
            ("PORTATEK_LISTEN", "0.0.0.0:8080"),
            ("PORTATEK_API_KEYS", "k"),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "listen = \"0.0.0.0:8080\"\n[auth]\ndisabled = true\n",
    )
    .unwrap();
    load(with_file(&path), &[]).unwrap();
}

/// config.example.toml must parse and equal the defaults (so it documents them truthfully).
#[test]
fn example_file_matches_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let parsed = Config::from_file(&path).unwrap();
    assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
}

#[test]
fn upstreams_and_store_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let check = |toml: &str| {
        std::fs::write(&path, toml).unwrap();
        load(with_file(&path), &[])
    };
    let two = "[[upstreams]]\nurl = \"http://10.0.0.1:4096\"\n[[upstreams]]\nname = \"b\"\nurl = \"http://10.0.0.2:4096\"\npassword = \"pw\"\nweight = 3\n";
    let c = check(two).unwrap();
    assert_eq!(c.upstream_name(0), "upstream-1", "unnamed: by position");
    assert_eq!(c.upstream_name(1), "b");
    assert!(!c.opencode_on_this_host(), "remote upstreams");
    let masked = c.masked_toml();
    assert!(!masked.contains("\"pw\""), "{masked}");

    let cases = [
        ("[[upstreams]]\nname = \"a\"\nurl = \"http://h:1\"\n[[upstreams]]\nname = \"a\"\nurl = \"http://h:2\"\n", "upstreams[1].name"),
        ("[[upstreams]]\nurl = \"ftp://h\"\n", "upstreams[0].url"),
        ("[[upstreams]]\nurl = \"http://h:1\"\nweight = 0\n", "upstreams[0].weight"),
        ("[opencode]\nbase_url = \"http://h:1\"\n[[upstreams]]\nurl = \"http://h:2\"\n", "`upstreams`"),
        ("[store]\nkind = \"redis\"\n", "store.url"),
        ("[store]\nkind = \"redis\"\nurl = \"http://h:6379\"\n", "store.url"),
        ("[balancing]\nfailure_threshold = 0\n", "balancing.failure_threshold"),
        ("[store]\nlease_ttl_secs = 0\n", "store.lease_ttl_secs"),
        ("[sessions]\ndeployment = \" \"\n", "sessions.deployment"),
        ("[sessions]\ndeployment = \"a\\nb\"\n", "sessions.deployment"),
    ];
    for (toml, key) in cases {
        let e = check(toml).unwrap_err().to_string();
        assert!(e.contains(key), "{toml}: {e}");
    }
    std::fs::write(&path, "[store]\nkind = \"redis\"\n").unwrap();
    let c = load(
        with_file(&path),
        &[("PORTATEK_REDIS_URL", "redis://:secret@127.0.0.1:6379/0")],
    )
    .unwrap();
    let masked = c.masked_toml();
    assert!(
        !masked.contains("secret") && masked.contains("127.0.0.1:6379"),
        "{masked}"
    );
}

#[test]
fn the_sweep_and_the_state_dir_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let toml =
        "[sessions]\nsweep_interval_secs = 0\nstate_dir = \"/file\"\ndeployment = \"prod\"\n";
    std::fs::write(&path, toml).unwrap();
    let c = load(with_file(&path), &[]).unwrap();
    assert_eq!(c.sessions.sweep_interval, Duration::ZERO, "0 = no sweep");
    assert_eq!(c.sessions.state_dir, Some(PathBuf::from("/file")));
    assert_eq!(c.sessions.deployment.as_deref(), Some("prod"));
    let c = load(with_file(&path), &[("PORTATEK_STATE_DIR", "/env")]).unwrap();
    assert_eq!(
        c.sessions.state_dir,
        Some(PathBuf::from("/env")),
        "env over file"
    );
}
