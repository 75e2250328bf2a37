//! The agent channel: what rivet knows of each deploy ramdisk it is waiting
//! for or talking to, and the rules of Ironic's lookup and heartbeat.
//!
//! A deploy opens a node's channel before it powers the node on into the
//! ramdisk (`open`). The agent then looks itself up by MAC (`lookup`): the
//! first lookup of a boot is handed a fresh token, every later one
//! `******`. Its heartbeats (`heartbeat`) must carry that token and keep
//! one callback URL; the first one tells the waiting runner where the agent
//! listens (`connection`). The channel closes when the agent is powered off
//! or the deploy ends (`close`): a new boot gets a new token.
//!
//! Invariants:
//! - The token is in memory only: the state file keeps its SHA-256 digest,
//!   which is how a restarted conductor accepts the agent's next heartbeat
//!   and learns the token again from it.
//! - A lookup or heartbeat for a node whose channel is not open is refused
//!   as unknown (Ironic's 404): an agent cannot reach a node rivet is not
//!   deploying.
//! - Tokens are compared in constant time, and never logged.
//! - A channel's record is durable before the lookup that hands out its
//!   token is answered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::now;
use crate::driver::DriverError;
use crate::driver::agent::{AgentClient, AgentConn, AgentToken};
use crate::store::records::AgentRecord;
use crate::store::{Store, StoreError, Write};

/// What a lookup answers: the node and the agent's configuration.
#[derive(Debug)]
pub struct Lookup {
    pub uuid: String,
    pub properties: serde_json::Value,
    pub instance_info: serde_json::Value,
    /// The token at this boot's first lookup; `None` afterwards (answered
    /// as `******`).
    pub token: Option<AgentToken>,
    pub heartbeat_timeout: Duration,
}

/// A heartbeat as the agent sends it.
#[derive(Debug, Default)]
pub struct Heartbeat {
    pub callback_url: Option<String>,
    pub token: Option<String>,
    pub agent_version: Option<String>,
}

/// Why a lookup or heartbeat is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No node waits for an agent under this name (Ironic: 404).
    #[error("{0}")]
    Unknown(String),
    /// The request is wrong (Ironic: 400).
    #[error("{0}")]
    Invalid(String),
    /// The channel could not be recorded (500).
    #[error("{0}")]
    Store(String),
}

/// One node's open channel.
struct Live {
    name: String,
    record: AgentRecord,
    /// Known after this process handed it out or verified it in a
    /// heartbeat; never stored.
    token: Option<AgentToken>,
}

#[derive(Default)]
struct Table {
    /// By node name.
    live: HashMap<String, Live>,
    /// Node UUID → name.
    by_uuid: HashMap<String, String>,
}

impl Table {
    fn insert(&mut self, live: Live) {
        self.by_uuid
            .insert(live.record.uuid.clone(), live.name.clone());
        self.live.insert(live.name.clone(), live);
    }

    fn remove(&mut self, name: &str) {
        if let Some(live) = self.live.remove(name) {
            self.by_uuid.remove(&live.record.uuid);
        }
    }
}

/// Every open agent channel of this conductor.
pub struct Agents {
    store: Arc<Store>,
    table: Mutex<Table>,
    /// Counts accepted heartbeats, so waiters wake when one arrives.
    heartbeats: watch::Sender<u64>,
    heartbeat_timeout: Duration,
    /// The client commands to agents go through, made at first use.
    client: std::sync::OnceLock<AgentClient>,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents").finish_non_exhaustive()
    }
}

