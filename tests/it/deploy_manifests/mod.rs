#![allow(unsafe_code, clippy::unwrap_used, clippy::expect_used)]
//! The deployment files, checked without a cluster or a registry: the Kubernetes manifests in
//! `deploy/k8s/` validate against the Kubernetes 1.30 schemas (kubernetes-validate, offline),
//! the ConfigMap's configuration is one the gateway accepts, the manifests agree with the image,
//! and the Dockerfile's build stages have what they need (the pinned OpenCode version, every
//! file cargo wants).
//!
//! kubernetes-validate comes from PyPI (`.ci/prepare-kubernetes-validate.sh`). Without it the
//! tests that need it print `skipped: …` and pass, unless `PORTATEK_REQUIRE_TOOLS=1` (as
//! `.ci/run` sets), where they fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod docker;
mod helpers;

use docker::*;
use helpers::*;

// ---------------------------------------------------------------------------------------------

/// Every manifest is a valid Kubernetes 1.30 object, with no unknown field, kind or apiVersion,
/// and every file holds at least one object.
#[test]
fn manifests_are_valid_kubernetes_objects() {
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    assert_all_validated(&tool, &manifests());
}

/// The validation above can fail: a misspelt field (strict schemas) and an unknown kind (only a
/// warning from kubernetes-validate) in a copy of the manifests are both reported.
#[test]
fn validation_catches_unknown_fields_and_kinds() {
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    let dir = tempfile::tempdir().expect("create a temp dir");
    let deployment = read("deploy/k8s/deployment.yaml");
    let pdb = read("deploy/k8s/poddisruptionbudget.yaml");
    for (name, original, from, to) in [
        (
            "typo.yaml",
            &deployment,
            "readOnlyRootFilesystem:",
            "readOnlyRootFS:",
        ),
        (
            "kind.yaml",
            &pdb,
            "kind: PodDisruptionBudget",
            "kind: PodDisruptionBudgt",
        ),
    ] {
        assert!(original.contains(from), "the manifest has no `{from}`");
        let path = dir.path().join(name);
        std::fs::write(&path, original.replacen(from, to, 1)).expect("write a broken manifest");
        assert!(
            validate(&tool, &[path]).is_err(),
            "kubernetes-validate accepted `{to}`"
        );
    }
}

/// `kubectl apply -k deploy/k8s` applies every manifest but the Secret template (which users
/// fill in and apply themselves), and every resource it names exists.
#[test]
fn kustomization_lists_every_manifest_but_the_secret_template() {
    assert_kustomization_lists_all("deploy/k8s");
}

