//! Who this gateway is, as the pooled sessions it creates record it: an *instance* id and a
//! *deployment* name, stamped into every pooled session's metadata
//! (`{"portatek": {"instance", "deployment", "upstream", …}}`), so that the sweep
//! ([`super::sweep`]) can tell the sessions a dead gateway left behind from those a live one
//! still uses.
//!
//! - **Instance.** A random id, kept in `<state dir>/instance-id` so that it survives a restart:
//!   a gateway killed outright (SIGKILL, the OOM killer) and started again knows the sessions of
//!   its previous life as its own — it holds none of them, so they are orphans. The file is
//!   locked (`flock`) for the life of the process: a second gateway pointed at the same state
//!   dir cannot take the same id (it gets a fresh one, and says so). Without a writable state
//!   dir each start has a new id; with Redis that costs nothing (a dead instance's heartbeat
//!   lapses and the other replicas, or the next start, sweep its sessions), without Redis the
//!   orphans of a previous life are then never found.
//! - **Deployment.** Replicas sharing one Redis (address and key prefix) know each other's
//!   liveness through it; gateways elsewhere do not, so a sweep only ever touches sessions of
//!   its own deployment. The name is `sessions.deployment`, or derived from the store: a hash of
//!   the Redis address and key prefix, or `local` without Redis (then only the instance's own
//!   sessions are ever swept).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{Config, StoreKind};

/// The file in the state dir holding the instance id.
const ID_FILE: &str = "instance-id";

/// This gateway's identity; shared by every upstream's sessions.
#[derive(Debug)]
pub struct Identity {
    instance: String,
    deployment: String,
    /// The locked id file: the lock lasts as long as the process holds it.
    _lock: Option<File>,
}

/// Whether `id` looks like an instance id this module makes (32 lowercase hex digits).
fn well_formed(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The state dir when `sessions.state_dir` is unset: `$XDG_STATE_HOME/portatek-gateway`, else
/// `$HOME/.local/state/portatek-gateway`.
fn default_state_dir() -> Option<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(state) = nonempty("XDG_STATE_HOME") {
        return Some(PathBuf::from(state).join("portatek-gateway"));
    }
    nonempty("HOME").map(|home| PathBuf::from(home).join(".local/state/portatek-gateway"))
}

/// Reads the id in `dir` (writing a new one when there is none), holding the file's lock.
fn load_persisted(dir: &Path) -> Result<(String, File), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(ID_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(format!(
                "{} is in use by another running gateway",
                path.display()
            ))
        }
        Err(TryLockError::Error(e)) => return Err(format!("cannot lock {}: {e}", path.display())),
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let id = text.trim();
    if well_formed(id) {
        return Ok((id.to_string(), file));
    }
    let id = new_id();
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(format!("{id}\n").as_bytes()))
        .and_then(|()| file.sync_all());
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((id, file))
}

/// The deployment name `config` asks for, or the one derived from its store.
pub fn deployment_of(config: &Config) -> String {
    if let Some(name) = &config.sessions.deployment {
        return name.trim().to_string();
    }
    match (&config.store.kind, &config.store.url) {
        (StoreKind::Redis, Some(url)) => {
            // The address without credentials: replicas share Redis, not necessarily passwords.
            let place = reqwest::Url::parse(url).map_or_else(
                |_| url.clone(),
                |u| {
                    format!(
                        "{}:{}{}",
                        u.host_str().unwrap_or(""),
                        u.port().unwrap_or(6379),
                        u.path()
                    )
                },
            );
            let digest = Sha256::digest(format!("{place}|{}", config.store.key_prefix));
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("redis-{hex}")
        }
        _ => "local".to_string(),
    }
}

