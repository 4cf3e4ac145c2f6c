//! The host gate: at most one request at a time to a host (`host:port`), and at
//! least a spacing (`ORDERS_SCRAPER_HOST_SPACING_MS`, 5 s by default) between the
//! end of one request and the start of the next, across every scraper instance.
//!
//! Two implementations behind one enum, [`HostGate`]:
//!
//! - [`NatsHostGate`], for the scraper service: one key per host in the JetStream
//!   key-value bucket [`HOST_GATE_BUCKET`], changed only by compare-and-set on its
//!   revision (`create` when absent, `update(key, value, revision)` otherwise), so
//!   two instances never both win. The key is the lowercase hex of `host:port`
//!   (any host name is then a valid KV key); the value is JSON, e.g.
//!   `{"host":"shop.example:443","holder":"pid42-0190…","lease_until_ms":1718000065000,"next_allowed_at_ms":1718000000000}`
//!   while held, and `{"host":"shop.example:443","next_allowed_at_ms":1718000010000}`
//!   once released (times are Unix epoch milliseconds: instances on several
//!   machines compare wall clocks, which NTP keeps well within the spacing).
//! - [`InProcessHostGate`], for `orders scrape` and tests: the same rules in memory.
//!
//! **Acquire** waits while the host is held or its next allowed time is ahead, then
//! takes a lease (`lease_until` = now + [`HostGateConfig::lease`], longer than any
//! request may take). **Release** frees the host and sets its next allowed time to
//! now + spacing, or later when the site asked to slow down (429/503 with
//! `Retry-After`); never earlier than a time already stored. A holder that crashed
//! or was cancelled never releases: its lease expires, and the host is free again
//! one spacing after the lease's end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;
use url::Url;

/// The key-value bucket of the NATS host gate.
pub const HOST_GATE_BUCKET: &str = orders_nats::SCRAPER_HOSTS_BUCKET;
/// The spacing between two requests to one host when none is configured.
pub const DEFAULT_HOST_SPACING: Duration = Duration::from_millis(5000);

/// A host as the gate counts it: lowercase host and port (`shop.example:443`,
/// `[::1]:8080`). Each port of one machine is its own host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostKey(String);

impl HostKey {
    pub fn new(host: &str, port: u16) -> Self {
        Self(format!("{}:{port}", host.to_ascii_lowercase()))
    }