/// A fresh token: 32 random bytes from the operating system, URL-safe
/// base64 (43 characters).
fn fresh_token() -> Result<String, String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random bytes for an agent token: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Agents {
    /// The channels the state file keeps open (a restart finds its agents
    /// still waiting); their tokens are learned again from heartbeats.
    pub fn load(store: Arc<Store>, heartbeat_timeout: Duration) -> Result<Self, StoreError> {
        let records = store.agents()?;
        let agents = Self::empty(store, heartbeat_timeout);
        {
            let mut table = agents.table();
            for (name, record) in records {
                table.insert(Live {
                    name,
                    record,
                    token: None,
                });
            }
        }
        Ok(agents)
    }

    /// No channel open yet, whatever the state file keeps: for converges
    /// that drive no agent.
    pub fn empty(store: Arc<Store>, heartbeat_timeout: Duration) -> Self {
        Self {
            store,
            table: Mutex::new(Table::default()),
            heartbeats: watch::channel(0).0,
            heartbeat_timeout,
            client: std::sync::OnceLock::new(),
        }
    }

    /// The client of the agents' command API.
    pub fn client(&self) -> Result<&AgentClient, DriverError> {
        if let Some(client) = self.client.get() {
            return Ok(client);
        }
        let client = AgentClient::new()?;
        Ok(self.client.get_or_init(|| client))
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn save(&self, writes: Vec<Write>) -> Result<(), String> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.apply(&writes).map(|_| ()))
            .await
            .map_err(|e| format!("recording the agent channel: {e}"))?
            .map_err(|e| e.to_string())
    }

    /// Whether `name`'s channel is open.
    pub fn is_open(&self, name: &str) -> bool {
        self.table().live.contains_key(name)
    }

    /// Open `name`'s channel for a new boot of its ramdisk: any token and
    /// callback URL of an earlier boot are forgotten.
    pub async fn open(
        &self,
        name: &str,
        uuid: &str,
        macs: Vec<String>,
        properties: serde_json::Value,
        instance_info: serde_json::Value,
    ) -> Result<(), DriverError> {
        let boot = self
            .table()
            .live
            .get(name)
            .map_or(0, |live| live.record.boot)
            + 1;
        let record = AgentRecord {
            uuid: uuid.to_string(),
            macs,
            boot,
            opened_at: now(),
            properties,
            instance_info,
            token_sha256: None,
            token_issued_at: None,
            callback_url: None,
            agent_version: None,
            first_heartbeat_at: None,
        };
        // Durable before the node is powered on: a restart keeps answering.
        self.save(vec![Write::Agent(name.to_string(), record.clone())])
            .await
            .map_err(DriverError::fatal)?;
        let mut table = self.table();
        table.remove(name);
        table.insert(Live {
            name: name.to_string(),
            record,
            token: None,
        });
        Ok(())
    }

    /// Close `name`'s channel: its agent is powered off or no longer needed.
    pub async fn close(&self, name: &str) -> Result<(), DriverError> {
        if !self.is_open(name) {
            return Ok(());
        }
        self.save(vec![Write::ClearAgent(name.to_string())])
            .await
            .map_err(DriverError::fatal)?;
        self.table().remove(name);
        Ok(())
    }

    /// Ironic's lookup: by `node_uuid` when given, else by any of the MAC
    /// addresses (lower case), among the nodes waiting for their agent.
    pub async fn lookup(&self, macs: &[String], uuid: Option<&str>) -> Result<Lookup, Refusal> {
        // The token is issued under the lock, so two lookups at once hand
        // out one token: the other is told `******`.
        let (name, record, issued) = {
            let mut table = self.table();
            let name = match uuid {
                Some(uuid) => table.by_uuid.get(uuid).cloned(),
                None => table
                    .live
                    .values()
                    .find(|live| live.record.macs.iter().any(|m| macs.contains(m)))
                    .map(|live| live.name.clone()),
            };
            let Some(live) = name.and_then(|n| table.live.get_mut(&n)) else {
                return Err(Refusal::Unknown(not_found(macs, uuid)));
            };
            let issued = if live.record.token_sha256.is_none() {
                let token = fresh_token().map_err(Refusal::Store)?;
                live.record.token_sha256 = Some(digest(&token));
                live.record.token_issued_at = Some(now());
                live.token = Some(AgentToken::new(token.clone()));
                Some(AgentToken::new(token))
            } else {
                None
            };
            (live.name.clone(), live.record.clone(), issued)
        };
        let token = match issued {
            Some(token) => {
                // Durable before the agent has it: a restart accepts it.
                if let Err(e) = self
                    .save(vec![Write::Agent(name.clone(), record.clone())])
                    .await
                {
                    let mut table = self.table();
                    if let Some(live) = table.live.get_mut(&name)
                        && live.record.boot == record.boot
                    {
                        live.record.token_sha256 = None;
                        live.record.token_issued_at = None;
                        live.token = None;
                    }
                    return Err(Refusal::Store(e));
                }
                tracing::info!(node = %name, boot = record.boot, "agent looked up: token handed out");
                Some(token)
            }
            None => {
                tracing::info!(node = %name, boot = record.boot, "agent looked up again: token withheld");
                None
            }
        };
        Ok(Lookup {
            uuid: record.uuid,
            properties: record.properties,
            instance_info: record.instance_info,
            token,
            heartbeat_timeout: self.heartbeat_timeout,
        })
    }

    /// Ironic's heartbeat: the token of this boot and one callback URL.
    pub async fn heartbeat(&self, uuid: &str, beat: Heartbeat) -> Result<(), Refusal> {
        let Some(given) = beat.token.filter(|t| !t.is_empty()) else {
            return Err(Refusal::Invalid(
                "Agent token is required for heartbeat processing.".into(),
            ));
        };
        // Checked as the client will use it (scheme, host, nothing more).
        let callback = beat
            .callback_url
            .as_deref()
            .ok_or_else(|| "no callback_url".to_string())
            .and_then(|text| {
                AgentConn::new(uuid, text, AgentToken::new(given.clone())).map_err(|e| e.message)
            })
            .map_err(|why| {
                Refusal::Invalid(format!(
                    "An issue with the supplied \"callback_url\" has been detected: {why}"
                ))
            })?
            .callback_url
            .to_string();
        let (name, record) = {
            let mut table = self.table();
            let Some(name) = table.by_uuid.get(uuid).cloned() else {
                return Err(Refusal::Unknown(format!("Node {uuid} could not be found.")));
            };
            let live = table.live.get_mut(&name).expect("indexed by uuid");
            let valid = live.record.token_sha256.as_deref().is_some_and(|expected| {
                crate::driver::scrub::same_secret(&digest(&given), expected)
            });
            if !valid {
                tracing::warn!(node = %name, boot = live.record.boot, "heartbeat refused: invalid or missing agent token");
                return Err(Refusal::Invalid(
                    "Invalid or missing agent token received.".into(),
                ));
            }
            if live
                .record
                .callback_url
                .as_ref()
                .is_some_and(|known| *known != callback)
            {
                tracing::warn!(node = %name, boot = live.record.boot, "heartbeat refused: the callback URL changed");
                return Err(Refusal::Invalid(
                    "Detected change in ramdisk provided \"callback_url\"".into(),
                ));
            }
            if live.token.is_none() {
                // A restarted conductor learns the token from the agent.
                live.token = Some(AgentToken::new(given));
            }
            if live.record.callback_url.is_some() {
                drop(table);
                self.heartbeats.send_modify(|n| *n += 1);
                return Ok(());
            }
            live.record.callback_url = Some(callback);
            live.record.agent_version = beat.agent_version;
            live.record.first_heartbeat_at = Some(now());
            (name, live.record.clone())
        };
        tracing::info!(node = %name, boot = record.boot, agent_version = record.agent_version.as_deref().unwrap_or(""), "first heartbeat from the agent");
        self.save(vec![Write::Agent(name, record)])
            .await
            .map_err(Refusal::Store)?;
        self.heartbeats.send_modify(|n| *n += 1);
        Ok(())
    }

    /// How to reach `name`'s agent, once it has heartbeated with a token
    /// this process knows; waits up to `within` for that heartbeat.
    pub async fn connection(&self, name: &str, within: Duration) -> Result<AgentConn, Waited> {
        let mut beats = self.heartbeats.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            {
                let table = self.table();
                let Some(live) = table.live.get(name) else {
                    return Err(Waited::Closed);
                };
                if let (Some(url), Some(token)) = (&live.record.callback_url, &live.token) {
                    return AgentConn::new(name, url, token.clone()).map_err(Waited::Invalid);
                }
            }
            match tokio::time::timeout_at(deadline, beats.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(Waited::TimedOut),
            }
        }
    }

    /// Where `name`'s agent listens and its version, once it heartbeated.
    pub fn seen(&self, name: &str) -> Option<crate::store::records::AgentSeen> {
        let table = self.table();
        let record = &table.live.get(name)?.record;
        Some(crate::store::records::AgentSeen {
            url: record.callback_url.clone()?,
            version: record.agent_version.clone(),
        })
    }

    /// How often the agent is told to heartbeat (it sends one every 0.3 to
    /// 0.6 of this).
    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
    }
}