/// The gateway accepts the ConfigMap's configuration (`--check-config`, exit 0) with keys from
/// the environment as the Secret gives them, and it means what the manifests assume: all
/// interfaces on 8080, JSON logs, embedded OpenCode with the ConfigMap's opencode.json, keys
/// masked when printed.
#[test]
fn configmap_config_is_accepted_by_the_gateway() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, configmap_toml()).expect("write the ConfigMap's config.toml");
    let file = file.to_str().expect("UTF-8 temp path");
    let out = gateway(
        &["--check-config", "--config", file],
        &[("PORTATEK_API_KEYS", "k8s-test-key-1,k8s-test-key-2")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "--check-config rejected the ConfigMap's config ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: toml::Value = toml::from_str(&stdout).expect("--check-config prints TOML");
    assert_eq!(effective["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(effective["log_format"].as_str(), Some("json"));
    assert!(
        effective["opencode"].get("base_url").is_none(),
        "embedded OpenCode expected"
    );
    assert_eq!(
        effective["opencode"]["config_file"].as_str(),
        Some("/etc/portatek/opencode.json")
    );
    assert_eq!(
        effective["auth"]["api_keys"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        !stdout.contains("k8s-test-key"),
        "keys printed unmasked:\n{stdout}"
    );
}

/// The ConfigMap's configuration is config.example.toml (every key with its default) but for
/// the keys a cluster needs, each marked `k8s:` in the ConfigMap: a default changed or a key
/// added or removed in config.example.toml must be carried over.
#[test]
fn configmap_config_is_the_example_with_marked_changes() {
    fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let parse = |name: &str, text: &str| {
        let value: toml::Value =
            toml::from_str(text).unwrap_or_else(|e| panic!("{name} is not TOML: {e}"));
        let mut flat = BTreeMap::new();
        flatten("", &value, &mut flat);
        flat
    };
    let example = parse("config.example.toml", &read("config.example.toml"));
    let configmap = parse("the ConfigMap's config.toml", &configmap_toml());
    let keys: std::collections::BTreeSet<&String> =
        example.keys().chain(configmap.keys()).collect();
    let changed: Vec<&str> = keys
        .into_iter()
        .filter(|k| example.get(*k) != configmap.get(*k))
        .map(String::as_str)
        .collect();
    assert_eq!(
        changed,
        ["listen", "log_format", "opencode.config_file"],
        "keys where the ConfigMap differs from config.example.toml"
    );
    let marks = configmap_toml().matches("# k8s:").count();
    assert!(
        marks >= changed.len(),
        "each changed key needs its `# k8s:` comment"
    );
}

/// The paths the manifests use meet: the ConfigMap is mounted where PORTATEK_CONFIG and
/// `opencode.config_file` point, and its opencode.json is a JSON object.
#[test]
fn configmap_is_mounted_where_the_config_points() {
    let deployment = read("deploy/k8s/deployment.yaml");
    let configmap = read("deploy/k8s/configmap.yaml");
    let mounts = scalars(&deployment, "mountPath");
    assert!(
        mounts.contains(&"/etc/portatek".to_string()),
        "mounts: {mounts:?}"
    );
    let env_value = deployment
        .lines()
        .skip_while(|l| !l.contains("name: PORTATEK_CONFIG"))
        .nth(1)
        .and_then(|l| l.trim().strip_prefix("value: "))
        .expect("PORTATEK_CONFIG is set in the Deployment");
    assert_eq!(env_value, "/etc/portatek/config.toml");
    let json = block_scalar(&configmap, "opencode.json").expect("an opencode.json key");
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("opencode.json is JSON");
    assert!(parsed.is_object(), "opencode.json: {parsed}");
}

/// An unedited Secret template cannot expose an open gateway: with its empty
/// PORTATEK_API_KEYS the ConfigMap's configuration is refused (exit 2, naming the key).
#[test]
fn unedited_secret_template_keeps_the_gateway_closed() {
    let template = read("deploy/k8s/secret.example.yaml");
    let keys = scalar(&template, "PORTATEK_API_KEYS");
    let dir = tempfile::tempdir().expect("create a temp dir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, configmap_toml()).expect("write the ConfigMap's config.toml");
    let out = gateway(
        &[
            "--check-config",
            "--config",
            file.to_str().expect("UTF-8 temp path"),
        ],
        &[("PORTATEK_API_KEYS", keys.as_str())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "template keys {keys:?}: {stderr}"
    );
    assert!(stderr.contains("auth.api_keys"), "{stderr}");
}

/// The Deployment fits the image and the gateway: the image's user (10001) and port (8080),
/// probes on /livez (startup, liveness) and /health (readiness), and a termination grace period
/// longer than the preStop pause + `shutdown_grace_secs` + OpenCode's stop (5 s).
#[test]
fn deployment_fits_the_image_and_the_gateway() {
    let deployment = read("deploy/k8s/deployment.yaml");
    let base = stage("runtime-base").join("\n");
    assert!(
        base.contains("useradd --uid 10001 "),
        "runtime-base: {base}"
    );
    assert!(base.contains("USER 10001:10001"), "runtime-base: {base}");
    assert!(base.contains("EXPOSE 8080"), "runtime-base: {base}");
    assert!(
        base.contains("PORTATEK_LISTEN=0.0.0.0:8080"),
        "runtime-base: {base}"
    );
    assert_eq!(scalars(&deployment, "runAsUser"), ["10001", "10001"]);
    assert_eq!(scalar(&deployment, "containerPort"), "8080");
    for key in ["runAsNonRoot", "readOnlyRootFilesystem"] {
        assert!(
            scalars(&deployment, key).iter().all(|v| v == "true"),
            "{key} must be true"
        );
    }
    assert_eq!(scalar(&deployment, "allowPrivilegeEscalation"), "false");
    assert_eq!(
        scalars(&deployment, "path"),
        ["/livez", "/livez", "/health"]
    );
    let grace: u64 = scalar(&deployment, "terminationGracePeriodSeconds")
        .parse()
        .expect("a number of seconds");
    let pre_stop: u64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("command: [\"sleep\", \""))
        .and_then(|rest| rest.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("a preStop sleep");
    let drain: u64 = toml::from_str::<toml::Value>(&configmap_toml())
        .expect("TOML")
        .get("shutdown_grace_secs")
        .and_then(toml::Value::as_integer)
        .and_then(|s| u64::try_from(s).ok())
        .expect("shutdown_grace_secs");
    assert!(
        grace > pre_stop + drain + 5,
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + shutdown_grace_secs \
         {drain} + 5"
    );
}

// ---------------------------------------------------------------------------------------------
// The scale-out example (deploy/k8s/scale-out): replicas, upstreams, Redis
// ---------------------------------------------------------------------------------------------

/// The scale-out manifests validate, and kustomization.yaml lists every one of them (but the
/// Secret example, which the operator fills in and applies first).
#[test]
fn scale_out_manifests_are_valid_and_listed() {
    assert_kustomization_lists_all("deploy/k8s/scale-out");
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    assert_all_validated(&tool, &manifests_in("deploy/k8s/scale-out"));
}

/// The pieces of the scale-out example meet: the gateway accepts its config (two upstreams, the
/// Redis store); the upstream URLs name the OpenCode StatefulSet's pods through its headless
/// Service and port; the store URL names the Redis Service and port; the gateway runs more than
/// one replica, under a PodDisruptionBudget; every Secret reference names the example Secret.
#[test]
fn scale_out_example_is_consistent() {
    let configmap = read("deploy/k8s/scale-out/configmap.yaml");
    let toml_text = block_scalar(&configmap, "config.toml").expect("a config.toml block");
    let dir = tempfile::tempdir().expect("create a temp dir");
    let file = dir.path().join("config.toml");
    std::fs::write(&file, &toml_text).expect("write the config");
    let out = gateway(
        &["--check-config", "--config", file.to_str().unwrap()],
        &[
            ("PORTATEK_API_KEYS", "k8s-test-key"),
            ("OPENCODE_SERVER_PASSWORD", "pw"),
        ],
    );
    assert!(
        out.status.success(),
        "--check-config rejected the scale-out config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective: toml::Value =
        toml::from_str(&String::from_utf8_lossy(&out.stdout)).expect("TOML");
    let upstreams = effective["upstreams"].as_array().expect("upstreams");
    assert_eq!(upstreams.len(), 2);
    assert_eq!(effective["store"]["kind"].as_str(), Some("redis"));

    let opencode = read("deploy/k8s/scale-out/opencode.yaml");
    let service = scalar(&opencode, "serviceName");
    let set = scalars(&opencode, "name")[0].clone();
    let replicas: usize = scalars(&opencode, "replicas")[0].parse().unwrap();
    assert_eq!(replicas, upstreams.len(), "one upstream per OpenCode pod");
    let port = scalar(&opencode, "containerPort");
    for (i, u) in upstreams.iter().enumerate() {
        assert_eq!(
            u["url"].as_str(),
            Some(format!("http://{set}-{i}.{service}:{port}").as_str()),
            "upstream {i}"
        );
    }

    let redis = read("deploy/k8s/scale-out/redis.yaml");
    let redis_service = scalars(&redis, "name")
        .into_iter()
        .find(|n| n == "portatek-redis")
        .expect("the Redis Service");
    let redis_port = scalar(&redis, "containerPort");
    assert_eq!(
        effective["store"]["url"].as_str(),
        Some(format!("redis://{redis_service}:{redis_port}/0").as_str())
    );

    let gateway_yaml = read("deploy/k8s/scale-out/gateway.yaml");
    let replicas: usize = scalar(&gateway_yaml, "replicas").parse().unwrap();
    assert!(replicas >= 2, "a scale-out example with {replicas} replica");
    let pdb = read("deploy/k8s/scale-out/poddisruptionbudget.yaml");
    assert!(pdb.contains("kind: PodDisruptionBudget"));
    assert!(scalars(&pdb, "app.kubernetes.io/name").contains(&"portatek-gateway".to_string()));

    let secret = read("deploy/k8s/scale-out/secret.example.yaml");
    let secret_name = scalar(&secret, "name");
    for (file, text) in [
        ("gateway.yaml", &gateway_yaml),
        ("opencode.yaml", &opencode),
    ] {
        for name in scalars(text, "name")
            .into_iter()
            .filter(|n| n.starts_with("portatek-scale") || n.contains("secret"))
        {
            assert_eq!(name, secret_name, "{file} names Secret {name}");
        }
    }
    for key in ["OPENCODE_SERVER_PASSWORD", "PORTATEK_API_KEYS"] {
        assert!(
            secret.contains(&format!("{key}:")),
            "the Secret lacks {key}"
        );
    }
}