    /// The host of `url`; `None` for a URL without a host or a known port.
    pub fn of_url(url: &Url) -> Option<Self> {
        Some(Self::new(url.host_str()?, url.port_or_known_default()?))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host's key in [`HOST_GATE_BUCKET`]: lowercase hex of `host:port`, valid
    /// whatever characters the host has.
    pub fn bucket_key(&self) -> String {
        self.0.bytes().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl std::fmt::Display for HostKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// How the gate spaces requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGateConfig {
    /// The least time between the end of one request to a host and the start of
    /// the next (`ORDERS_SCRAPER_HOST_SPACING_MS`).
    pub spacing: Duration,
    /// How long an acquired host stays held if its holder never releases it; must
    /// exceed the longest request (the fetcher's total timeout).
    pub lease: Duration,
    /// How often a waiter looks again at a host another instance holds (NATS gate).
    pub poll_interval: Duration,
}

impl Default for HostGateConfig {
    fn default() -> Self {
        Self {
            spacing: DEFAULT_HOST_SPACING,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// The gate's store failed; the request was not made (acquire) or the host's slot
/// may stay held until its lease expires (release).
#[derive(Debug, thiserror::Error)]
pub enum HostGateError {
    #[error("opening the key-value bucket {bucket}")]
    OpenBucket {
        bucket: &'static str,
        #[source]
        source: async_nats::Error,
    },
    #[error("{doing} the slot of host {host} in {HOST_GATE_BUCKET}")]
    Store {
        doing: &'static str,
        host: HostKey,
        #[source]
        source: async_nats::Error,
    },
}

/// The right to send one request to a host; give it back with [`HostGate::release`].
#[derive(Debug)]
pub struct HostPermit {
    host: HostKey,
    ticket: Ticket,
    waited: Duration,
}

#[derive(Debug)]
enum Ticket {
    InProcess(u64),
    Nats {
        revision: u64,
        /// The next allowed time the slot had when taken: kept as a floor on release.
        next_allowed_at_ms: u64,
    },
}

impl HostPermit {
    pub fn host(&self) -> &HostKey {
        &self.host
    }

    /// How long acquiring waited for the host.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// Either gate; the fetcher takes this.
#[derive(Debug, Clone)]
pub enum HostGate {
    InProcess(InProcessHostGate),
    Nats(NatsHostGate),
}

impl HostGate {
    /// A gate for one process (`orders scrape`).
    pub fn in_process(config: HostGateConfig) -> Self {
        Self::InProcess(InProcessHostGate::new(config))
    }

    /// A gate shared by every instance connected to this JetStream; creates
    /// [`HOST_GATE_BUCKET`] if missing.
    pub async fn nats(
        jetstream: &jetstream::Context,
        config: HostGateConfig,
    ) -> Result<Self, HostGateError> {
        Ok(Self::Nats(NatsHostGate::open(jetstream, config).await?))
    }

    pub fn config(&self) -> &HostGateConfig {
        match self {
            Self::InProcess(gate) => &gate.state.config,
            Self::Nats(gate) => &gate.config,
        }
    }

    /// Waits until this process may send a request to `host`, and holds the host.
    pub async fn acquire(&self, host: &HostKey) -> Result<HostPermit, HostGateError> {
        match self {
            Self::InProcess(gate) => Ok(gate.acquire(host).await),
            Self::Nats(gate) => gate.acquire(host).await,
        }
    }

    /// Frees the host once its request has ended; the next request may start one
    /// spacing from now, or `slow_down` from now if that is longer.
    pub async fn release(
        &self,
        permit: HostPermit,
        slow_down: Option<Duration>,
    ) -> Result<(), HostGateError> {
        match self {
            Self::InProcess(gate) => {
                gate.release(permit, slow_down);
                Ok(())
            }
            Self::Nats(gate) => gate.release(permit, slow_down).await,
        }
    }
}

/// The in-memory gate (one process).
#[derive(Debug, Clone)]
pub struct InProcessHostGate {
    state: Arc<InProcessState>,
}

#[derive(Debug)]
struct InProcessState {
    config: HostGateConfig,
    slots: Mutex<HashMap<HostKey, LocalSlot>>,
    /// Woken whenever a host is released.
    released: Notify,
    next_ticket: AtomicU64,
}

#[derive(Debug)]
struct LocalSlot {
    holder: Option<(u64, Instant)>,
    next_allowed_at: Instant,
}

/// Above this many remembered hosts, those neither held nor waited for are dropped.
const IN_PROCESS_SLOTS_KEPT: usize = 4096;

impl InProcessHostGate {
    pub fn new(config: HostGateConfig) -> Self {
        Self {
            state: Arc::new(InProcessState {
                config,
                slots: Mutex::new(HashMap::new()),
                released: Notify::new(),
                next_ticket: AtomicU64::new(1),
            }),
        }
    }

    pub async fn acquire(&self, host: &HostKey) -> HostPermit {
        let started = Instant::now();
        let config = &self.state.config;
        loop {
            // Registered before looking, so a release between the look and the
            // wait still wakes this waiter.
            let released = self.state.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();

            let available_at = {
                let mut slots = self
                    .state
                    .slots
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                if slots.len() > IN_PROCESS_SLOTS_KEPT {
                    slots.retain(|_, slot| slot.holder.is_some() || slot.next_allowed_at > now);
                }
                let slot = slots.entry(host.clone()).or_insert(LocalSlot {
                    holder: None,
                    next_allowed_at: now,
                });
                let available_at = match slot.holder {
                    // An expired lease frees the host one spacing after it ended.
                    Some((_, lease_until)) => lease_until + config.spacing,
                    None => slot.next_allowed_at,
                };
                if available_at <= now {
                    let ticket = self.state.next_ticket.fetch_add(1, Ordering::Relaxed);
                    slot.holder = Some((ticket, now + config.lease));
                    return HostPermit {
                        host: host.clone(),
                        ticket: Ticket::InProcess(ticket),
                        waited: started.elapsed(),
                    };
                }
                available_at
            };
            tokio::select! {
                () = &mut released => {}
                () = tokio::time::sleep_until(available_at) => {}
            }
        }
    }

    pub fn release(&self, permit: HostPermit, slow_down: Option<Duration>) {
        let pause = slow_down.map_or(self.state.config.spacing, |slow_down| {
            slow_down.max(self.state.config.spacing)
        });
        {
            let mut slots = self
                .state
                .slots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let slot = slots.entry(permit.host.clone()).or_insert(LocalSlot {
                holder: None,
                next_allowed_at: now,
            });
            let ours = matches!(
                (slot.holder, &permit.ticket),
                (Some((held, _)), Ticket::InProcess(ticket)) if held == *ticket
            );
            if ours {
                slot.holder = None;
            }
            // Even when the lease was lost meanwhile, a slow-down still counts.
            slot.next_allowed_at = slot.next_allowed_at.max(now + pause);
        }
        self.state.released.notify_waiters();
    }
}

/// What [`HOST_GATE_BUCKET`] holds for one host (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredHostSlot {
    host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    holder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_until_ms: Option<u64>,
    next_allowed_at_ms: u64,
}

impl StoredHostSlot {
    /// When the host may next be taken (a held one: one spacing after its lease).
    fn available_at_ms(&self, spacing_ms: u64) -> u64 {
        match (&self.holder, self.lease_until_ms) {
            (Some(_), Some(lease_until_ms)) => lease_until_ms.saturating_add(spacing_ms),
            _ => self.next_allowed_at_ms,
        }
    }

    fn is_held(&self) -> bool {
        self.holder.is_some()
    }
}

/// Milliseconds since the Unix epoch, rounded up: a time derived from it is never
/// earlier than the real moment (spacing is a lower bound).
fn wall_clock_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let millis = since_epoch.as_millis() + u128::from(since_epoch.subsec_nanos() % 1_000_000 != 0);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch, rounded down: compared with a stored "not
/// before" time, it never says the time has come too early.
fn wall_clock_ms_floor() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How many times in a row a store operation may fail (e.g. during a JetStream
/// leader election) before acquire or release gives up.
const STORE_ATTEMPTS: u32 = 4;

/// The gate shared through NATS (every scraper instance).
#[derive(Debug, Clone)]
pub struct NatsHostGate {
    /// Shared: a `Store` handle is large, and clones of the gate share one.
    store: Arc<kv::Store>,
    config: HostGateConfig,
    /// Names this instance in held slots, for operators reading the bucket.
    holder: String,
}

/// How the CAS write of a slot ended.
enum SlotWrite {
    Written(u64),
    /// Someone else changed the slot first.
    Conflict,
    Failed(async_nats::Error),
}

impl NatsHostGate {
    /// Opens [`HOST_GATE_BUCKET`], creating it if missing. (Entries of hosts not
    /// fetched for a day age out; the bucket keeps only each key's last value.)
    pub async fn open(
        jetstream: &jetstream::Context,
        config: HostGateConfig,
    ) -> Result<Self, HostGateError> {
        let store =
            match jetstream.get_key_value(HOST_GATE_BUCKET).await {
                Ok(store) => store,
                Err(_) => {
                    let bucket_config = kv::Config {
                        bucket: HOST_GATE_BUCKET.to_owned(),
                        description: "Scraper host gate: one request at a time per host:port, \
                                  spaced"
                            .to_owned(),
                        history: 1,
                        max_age: Duration::from_secs(24 * 60 * 60),
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    };
                    match jetstream.create_key_value(bucket_config).await {
                        Ok(store) => store,
                        // Another instance may have created it at the same moment.
                        Err(create_error) => jetstream
                            .get_key_value(HOST_GATE_BUCKET)
                            .await
                            .map_err(|_| HostGateError::OpenBucket {
                                bucket: HOST_GATE_BUCKET,
                                source: Box::new(create_error),
                            })?,
                    }
                }
            };
        Ok(Self {
            store: Arc::new(store),
            config,
            holder: format!(
                "pid{}-{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ),
        })
    }

    /// The slot of `key` and its revision: `None` when absent, deleted, purged or
    /// unreadable (then it is simply overwritten); the revision is `None` only when
    /// the key never existed or aged out.
    async fn read_slot(
        &self,
        key: &str,
    ) -> Result<(Option<StoredHostSlot>, Option<u64>), kv::EntryError> {
        Ok(match self.store.entry(key).await? {
            None => (None, None),
            Some(entry) if entry.operation == kv::Operation::Put => (
                serde_json::from_slice::<StoredHostSlot>(&entry.value).ok(),
                Some(entry.revision),
            ),
            Some(entry) => (None, Some(entry.revision)),
        })
    }

    async fn write_slot(
        &self,
        key: &str,
        slot: &StoredHostSlot,
        revision: Option<u64>,
    ) -> SlotWrite {
        let value = match serde_json::to_vec(slot) {
            Ok(value) => bytes::Bytes::from(value),
            Err(error) => return SlotWrite::Failed(Box::new(error)),
        };
        match revision {
            None => match self.store.create(key, value).await {
                Ok(revision) => SlotWrite::Written(revision),
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                    SlotWrite::Conflict
                }
                Err(error) => SlotWrite::Failed(Box::new(error)),
            },
            Some(revision) => match self.store.update(key, value, revision).await {
                Ok(revision) => SlotWrite::Written(revision),
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    SlotWrite::Conflict
                }
                Err(error) => SlotWrite::Failed(Box::new(error)),
            },
        }
    }

    /// Counts a store failure; `Err` once there were too many in a row.
    async fn tolerate(
        &self,
        failures: &mut u32,
        doing: &'static str,
        host: &HostKey,
        source: async_nats::Error,
    ) -> Result<(), HostGateError> {
        *failures += 1;
        if *failures >= STORE_ATTEMPTS {
            return Err(HostGateError::Store {
                doing,
                host: host.clone(),
                source,
            });
        }
        tracing::debug!(%host, error = %source, "host gate store failed, trying again");
        tokio::time::sleep(Duration::from_millis(100) * *failures).await;
        Ok(())
    }

    pub async fn acquire(&self, host: &HostKey) -> Result<HostPermit, HostGateError> {
        let started = Instant::now();
        let key = host.bucket_key();
        let spacing_ms = millis(self.config.spacing);
        let mut failures = 0;
        loop {
            let (slot, revision) = match self.read_slot(&key).await {
                Ok(read) => read,
                Err(error) => {
                    self.tolerate(&mut failures, "reading", host, Box::new(error))
                        .await?;
                    continue;
                }
            };
            // Rounded down: the host is free only once the stored time has really
            // passed (rounding up let a request start up to a millisecond early).
            let now_ms = wall_clock_ms_floor();
            let available_at_ms = slot
                .as_ref()
                .map_or(0, |slot| slot.available_at_ms(spacing_ms));
            if available_at_ms > now_ms {
                let until_available = Duration::from_millis(available_at_ms - now_ms);
                // A held host may be released any moment: look again soon. A free
                // one only waits out its spacing.
                let wait = if slot.as_ref().is_some_and(StoredHostSlot::is_held) {
                    until_available.min(self.config.poll_interval)
                } else {
                    until_available
                };
                tokio::time::sleep(wait).await;
                continue;
            }
            let next_allowed_at_ms = slot.as_ref().map_or(0, |slot| slot.next_allowed_at_ms);
            let held = StoredHostSlot {
                host: host.as_str().to_owned(),
                holder: Some(self.holder.clone()),
                lease_until_ms: Some(now_ms.saturating_add(millis(self.config.lease))),
                next_allowed_at_ms,
            };
            match self.write_slot(&key, &held, revision).await {
                SlotWrite::Written(revision) => {
                    return Ok(HostPermit {
                        host: host.clone(),
                        ticket: Ticket::Nats {
                            revision,
                            next_allowed_at_ms,
                        },
                        waited: started.elapsed(),
                    });
                }
                // Another instance took it first: look again.
                SlotWrite::Conflict => {}
                SlotWrite::Failed(error) => {
                    self.tolerate(&mut failures, "taking", host, error).await?;
                }
            }
        }
    }

    pub async fn release(
        &self,
        permit: HostPermit,
        slow_down: Option<Duration>,
    ) -> Result<(), HostGateError> {
        let Ticket::Nats {
            revision,
            next_allowed_at_ms: floor_ms,
        } = permit.ticket
        else {
            // A permit of another gate: nothing of ours is held.
            return Ok(());
        };
        let host = permit.host;
        let key = host.bucket_key();
        let pause = slow_down.map_or(self.config.spacing, |slow_down| {
            slow_down.max(self.config.spacing)
        });
        let next_allowed_at_ms = wall_clock_ms().saturating_add(millis(pause)).max(floor_ms);
        let freed = StoredHostSlot {
            host: host.as_str().to_owned(),
            holder: None,
            lease_until_ms: None,
            next_allowed_at_ms,
        };
        let mut failures = 0;
        loop {
            match self.write_slot(&key, &freed, Some(revision)).await {
                SlotWrite::Written(_) => return Ok(()),
                SlotWrite::Conflict => break,
                SlotWrite::Failed(error) => {
                    self.tolerate(&mut failures, "releasing", &host, error)
                        .await?;
                }
            }
        }
        // The lease expired and another instance has taken (or freed) the host
        // since: its slot is not ours to free, but a slow-down the site asked for
        // must still hold, so push its next allowed time later.
        tracing::warn!(%host, "host gate lease expired before release");
        if slow_down.is_none() {
            return Ok(());
        }
        loop {
            let (slot, revision) = match self.read_slot(&key).await {
                Ok(read) => read,
                Err(error) => {
                    self.tolerate(&mut failures, "reading", &host, Box::new(error))
                        .await?;
                    continue;
                }
            };
            let mut slowed = slot.unwrap_or_else(|| freed.clone());
            if slowed.next_allowed_at_ms >= next_allowed_at_ms {
                return Ok(());
            }
            slowed.next_allowed_at_ms = next_allowed_at_ms;
            match self.write_slot(&key, &slowed, revision).await {
                SlotWrite::Written(_) => return Ok(()),
                SlotWrite::Conflict => {}
                SlotWrite::Failed(error) => {
                    self.tolerate(&mut failures, "slowing down", &host, error)
                        .await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_key_is_host_and_port_and_its_bucket_key_is_valid() {
        let url = Url::parse("https://Shop.Example/product/1").unwrap();
        let host = HostKey::of_url(&url).unwrap();
        assert_eq!(host.as_str(), "shop.example:443");
        assert_eq!(host.bucket_key(), "73686f702e6578616d706c653a343433");
        let ipv6 = HostKey::of_url(&Url::parse("http://[::1]:8080/").unwrap()).unwrap();
        assert_eq!(ipv6.as_str(), "[::1]:8080");
        assert!(ipv6
            .bucket_key()
            .bytes()
            .all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(
            HostKey::of_url(&Url::parse("http://shop.example/").unwrap()),
            Some(host),
            "each port is its own host"
        );
    }

    #[test]
    fn a_stored_slot_reads_as_documented() {
        let held: StoredHostSlot = serde_json::from_str(
            r#"{"host":"shop.example:443","holder":"pid1-x","lease_until_ms":1000,"next_allowed_at_ms":500}"#,
        )
        .unwrap();
        assert_eq!(
            held.available_at_ms(200),
            1200,
            "a held host: one spacing after the lease"
        );
        let free: StoredHostSlot =
            serde_json::from_str(r#"{"host":"shop.example:443","next_allowed_at_ms":500}"#)
                .unwrap();
        assert_eq!(free.available_at_ms(200), 500);
        assert_eq!(
            serde_json::to_string(&free).unwrap(),
            r#"{"host":"shop.example:443","next_allowed_at_ms":500}"#
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_in_process_gate_spaces_requests_and_honours_a_slow_down() {
        let gate = InProcessHostGate::new(HostGateConfig {
            spacing: Duration::from_secs(5),
            ..HostGateConfig::default()
        });
        let host = HostKey::new("shop.example", 443);
        let other_host = HostKey::new("other.example", 443);

        let first = gate.acquire(&host).await;
        assert_eq!(first.waited(), Duration::ZERO);
        // Another host is not held up.
        let other = gate.acquire(&other_host).await;
        assert_eq!(other.waited(), Duration::ZERO);
        gate.release(other, None);

        let waiter = tokio::spawn({
            let gate = gate.clone();
            let host = host.clone();
            async move { gate.acquire(&host).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiter.is_finished(), "held: the second request waits");
        gate.release(first, None);
        let second = waiter.await.unwrap();
        assert_eq!(
            second.waited(),
            Duration::from_secs(7),
            "2 s held + 5 s spacing"
        );

        gate.release(second, Some(Duration::from_secs(60)));
        let third = gate.acquire(&host).await;
        assert_eq!(
            third.waited(),
            Duration::from_secs(60),
            "the site asked for 60 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_in_process_permit_frees_the_host_after_its_lease() {
        let gate = InProcessHostGate::new(HostGateConfig {
            spacing: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            ..HostGateConfig::default()
        });
        let host = HostKey::new("shop.example", 443);
        let abandoned = gate.acquire(&host).await;
        drop(abandoned);
        let next = gate.acquire(&host).await;
        assert_eq!(next.waited(), Duration::from_secs(35));
    }
}