impl Identity {
    /// The identity `config` gives this process: the instance id from the state dir (made on
    /// first use), or a fresh one when the dir cannot be used (logged).
    pub fn load(config: &Config) -> Identity {
        let deployment = deployment_of(config);
        let shared = config.store.kind == StoreKind::Redis;
        let dir = config.sessions.state_dir.clone().or_else(default_state_dir);
        let loaded = match &dir {
            Some(dir) => load_persisted(dir),
            None => Err("no state dir (sessions.state_dir, XDG_STATE_HOME, HOME)".into()),
        };
        match loaded {
            Ok((instance, lock)) => {
                tracing::info!(%instance, %deployment, "gateway instance");
                Identity {
                    instance,
                    deployment,
                    _lock: Some(lock),
                }
            }
            Err(why) => {
                let instance = new_id();
                if shared {
                    tracing::info!(%instance, %deployment, reason = %why, "gateway instance (new each start; Redis tells the replicas when it is gone)");
                } else {
                    tracing::warn!(%instance, %deployment, reason = %why, "gateway instance id not kept: after a crash, this gateway's pooled sessions will not be known as its own (set sessions.state_dir to a writable directory)");
                }
                Identity::ephemeral(deployment, instance)
            }
        }
    }

    /// An identity that lives as long as this process.
    pub fn ephemeral(deployment: String, instance: String) -> Identity {
        Identity {
            instance,
            deployment,
            _lock: None,
        }
    }

    /// This gateway's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// This gateway's deployment name.
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// The stamp of a pooled session, beside the rest of the gateway's metadata.
    pub fn stamp(&self) -> Map<String, Value> {
        let mut ours = Map::new();
        ours.insert("instance".into(), Value::String(self.instance.clone()));
        ours.insert("deployment".into(), Value::String(self.deployment.clone()));
        ours
    }
}

/// The `(instance, deployment)` stamp of a session's metadata, if it has one.
pub fn stamp_of(metadata: Option<&Value>) -> Option<(&str, &str)> {
    let ours = metadata?.get("portatek")?;
    let instance = ours.get("instance")?.as_str()?;
    let deployment = ours.get("deployment")?.as_str()?;
    Some((instance, deployment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_survives_a_restart_and_is_never_shared() {
        let dir = tempfile::tempdir().unwrap();
        let (first, lock) = load_persisted(dir.path()).unwrap();
        assert!(well_formed(&first), "{first}");
        let busy = load_persisted(dir.path()).unwrap_err();
        assert!(busy.contains("in use"), "{busy}");
        drop(lock);
        let (again, _lock) = load_persisted(dir.path()).unwrap();
        assert_eq!(again, first, "the same id after a restart");
    }

    #[test]
    fn a_damaged_id_file_gets_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ID_FILE), "not an id\n").unwrap();
        let (id, _lock) = load_persisted(dir.path()).unwrap();
        assert!(well_formed(&id));
        let text = std::fs::read_to_string(dir.path().join(ID_FILE)).unwrap();
        assert_eq!(text.trim(), id);
    }

    #[test]
    fn deployments_follow_the_store() {
        let mut config = Config::default();
        assert_eq!(deployment_of(&config), "local");
        config.store.kind = StoreKind::Redis;
        config.store.url = Some("redis://:secret@redis:6379/0".into());
        let a = deployment_of(&config);
        config.store.url = Some("redis://:other@redis:6379/0".into());
        assert_eq!(deployment_of(&config), a, "credentials do not matter");
        config.store.key_prefix = "other:".into();
        assert_ne!(deployment_of(&config), a, "a prefix is another deployment");
        assert!(!a.contains("secret"));
        config.sessions.deployment = Some(" prod ".into());
        assert_eq!(deployment_of(&config), "prod");
    }

    #[test]
    fn stamps_read_back() {
        let id = Identity::ephemeral("d".into(), "i".into());
        let meta = serde_json::json!({ "portatek": id.stamp() });
        assert_eq!(stamp_of(Some(&meta)), Some(("i", "d")));
        assert_eq!(
            stamp_of(Some(&serde_json::json!({"portatek": {"create": "x"}}))),
            None
        );
        assert_eq!(stamp_of(None), None);
    }
}