/// Why no connection to an agent came.
#[derive(Debug)]
pub enum Waited {
    /// No heartbeat in time.
    TimedOut,
    /// The channel was closed meanwhile.
    Closed,
    Invalid(DriverError),
}

fn not_found(macs: &[String], uuid: Option<&str>) -> String {
    match uuid {
        Some(uuid) => format!("Node {uuid} could not be found."),
        None => format!("Node with addresses {} was not found.", macs.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agents() -> (tempfile::TempDir, Arc<Agents>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("state.redb")).unwrap());
        let agents = Arc::new(Agents::load(store, Duration::from_secs(60)).unwrap());
        (dir, agents)
    }

    const MAC: &str = "52:54:00:aa:bb:01";
    const UUID: &str = "0f8b3a2e-0000-4000-8000-000000000001";

    async fn open(agents: &Agents) {
        agents
            .open(
                "n1",
                UUID,
                vec![MAC.into()],
                serde_json::json!({}),
                serde_json::json!({}),
            )
            .await
            .unwrap();
    }

    /// The token the first lookup of this boot hands out.
    async fn first_token(agents: &Agents) -> String {
        let found = agents.lookup(&[MAC.into()], None).await.unwrap();
        found.token.expect("the first lookup").expose().to_string()
    }

    fn beat(token: &str, url: &str) -> Heartbeat {
        Heartbeat {
            callback_url: Some(url.into()),
            token: Some(token.into()),
            agent_version: Some("13.0.0".into()),
        }
    }

    #[tokio::test]
    async fn the_first_lookup_of_a_boot_gets_the_token_and_later_ones_do_not() {
        let (_dir, agents) = agents();
        let refused = agents.lookup(&[MAC.into()], None).await.unwrap_err();
        assert!(
            matches!(refused, Refusal::Unknown(_)),
            "not waiting: {refused:?}"
        );
        open(&agents).await;
        let first = agents.lookup(&[MAC.into()], None).await.unwrap();
        let token = first.token.expect("first lookup").expose().to_string();
        assert!(token.len() >= 32, "{} characters", token.len());
        assert_eq!(first.uuid, UUID);
        let second = agents.lookup(&[], Some(UUID)).await.unwrap();
        assert!(second.token.is_none());
        // A new boot: a new token.
        open(&agents).await;
        let third = agents.lookup(&[MAC.into()], None).await.unwrap();
        assert_ne!(third.token.unwrap().expose(), token);
    }

    #[tokio::test]
    async fn two_lookups_at_once_hand_out_one_token() {
        let (_dir, agents) = agents();
        open(&agents).await;
        let lookups: Vec<_> = (0..8)
            .map(|_| {
                let agents = Arc::clone(&agents);
                tokio::spawn(async move { agents.lookup(&[MAC.into()], None).await })
            })
            .collect();
        let mut tokens = Vec::new();
        for lookup in lookups {
            tokens.extend(lookup.await.unwrap().unwrap().token);
        }
        assert_eq!(tokens.len(), 1, "one lookup got the token");
        let token = tokens[0].expose().to_string();
        agents
            .heartbeat(UUID, beat(&token, "http://127.0.0.1:9999"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_heartbeat_needs_this_boots_token_and_keeps_one_callback_url() {
        let (_dir, agents) = agents();
        open(&agents).await;
        let token = first_token(&agents).await;
        let wrong = agents
            .heartbeat(UUID, beat("not-the-token", "http://127.0.0.1:9999"))
            .await;
        assert!(matches!(wrong, Err(Refusal::Invalid(m)) if m.contains("Invalid")));
        let bad_url = agents
            .heartbeat(UUID, beat(&token, "file:///etc/passwd"))
            .await;
        assert!(matches!(bad_url, Err(Refusal::Invalid(m)) if m.contains("http")));
        agents
            .heartbeat(UUID, beat(&token, "http://127.0.0.1:9999"))
            .await
            .unwrap();
        let moved = agents
            .heartbeat(UUID, beat(&token, "http://127.0.0.1:9998"))
            .await;
        assert!(matches!(moved, Err(Refusal::Invalid(m)) if m.contains("callback_url")));
        let conn = agents
            .connection("n1", Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(conn.callback_url.as_str(), "http://127.0.0.1:9999/");
        agents.close("n1").await.unwrap();
        let closed = agents
            .heartbeat(UUID, beat(&token, "http://127.0.0.1:9999"))
            .await;
        assert!(matches!(closed, Err(Refusal::Unknown(_))));
    }

    #[tokio::test]
    async fn a_restarted_conductor_accepts_the_token_by_its_digest_and_learns_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let token = {
            let store = Arc::new(Store::open(&path).unwrap());
            let agents = Agents::load(store, Duration::from_secs(60)).unwrap();
            open(&agents).await;
            first_token(&agents).await
        };
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token is not in the state file"
        );
        let store = Arc::new(Store::open(&path).unwrap());
        let agents = Arc::new(Agents::load(store, Duration::from_secs(60)).unwrap());
        let waiting = {
            let agents = Arc::clone(&agents);
            tokio::spawn(async move { agents.connection("n1", Duration::from_secs(10)).await })
        };
        agents
            .heartbeat(UUID, beat(&token, "http://127.0.0.1:9999"))
            .await
            .unwrap();
        let conn = waiting.await.unwrap().unwrap();
        assert_eq!(conn.token.expose(), token);
        assert!(
            agents
                .lookup(&[MAC.into()], None)
                .await
                .unwrap()
                .token
                .is_none()
        );
    }

    #[tokio::test]
    async fn waiting_for_an_agent_that_never_heartbeats_times_out() {
        let (_dir, agents) = agents();
        open(&agents).await;
        let waited = agents.connection("n1", Duration::from_millis(50)).await;
        assert!(matches!(waited, Err(Waited::TimedOut)));
        assert!(matches!(
            agents.connection("n2", Duration::from_millis(50)).await,
            Err(Waited::Closed)
        ));
    }
}
