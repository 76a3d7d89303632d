//! The start-up checks: `--check-config` with secrets masked, exit 2 naming a bad key, a
//! warning for an unreachable OpenCode.

use super::*;

/// `--check-config` prints the effective configuration (file, environment and flags merged)
/// with the upstream password and the API keys masked, and exits 0 without serving.
#[tokio::test]
async fn check_config_prints_the_configuration_with_secrets_masked() {
    let opts = GatewayOptions::default()
        .config(
            "[opencode]\npassword = \"pw-from-file-31337\"\n[auth]\napi_keys = [\"key-from-file-1\"]\n\
             [prompt]\ndeadline_secs = 77\n",
        )
        .env("PORTATEK_API_KEYS", "key-from-env-1,key-from-env-2")
        .args(["--check-config"]);
    let (status, out, err) = Gateway::run_expect_exit(opts).await;
    assert!(status.success(), "{status}\n{out}\n{err}");
    let shown: toml::Value = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(
        shown["prompt"]["deadline_secs"].as_integer(),
        Some(77),
        "{out}"
    );
    assert_eq!(
        shown["opencode"]["base_url"].as_str(),
        Some(UNUSED_OPENCODE_URL),
        "the flag is merged: {out}"
    );
    assert_eq!(shown["opencode"]["password"].as_str(), Some("********"));
    let keys = shown["auth"]["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "the environment's keys win: {out}");
    assert!(keys.iter().all(|k| k.as_str() == Some("********")), "{out}");
    for secret in [
        "pw-from-file-31337",
        "key-from-file-1",
        "key-from-env-1",
        "key-from-env-2",
    ] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} printed:\n{out}\n{err}"
        );
    }
    assert!(
        !out.contains(support::gateway::READY_PREFIX),
        "it served: {out}"
    );
}

/// `--check-config` with an invalid value exits 2 naming the key.
#[tokio::test]
async fn check_config_refuses_an_invalid_value_with_exit_2() {
    for (toml, key) in [
        ("[limits]\nmax_body_bytes = 0\n", "limits.max_body_bytes"),
        (
            "[rate_limits]\nrequests_per_minute = -1\n",
            "requests_per_minute",
        ),
        ("[metrics]\nlisten = \"nowhere\"\n", "listen"),
    ] {
        let opts = GatewayOptions::default()
            .config(toml)
            .args(["--check-config"]);
        let (status, out, err) = Gateway::run_expect_exit(opts).await;
        assert_eq!(status.code(), Some(2), "{toml}: {status}\n{out}\n{err}");
        assert!(err.contains(key), "{toml}: stderr should name {key}: {err}");
    }
}

/// A `[[rate_limits.keys]]` override whose `key_id` is not of the form the gateway names keys
/// by (`k` + 16 hex digits) can never apply: it is refused (exit 2 naming the key), not
/// silently ignored — the likely mistake is pasting the API key itself, which `--check-config`
/// would then print in clear.
#[tokio::test]
async fn a_key_id_that_can_match_no_key_is_refused() {
    let toml = "[rate_limits]\nrequests_per_minute = 5\n[[rate_limits.keys]]\n\
                key_id = \"sk-live-secret-key-123\"\nrequests_per_minute = 100\n";
    let opts = GatewayOptions::default()
        .config(toml)
        .args(["--check-config"]);
    let (status, out, err) = Gateway::run_expect_exit(opts).await;
    assert!(
        !out.contains("sk-live-secret-key-123"),
        "printed in clear:\n{out}"
    );
    assert_eq!(status.code(), Some(2), "{status}\n{err}");
    assert!(err.contains("key_id"), "stderr should name the key: {err}");
}

/// A gateway pointed at an OpenCode that does not answer says so in its log at start, and is
/// not ready (503) while live (200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_opencode_is_reported_at_start() {
    let gw = Gateway::start(UNUSED_OPENCODE_URL).await;
    let warned = eventually(Duration::from_secs(10), || async {
        gw.logs().contains("OpenCode is not reachable")
    })
    .await;
    assert!(warned, "no start-up warning:\n{}", gw.logs());
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains("OpenCode is not reachable"))
        .unwrap()
        .to_string();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(UNUSED_OPENCODE_URL), "names the URL: {line}");
    let client = test_client();
    let health = client
        .get(format!("{}/health", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let live = client
        .get(format!("{}/livez", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
}
