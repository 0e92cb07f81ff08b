//! The embedded bus: one SQLite file (WAL) shared by every service on the machine, and safe
//! for several processes; a committed publish or settlement survives `kill -9`.
//!
//! Each subscription's copy of a message is a row in `deliveries`; locks are a token and
//! an expiry time on the row, so a receiver that dies simply lets its locks expire.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::clock::{millis, now_ms};
use crate::usage::{Counted, count};

use crate::file_guard::FileGuard;

use super::{
    BusError, CloudEvent, DeadLetter, Delivery, EventBus, LockToken, Message, SubscriptionCounts,
    SubscriptionOptions,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subscriptions (
    topic TEXT NOT NULL,
    name TEXT NOT NULL,
    max_delivery_count INTEGER NOT NULL,
    lock_ms INTEGER NOT NULL,
    PRIMARY KEY (topic, name)
);
CREATE TABLE IF NOT EXISTS published (
    topic TEXT NOT NULL,
    message_id TEXT NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (topic, message_id)
);
-- Expired ids are found by age: without it each publish scans every id in the window.
CREATE INDEX IF NOT EXISTS published_expiry ON published (published_at);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    subscription TEXT NOT NULL,
    message_id TEXT NOT NULL,
    message TEXT NOT NULL,
    available_at INTEGER NOT NULL,
    delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT,
    locked_until INTEGER,
    dead INTEGER NOT NULL DEFAULT 0,
    dead_reason TEXT,
    dead_description TEXT,
    UNIQUE (topic, subscription, message_id)
);
CREATE INDEX IF NOT EXISTS deliveries_ready ON deliveries (topic, subscription, dead, available_at);
CREATE INDEX IF NOT EXISTS deliveries_lock ON deliveries (lock_token);
-- Event types let into a subscription besides its own filter (EventBus::add_type_rule).
CREATE TABLE IF NOT EXISTS type_rules (
    topic TEXT NOT NULL,
    subscription TEXT NOT NULL,
    name TEXT NOT NULL,
    event_types TEXT NOT NULL,
    PRIMARY KEY (topic, subscription, name)
);
";

/// Added after the first release: a subscription's event-type filter (a JSON array; NULL
/// takes every message).
fn migrate(connection: &Connection) -> Result<(), BusError> {
    connection.execute_batch(SCHEMA).map_err(backend)?;
    let has_filter: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('subscriptions') WHERE name = 'event_types'",
            [],
            |row| row.get(0),
        )
        .map_err(backend)?;
    if has_filter == 0 {
        connection
            .execute_batch("ALTER TABLE subscriptions ADD COLUMN event_types TEXT")
            .map_err(backend)?;
    }
    Ok(())
}

/// How long a message id is remembered for duplicate detection.
const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

#[derive(Clone)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

struct Inner {
    connection: Mutex<Connection>,
    path: std::path::PathBuf,
    /// Whether the file is still the one at the path (see [`FileGuard`]).
    guard: FileGuard,
    duplicate_window: Duration,
    /// Per subscription, moved whenever a message may have become ready in it.
    wakers: Mutex<HashMap<(String, String), watch::Sender<u64>>>,
    /// Operations through this connection that may have changed what a subscription holds.
    changes: AtomicU64,
    /// Subscriptions a receive found nothing ready in, and until when that holds.
    idle: Mutex<HashMap<(String, String), Idle>>,
    /// How often the file is looked at for what other processes commit (see
    /// [`watch_other_processes`]), in milliseconds.
    watch_every_ms: AtomicU64,
    watching: std::sync::atomic::AtomicBool,
}

/// A subscription with nothing ready to deliver, as one receive saw it: while no operation
/// ran through this connection (`changes`), no other connection committed (SQLite's
/// `data_version`) and `until` (the first locked or scheduled message's time) has not come,
/// a receive finds nothing again and is answered without a transaction, and its worker
/// need not look again before `until` unless woken.
#[derive(Clone, Copy)]
struct Idle {
    changes: u64,
    data_version: i64,
    until: i64,
}

/// However a subscription looks, a receive runs in full at least this often.
const IDLE_RECHECK_MS: i64 = 30_000;

/// How often another process's commits are looked for, unless set ([`EmbeddedBus::watch_every`]).
const DEFAULT_WATCH_EVERY_MS: u64 = 1_000;

impl Inner {
    /// Wakes the receivers of one subscription.
    fn wake(&self, topic: &str, subscription: &str) {
        if let Ok(wakers) = self.wakers.lock()
            && let Some(waker) = wakers.get(&(topic.to_owned(), subscription.to_owned()))
        {
            waker.send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// Wakes every receiver (another process committed: to which subscription is unknown).
    fn wake_all(&self) {
        if let Ok(wakers) = self.wakers.lock() {
            for waker in wakers.values() {
                waker.send_modify(|count| *count = count.wrapping_add(1));
            }
        }
    }
}

/// The stored form of a message.
#[derive(Serialize, Deserialize)]
struct StoredMessage {
    event: CloudEvent,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, String>,
}

/// Buses already open in this process, so that services sharing a file in one process
/// (`platform up`) also share wake-ups.
fn open_buses() -> &'static Mutex<HashMap<PathBuf, Weak<Inner>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashMap::new()))
}

fn backend(error: rusqlite::Error) -> BusError {
    BusError::Backend(crate::store::Cause::new(error))
}

impl EmbeddedBus {
    /// Opens (creating if needed) the bus file at `path`.
    pub fn open(path: &Path) -> Result<Self, BusError> {
        Self::open_with_window(path, DEFAULT_DUPLICATE_WINDOW)
    }

    pub fn open_with_window(path: &Path, duplicate_window: Duration) -> Result<Self, BusError> {
        let key = std::fs::canonicalize(path.parent().unwrap_or(Path::new(".")))
            .map(|dir| dir.join(path.file_name().unwrap_or_default()))
            .unwrap_or_else(|_| path.to_owned());
        let mut open = open_buses()
            .lock()
            .map_err(|_| BusError::Backend(("bus registry poisoned").into()))?;
        if let Some(inner) = open.get(&key).and_then(Weak::upgrade) {
            return Ok(Self { inner });
        }
        let inner = Arc::new(connect(path, duplicate_window)?);
        open.insert(key, Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// How often commits by other processes are looked for (`bus.poll_interval_ms`): how
    /// late a receiver here learns of a message published there.
    pub fn watch_every(&self, every: Duration) {
        let millis = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        self.inner.watch_every_ms.store(millis, Ordering::Relaxed);
    }

    /// Runs `work` on the connection; it counts as a change of what subscriptions hold.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &Inner) -> Result<T, BusError> + Send + 'static,
    ) -> Result<T, BusError> {
        self.run_counted(true, work).await
    }

    async fn run_counted<T: Send + 'static>(
        &self,
        counts_as_change: bool,
        work: impl FnOnce(&mut Connection, &Inner) -> Result<T, BusError> + Send + 'static,
    ) -> Result<T, BusError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = inner
                .connection
                .lock()
                .map_err(|_| BusError::Backend(("bus connection poisoned").into()))?;
            inner.guard.check(
                |path| {
                    BusError::Unavailable(
                        (format!("the bus file {} is missing", path.display())).into(),
                    )
                },
                || {
                    *connection = open_connection(&inner.path)?;
                    // What was known of the old file says nothing of this one.
                    if let Ok(mut idle) = inner.idle.lock() {
                        idle.clear();
                    }
                    Ok(())
                },
            )?;
            let result = work(&mut connection, &inner);
            // Counted once done, the connection still held: a receive that reads the count
            // afterwards also sees what was written.
            if counts_as_change {
                inner.changes.fetch_add(1, Ordering::SeqCst);
            }
            result
        })
        .await
        .map_err(|e| BusError::Backend((format!("bus task failed: {e}")).into()))?
    }

    /// Whether a receive on the subscription is sure to find nothing (see [`Idle`]). Never
    /// waits: a connection in use by another operation means "not sure".
    fn known_idle(&self, topic: &str, subscription: &str) -> bool {
        let key = (topic.to_owned(), subscription.to_owned());
        let Some(idle) = self
            .inner
            .idle
            .lock()
            .ok()
            .and_then(|idle| idle.get(&key).copied())
        else {
            return false;
        };
        if idle.changes != self.inner.changes.load(Ordering::SeqCst) || now_ms() >= idle.until {
            return false;
        }
        let Ok(connection) = self.inner.connection.try_lock() else {
            return false;
        };
        data_version(&connection).is_ok_and(|version| version == idle.data_version)
    }
}

/// A connection of its own to the bus file at `path`.
fn connect(path: &Path, duplicate_window: Duration) -> Result<Inner, BusError> {
    crate::private_files::ensure_private_file(path)
        .map_err(|e| BusError::Unavailable((format!("{}: {e}", path.display())).into()))?;
    let connection = open_connection(path)?;
    migrate(&connection)?;
    Ok(Inner {
        connection: Mutex::new(connection),
        path: path.to_owned(),
        guard: FileGuard::new("bus", path),
        duplicate_window,
        wakers: Mutex::new(HashMap::new()),
        changes: AtomicU64::new(0),
        idle: Mutex::new(HashMap::new()),
        watch_every_ms: AtomicU64::new(DEFAULT_WATCH_EVERY_MS),
        watching: std::sync::atomic::AtomicBool::new(false),
    })
}

/// Wakes the receivers of this process when another process committed to the bus file.
/// Publishes through this process wake them at once; what another process publishes (the
/// services of `docker compose` share one file) is seen here within `watch_every_ms`.
/// SQLite's `data_version` moves only for other connections' commits, so this process's
/// own traffic wakes nobody twice. One look per bus, however many subscriptions wait:
/// each waiting worker looking for itself was most of an idle platform's wake-ups.
async fn watch_other_processes(inner: Weak<Inner>) {
    /// A watch dropped with its runtime lets the next receiver start another.
    struct Watching(Weak<Inner>);
    impl Drop for Watching {
        fn drop(&mut self) {
            if let Some(inner) = self.0.upgrade() {
                inner.watching.store(false, Ordering::SeqCst);
            }
        }
    }
    let _watching = Watching(inner.clone());
    let mut seen: Option<i64> = None;
    loop {
        let every = match inner.upgrade() {
            Some(inner) => Duration::from_millis(inner.watch_every_ms.load(Ordering::Relaxed)),
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        // A connection in use cannot be asked: the receivers look for themselves.
        let version = inner
            .connection
            .try_lock()
            .ok()
            .and_then(|connection| data_version(&connection).ok());
        match version {
            Some(version) if seen == Some(version) => {}
            Some(version) => {
                seen = Some(version);
                inner.wake_all();
            }
            None => {
                seen = None;
                inner.wake_all();
            }
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection, BusError> {
    crate::sqlite::open(path, false, "NORMAL")
        .map_err(|e| BusError::Unavailable((format!("{}: {e}", path.display())).into()))
}

fn data_version(connection: &Connection) -> rusqlite::Result<i64> {
    connection
        .prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))
}

/// When the subscription's first locked or scheduled message becomes ready, bounded by
/// [`IDLE_RECHECK_MS`].
fn idle_until(tx: &Connection, topic: &str, subscription: &str, now: i64) -> Result<i64, BusError> {
    let next: Option<i64> = tx
        .prepare_cached(
            "SELECT MIN(MAX(available_at, COALESCE(locked_until, 0))) FROM deliveries
             WHERE topic = ?1 AND subscription = ?2 AND dead = 0",
        )
        .and_then(|mut statement| {
            statement.query_row(params![topic, subscription], |row| row.get(0))
        })
        .map_err(backend)?;
    Ok(next.map_or(now + IDLE_RECHECK_MS, |next| {
        next.min(now + IDLE_RECHECK_MS)
    }))
}

fn subscription_exists(
    connection: &Connection,
    topic: &str,
    subscription: &str,
) -> Result<(i64, i64), BusError> {
    connection
        .prepare_cached(
            "SELECT max_delivery_count, lock_ms FROM subscriptions WHERE topic = ?1 AND name = ?2",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![topic, subscription], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
        })
        .map_err(backend)?
        .ok_or_else(|| BusError::UnknownSubscription {
            topic: topic.to_owned(),
            subscription: subscription.to_owned(),
        })
}

fn decode(text: &str) -> Result<Message, BusError> {
    let stored: StoredMessage = serde_json::from_str(text)
        .map_err(|e| BusError::Backend((format!("stored message: {e}")).into()))?;
    Ok(Message {
        event: stored.event,
        correlation_id: stored.correlation_id,
        properties: stored.properties,
        scheduled_for: None,
    })
}

/// Completing a delivery removes it (see [`settle`]).
const COMPLETE: &str = "DELETE FROM deliveries INDEXED BY deliveries_lock";

/// Applies a settlement to the delivery holding `lock`, if the lock is still held. `sql`
/// names the lock index (`INDEXED BY deliveries_lock`): left to itself SQLite prefers the
/// subscription's index and walks every delivery the subscription holds.
fn settle(
    connection: &Connection,
    topic: &str,
    subscription: &str,
    lock: &LockToken,
    sql: &str,
    extra: &[&dyn rusqlite::ToSql],
) -> Result<(), BusError> {
    let now = now_ms();
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&topic, &subscription, &lock.0, &now];
    values.extend_from_slice(extra);
    let changed = connection
        .prepare_cached(&format!(
            "{sql} WHERE topic = ?1 AND subscription = ?2 AND lock_token = ?3 AND locked_until > ?4 AND dead = 0"
        ))
        .and_then(|mut statement| statement.execute(values.as_slice()))
        .map_err(backend)?;
    if changed == 1 {
        count(Counted::Settled, 1);
        Ok(())
    } else {
        Err(BusError::LockLost)
    }
}

/// A message ready to be stored: checked for size, serialized, its delivery time known.
struct Outgoing {
    id: String,
    event_type: String,
    text: String,
    available_at: i64,
}

impl Outgoing {
    fn of(message: Message) -> Result<Self, BusError> {
        let text = serde_json::to_string(&StoredMessage {
            event: message.event.clone(),
            correlation_id: message.correlation_id.clone(),
            properties: message.properties.clone(),
        })
        .map_err(|e| BusError::Backend((e.to_string()).into()))?;
        if text.len() > super::MAX_MESSAGE_BYTES {
            return Err(BusError::Rejected(
                (format!(
                    "the message is {} bytes; at most {} are accepted",
                    text.len(),
                    super::MAX_MESSAGE_BYTES
                ))
                .into(),
            ));
        }
        let available_at = message
            .scheduled_for
            // Rounded up: a scheduled message is never delivered early.
            .map(|at| {
                let nanos = (at - OffsetDateTime::UNIX_EPOCH).whole_nanoseconds();
                i64::try_from((nanos + 999_999) / 1_000_000).unwrap_or(i64::MAX)
            })
            .unwrap_or_else(now_ms);
        Ok(Self {
            id: message.event.id,
            event_type: message.event.event_type,
            text,
            available_at,
        })
    }
}

/// Stores `outgoing` for every subscription of `topic` that takes it, within `tx`; returns
/// those subscriptions (none when its id was published within the duplicate-detection
/// window: it is dropped).
fn publish_in(
    tx: &rusqlite::Transaction<'_>,
    inner: &Inner,
    topic: &str,
    outgoing: &Outgoing,
) -> Result<Vec<String>, BusError> {
    let now = now_ms();
    let window_start = now - millis(inner.duplicate_window);
    let seen: Option<i64> = tx
        .prepare_cached("SELECT published_at FROM published WHERE topic = ?1 AND message_id = ?2")
        .and_then(|mut statement| {
            statement
                .query_row(params![topic, outgoing.id], |row| row.get(0))
                .optional()
        })
        .map_err(backend)?;
    if seen.is_some_and(|at| at > window_start) {
        return Ok(Vec::new());
    }
    tx.prepare_cached(
        "INSERT INTO published (topic, message_id, published_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (topic, message_id) DO UPDATE SET published_at = excluded.published_at",
    )
    .and_then(|mut statement| statement.execute(params![topic, outgoing.id, now]))
    .map_err(backend)?;
    let taken = tx
        .prepare_cached(
        "INSERT OR IGNORE INTO deliveries (topic, subscription, message_id, message, available_at)
         SELECT topic, name, ?2, ?3, ?4 FROM subscriptions WHERE topic = ?1
           AND (event_types IS NULL OR EXISTS (SELECT 1 FROM json_each(event_types) WHERE value = ?5)
             OR EXISTS (SELECT 1 FROM type_rules AS r, json_each(r.event_types) AS t
                        WHERE r.topic = ?1 AND r.subscription = subscriptions.name AND t.value = ?5))
         RETURNING subscription",
    )
    .and_then(|mut statement| {
        statement
            .query_map(
                params![
                    topic,
                    outgoing.id,
                    outgoing.text,
                    outgoing.available_at,
                    outgoing.event_type
                ],
                |row| row.get::<_, String>(0),
            )?
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(backend)?;
    count(Counted::Published, 1);
    // Forget ids that left the window, a few at a time.
    tx.prepare_cached(
        "DELETE FROM published WHERE rowid IN (SELECT rowid FROM published WHERE published_at < ?1 LIMIT 100)",
    )
    .and_then(|mut statement| statement.execute(params![window_start]))
    .map_err(backend)?;
    Ok(taken)
}

#[async_trait]
impl EventBus for EmbeddedBus {
    async fn ensure_subscription(
        &self,
        topic: &str,
        subscription: &str,
        options: SubscriptionOptions,
    ) -> Result<(), BusError> {
        let (topic, subscription) = (topic.to_owned(), subscription.to_owned());
        let event_types = if options.event_types.is_empty() && !options.types_by_rule {
            None
        } else {
            Some(
                serde_json::to_string(&options.event_types)
                    .map_err(|e| BusError::Backend((e.to_string()).into()))?,
            )
        };
        self.run(move |connection, _| {
            connection
                .execute(
                    "INSERT INTO subscriptions (topic, name, max_delivery_count, lock_ms, event_types) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (topic, name) DO UPDATE SET max_delivery_count = excluded.max_delivery_count,
                       lock_ms = excluded.lock_ms, event_types = excluded.event_types",
                    params![topic, subscription, options.max_delivery_count, millis(options.lock_duration), event_types],
                )
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn add_type_rule(
        &self,
        topic: &str,
        subscription: &str,
        name: &str,
        event_types: &[String],
    ) -> Result<(), BusError> {
        super::type_rules::check_rule(name, event_types)?;
        let types = serde_json::to_string(event_types)
            .map_err(|e| BusError::Backend(e.to_string().into()))?;
        let (topic, subscription, name) =
            (topic.to_owned(), subscription.to_owned(), name.to_owned());
        self.run(move |connection, _| {
            subscription_exists(connection, &topic, &subscription)?;
            connection
                .execute(
                    "INSERT OR IGNORE INTO type_rules (topic, subscription, name, event_types) VALUES (?1, ?2, ?3, ?4)",
                    params![topic, subscription, name, types],
                )
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn type_rules(&self, topic: &str, subscription: &str) -> Result<Vec<String>, BusError> {
        let (topic, subscription) = (topic.to_owned(), subscription.to_owned());
        self.run_counted(false, move |connection, _| {
            subscription_exists(connection, &topic, &subscription)?;
            let mut statement = connection
                .prepare_cached(
                    "SELECT name FROM type_rules WHERE topic = ?1 AND subscription = ?2 ORDER BY name",
                )
                .map_err(backend)?;
            let names = statement
                .query_map(params![topic, subscription], |row| row.get(0))
                .map_err(backend)?
                .collect::<Result<Vec<String>, _>>()
                .map_err(backend)?;
            Ok(names)
        })
        .await
    }

    async fn remove_type_rule(
        &self,
        topic: &str,
        subscription: &str,
        name: &str,
    ) -> Result<(), BusError> {
        let (topic, subscription, name) =
            (topic.to_owned(), subscription.to_owned(), name.to_owned());
        self.run(move |connection, _| {
            connection
                .execute(
                    "DELETE FROM type_rules WHERE topic = ?1 AND subscription = ?2 AND name = ?3",
                    params![topic, subscription, name],
                )
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn publish(&self, topic: &str, message: Message) -> Result<(), BusError> {
        let outgoing = Outgoing::of(message)?;
        let owned_topic = topic.to_owned();
        let taken = self
            .run(move |connection, inner| {
                let tx = connection
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend)?;
                let taken = publish_in(&tx, inner, &owned_topic, &outgoing)?;
                tx.commit().map_err(backend)?;
                Ok(taken)
            })
            .await?;
        for subscription in taken {
            self.inner.wake(topic, &subscription);
        }
        Ok(())
    }

    async fn publish_many(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<(), BusError>>, BusError> {
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut accepted = Vec::with_capacity(messages.len());
        for message in messages {
            match Outgoing::of(message) {
                Ok(outgoing) => {
                    accepted.push(outgoing);
                    outcomes.push(Ok(()));
                }
                Err(refused) => outcomes.push(Err(refused)),
            }
        }
        let owned_topic = topic.to_owned();
        // One transaction for the lot: one commit in place of one per message.
        let taken = self
            .run(move |connection, inner| {
                let tx = connection
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend)?;
                let mut taken = std::collections::BTreeSet::new();
                for outgoing in &accepted {
                    taken.extend(publish_in(&tx, inner, &owned_topic, outgoing)?);
                }
                tx.commit().map_err(backend)?;
                Ok(taken)
            })
            .await?;
        for subscription in taken {
            self.inner.wake(topic, &subscription);
        }
        Ok(outcomes)
    }

    async fn receive(
        &self,
        topic: &str,
        subscription: &str,
        max: usize,
    ) -> Result<Vec<Delivery>, BusError> {
        if self.known_idle(topic, subscription) {
            count(Counted::EmptyReceives, 1);
            return Ok(Vec::new());
        }
        let (topic, subscription) = (topic.to_owned(), subscription.to_owned());
        let max = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        // A receive changes only the locks of its own subscription's messages.
        self.run_counted(false, move |connection, inner| {
            let changes = inner.changes.load(Ordering::SeqCst);
            let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            // Inside the write transaction no other connection commits: what this receive
            // reads is what the version says.
            let version = data_version(&tx).map_err(backend)?;
            let (max_deliveries, lock_ms) = subscription_exists(&tx, &topic, &subscription)?;
            let now = now_ms();
            // One statement locks the batch: each delivery's lock is the receive's token and
            // its position.
            let token = uuid::Uuid::new_v4().to_string();
            let mut locked: Vec<(i64, i64, String, i64, String)> = {
                let mut statement = tx
                    .prepare_cached(
                        "UPDATE deliveries SET delivery_count = delivery_count + 1,
                           lock_token = ?5 || '.' || seq, locked_until = ?6
                         WHERE seq IN (SELECT seq FROM deliveries
                           WHERE topic = ?1 AND subscription = ?2 AND dead = 0 AND available_at <= ?3
                             AND (locked_until IS NULL OR locked_until <= ?3)
                           ORDER BY available_at, seq LIMIT ?4)
                         RETURNING available_at, seq, message, delivery_count, lock_token",
                    )
                    .map_err(backend)?;
                let rows = statement
                    .query_map(params![topic, subscription, now, max, token, now + lock_ms], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
                    })
                    .map_err(backend)?;
                rows.collect::<Result<_, _>>().map_err(backend)?
            };
            locked.sort_by_key(|(available_at, seq, ..)| (*available_at, *seq));
            let idle = if locked.is_empty() {
                Some(idle_until(&tx, &topic, &subscription, now)?)
            } else {
                None
            };
            let mut deliveries = Vec::with_capacity(locked.len());
            for (_, seq, text, count, lock) in locked {
                if count > max_deliveries {
                    // Delivered as often as the subscription allows: dead-lettered instead,
                    // its count as it was.
                    tx.prepare_cached(
                        "UPDATE deliveries SET dead = 1, lock_token = NULL, locked_until = NULL,
                         delivery_count = delivery_count - 1,
                         dead_reason = 'MaxDeliveryCountExceeded',
                         dead_description = 'delivered ' || (delivery_count - 1) || ' times without being completed'
                         WHERE seq = ?1",
                    )
                    .and_then(|mut statement| statement.execute(params![seq]))
                    .map_err(backend)?;
                    continue;
                }
                deliveries.push(Delivery {
                    message: decode(&text)?,
                    delivery_count: u32::try_from(count).unwrap_or(u32::MAX),
                    lock: LockToken(lock),
                });
            }
            tx.commit().map_err(backend)?;
            match deliveries.len() {
                0 => count(Counted::EmptyReceives, 1),
                received => count(Counted::Received, received as u64),
            }
            let key = (topic, subscription);
            if let Ok(mut known) = inner.idle.lock() {
                match idle {
                    Some(until) => {
                        known.insert(key, Idle { changes, data_version: version, until });
                    }
                    None => {
                        known.remove(&key);
                    }
                }
            }
            Ok(deliveries)
        })
        .await
    }

    async fn complete(
        &self,
        topic: &str,
        subscription: &str,
        lock: &LockToken,
    ) -> Result<(), BusError> {
        let (topic, subscription, lock) = (topic.to_owned(), subscription.to_owned(), lock.clone());
        self.run(move |connection, _| {
            settle(connection, &topic, &subscription, &lock, COMPLETE, &[])
        })
        .await
    }

    async fn complete_many(
        &self,
        topic: &str,
        subscription: &str,
        locks: &[LockToken],
    ) -> Result<Vec<Result<(), BusError>>, BusError> {
        let (topic, subscription, locks) =
            (topic.to_owned(), subscription.to_owned(), locks.to_vec());
        // One transaction for the lot: one commit in place of one per message.
        self.run(move |connection, _| {
            let tx = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let mut outcomes = Vec::with_capacity(locks.len());
            for lock in &locks {
                match settle(&tx, &topic, &subscription, lock, COMPLETE, &[]) {
                    Err(BusError::LockLost) => outcomes.push(Err(BusError::LockLost)),
                    Err(other) => return Err(other),
                    Ok(()) => outcomes.push(Ok(())),
                }
            }
            tx.commit().map_err(backend)?;
            Ok(outcomes)
        })
        .await
    }

    async fn abandon(
        &self,
        topic: &str,
        subscription: &str,
        lock: &LockToken,
        delay: Duration,
    ) -> Result<(), BusError> {
        let (owned_topic, owned_subscription, lock) =
            (topic.to_owned(), subscription.to_owned(), lock.clone());
        // One millisecond more: the clock is read in whole milliseconds; never come back early.
        let available_at = now_ms() + millis(delay) + i64::from(!delay.is_zero());
        self.run(move |connection, _| {
            settle(
                connection,
                &owned_topic,
                &owned_subscription,
                &lock,
                "UPDATE deliveries INDEXED BY deliveries_lock SET lock_token = NULL, locked_until = NULL, available_at = ?5",
                &[&available_at],
            )
        })
        .await?;
        self.inner.wake(topic, subscription);
        Ok(())
    }

    async fn dead_letter(
        &self,
        topic: &str,
        subscription: &str,
        lock: &LockToken,
        reason: &str,
        description: &str,
    ) -> Result<(), BusError> {
        let (topic, subscription, lock) = (topic.to_owned(), subscription.to_owned(), lock.clone());
        let (reason, description) = (reason.to_owned(), description.to_owned());
        self.run(move |connection, _| {
            settle(
                connection,
                &topic,
                &subscription,
                &lock,
                "UPDATE deliveries INDEXED BY deliveries_lock SET dead = 1, lock_token = NULL, locked_until = NULL, dead_reason = ?5, dead_description = ?6",
                &[&reason, &description],
            )
        })
        .await
    }

    async fn dead_letters(
        &self,
        topic: &str,
        subscription: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError> {
        let (topic, subscription) = (topic.to_owned(), subscription.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run(move |connection, _| {
            subscription_exists(connection, &topic, &subscription)?;
            let mut statement = connection
                .prepare_cached(
                    "SELECT message, dead_reason, dead_description, delivery_count FROM deliveries
                     WHERE topic = ?1 AND subscription = ?2 AND dead = 1 ORDER BY seq LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = statement
                .query_map(params![topic, subscription, limit], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Option<String>>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .map_err(backend)?;
            let mut letters = Vec::new();
            for row in rows {
                let (text, reason, description, count) = row.map_err(backend)?;
                letters.push(DeadLetter {
                    message: decode(&text)?,
                    reason: reason.unwrap_or_default(),
                    description: description.unwrap_or_default(),
                    delivery_count: u32::try_from(count).unwrap_or(u32::MAX),
                });
            }
            Ok(letters)
        })
        .await
    }

    async fn replay(
        &self,
        topic: &str,
        subscription: &str,
        message_id: &str,
    ) -> Result<bool, BusError> {
        let (owned_topic, owned_subscription, message_id) = (
            topic.to_owned(),
            subscription.to_owned(),
            message_id.to_owned(),
        );
        let replayed = self
            .run(move |connection, _| {
                let (topic, subscription) = (owned_topic, owned_subscription);
                subscription_exists(connection, &topic, &subscription)?;
                let changed = connection
                    .execute(
                        "UPDATE deliveries SET dead = 0, delivery_count = 0, available_at = ?4, dead_reason = NULL, dead_description = NULL
                         WHERE topic = ?1 AND subscription = ?2 AND message_id = ?3 AND dead = 1",
                        params![topic, subscription, message_id, now_ms()],
                    )
                    .map_err(backend)?;
                Ok(changed == 1)
            })
            .await?;
        if replayed {
            self.inner.wake(topic, subscription);
        }
        Ok(replayed)
    }

    async fn counts(
        &self,
        topic: &str,
        subscription: &str,
    ) -> Result<SubscriptionCounts, BusError> {
        let (topic, subscription) = (topic.to_owned(), subscription.to_owned());
        self.run(move |connection, _| {
            subscription_exists(connection, &topic, &subscription)?;
            let (waiting, dead_lettered): (i64, i64) = connection
                .query_row(
                    "SELECT COALESCE(SUM(dead = 0), 0), COALESCE(SUM(dead = 1), 0)
                     FROM deliveries WHERE topic = ?1 AND subscription = ?2",
                    params![topic, subscription],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(backend)?;
            Ok(SubscriptionCounts {
                waiting: u64::try_from(waiting).unwrap_or(0),
                dead_lettered: u64::try_from(dead_lettered).unwrap_or(0),
            })
        })
        .await
    }

    async fn discard(
        &self,
        topic: &str,
        subscription: &str,
        message_id: &str,
    ) -> Result<bool, BusError> {
        let (topic, subscription, message_id) = (
            topic.to_owned(),
            subscription.to_owned(),
            message_id.to_owned(),
        );
        self.run(move |connection, _| {
            subscription_exists(connection, &topic, &subscription)?;
            let removed = connection
                .execute(
                    "DELETE FROM deliveries
                     WHERE topic = ?1 AND subscription = ?2 AND message_id = ?3 AND dead = 1",
                    params![topic, subscription, message_id],
                )
                .map_err(backend)?;
            Ok(removed == 1)
        })
        .await
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.run(|connection, _| {
            connection
                .query_row("SELECT 1", [], |_| Ok(()))
                .map_err(backend)
        })
        .await
    }

    fn ready_in(&self, topic: &str, subscription: &str) -> Option<Duration> {
        let key = (topic.to_owned(), subscription.to_owned());
        let idle = self.inner.idle.lock().ok()?.get(&key).copied()?;
        // Something was written since that receive: what it saw may no longer hold.
        if idle.changes != self.inner.changes.load(Ordering::SeqCst) {
            return None;
        }
        let wait = idle.until.saturating_sub(now_ms()).max(0);
        Some(Duration::from_millis(u64::try_from(wait).unwrap_or(0)))
    }

    fn wake_ups(&self, topic: &str, subscription: &str) -> Option<watch::Receiver<u64>> {
        if !self.inner.watching.swap(true, Ordering::SeqCst) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(watch_other_processes(Arc::downgrade(&self.inner)));
                }
                // Outside a runtime nobody could wait on a wake-up anyway; the next caller
                // inside one starts the watch.
                Err(_) => self.inner.watching.store(false, Ordering::SeqCst),
            }
        }
        let mut wakers = self.inner.wakers.lock().ok()?;
        let waker = wakers
            .entry((topic.to_owned(), subscription.to_owned()))
            .or_insert_with(|| watch::channel(0).0);
        Some(waker.subscribe())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn thing(n: i64) -> Message {
        Message::new(CloudEvent::new(
            "tests",
            "tests.thing.happened.v1",
            "x",
            serde_json::json!({"n": n}),
        ))
    }

    use crate::file_guard::files::{copy_database, take_away};

    /// As the store: a bus file moved away is refused rather than written where nobody
    /// will find it, and one restored from a copy is opened again, without a restart.
    #[tokio::test]
    async fn a_bus_file_taken_away_is_refused_and_one_restored_from_a_copy_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.db");
        let bus = EmbeddedBus::open(&path).unwrap();
        bus.ensure_subscription("t", "s", SubscriptionOptions::default())
            .await
            .unwrap();
        bus.publish("t", thing(1)).await.unwrap();
        let backup = dir.path().join("backup.db");
        copy_database(&path, &backup);
        take_away(&path);
        let refused = bus.publish("t", thing(2)).await;
        assert!(
            matches!(refused, Err(BusError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(bus.ping().await.is_err());
        copy_database(&backup, &path);
        bus.ping().await.unwrap();
        bus.publish("t", thing(3)).await.unwrap();
        let received = bus.receive("t", "s", 10).await.unwrap();
        let numbers: Vec<i64> = received
            .iter()
            .map(|d| d.message.event.data["n"].as_i64().unwrap())
            .collect();
        assert_eq!(numbers, [1, 3], "the restored message and the one after it");
        drop(bus);
        let reopened = EmbeddedBus {
            inner: Arc::new(connect(&path, DEFAULT_DUPLICATE_WINDOW).unwrap()),
        };
        let counts = reopened.counts("t", "s").await.unwrap();
        assert_eq!(
            counts.waiting, 2,
            "the publish after the restore went to the file at the path"
        );
    }

    /// A receive that found nothing is answered from memory only while nothing changed:
    /// a publish through another connection (another process) is seen at once.
    #[tokio::test]
    async fn an_idle_subscription_sees_what_another_process_publishes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.db");
        let here = EmbeddedBus::open(&path).unwrap();
        let elsewhere = EmbeddedBus {
            inner: Arc::new(connect(&path, DEFAULT_DUPLICATE_WINDOW).unwrap()),
        };
        here.ensure_subscription("t", "s", SubscriptionOptions::default())
            .await
            .unwrap();
        assert!(here.receive("t", "s", 10).await.unwrap().is_empty());
        assert!(
            here.known_idle("t", "s"),
            "the empty answer was not remembered"
        );
        let event = CloudEvent::new(
            "tests",
            "tests.thing.happened.v1",
            "x",
            serde_json::json!({}),
        );
        elsewhere.publish("t", Message::new(event)).await.unwrap();
        assert!(!here.known_idle("t", "s"));
        assert_eq!(here.receive("t", "s", 10).await.unwrap().len(), 1);
        // Through this connection: counted, not read from SQLite's version.
        let event = CloudEvent::new(
            "tests",
            "tests.thing.happened.v1",
            "y",
            serde_json::json!({}),
        );
        assert!(here.receive("t", "s", 10).await.unwrap().is_empty());
        here.publish("t", Message::new(event)).await.unwrap();
        assert_eq!(here.receive("t", "s", 10).await.unwrap().len(), 1);
    }

    /// A publish wakes the receivers of the subscriptions it reaches, no others: every
    /// worker of a process looking for nothing after each publish was most empty receives.
    #[tokio::test]
    async fn a_publish_wakes_only_the_subscriptions_it_reaches() {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(&dir.path().join("bus.db")).unwrap();
        // No look for other processes' commits during the test (its first wakes everyone).
        bus.watch_every(Duration::from_secs(3600));
        for (name, wanted) in [("a", "t.made.v1"), ("b", "t.sold.v1")] {
            bus.ensure_subscription(
                "t",
                name,
                SubscriptionOptions::default().for_event_types(&[wanted]),
            )
            .await
            .unwrap();
        }
        let (mut a, mut b) = (
            bus.wake_ups("t", "a").unwrap(),
            bus.wake_ups("t", "b").unwrap(),
        );
        let made = Message::new(CloudEvent::new(
            "tests",
            "t.made.v1",
            "x",
            serde_json::json!({}),
        ));
        bus.publish("t", made).await.unwrap();
        assert!(
            a.has_changed().unwrap(),
            "the subscription reached was not woken"
        );
        assert!(
            !b.has_changed().unwrap(),
            "a subscription the publish did not reach was woken"
        );
        a.borrow_and_update();
        let sold = Message::new(CloudEvent::new(
            "tests",
            "t.sold.v1",
            "y",
            serde_json::json!({}),
        ));
        bus.publish_many("t", vec![sold]).await.unwrap();
        assert!(b.has_changed().unwrap() && !a.has_changed().unwrap());
        // Handing a message back wakes its own subscription.
        b.borrow_and_update();
        let delivery = bus.receive("t", "b", 1).await.unwrap().remove(0);
        bus.abandon("t", "b", &delivery.lock, Duration::ZERO)
            .await
            .unwrap();
        assert!(b.has_changed().unwrap() && !a.has_changed().unwrap());
    }

    /// Receivers wait on wake-ups rather than looking for themselves: what another process
    /// publishes must wake them too, and this process's own publishes only once.
    #[tokio::test]
    async fn what_another_process_publishes_wakes_the_receivers_here() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus.db");
        let here = EmbeddedBus::open(&path).unwrap();
        here.watch_every(Duration::from_millis(20));
        let elsewhere = EmbeddedBus {
            inner: Arc::new(connect(&path, DEFAULT_DUPLICATE_WINDOW).unwrap()),
        };
        here.ensure_subscription("t", "s", SubscriptionOptions::default())
            .await
            .unwrap();
        let mut wake_ups = here.wake_ups("t", "s").unwrap();
        // The watch's first look wakes once, knowing nothing yet.
        tokio::time::timeout(Duration::from_secs(10), wake_ups.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(here.receive("t", "s", 10).await.unwrap().is_empty());
        wake_ups.borrow_and_update();
        elsewhere.publish("t", thing(1)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), wake_ups.changed())
            .await
            .expect("a publish by another process woke nobody")
            .unwrap();
        assert_eq!(here.receive("t", "s", 10).await.unwrap().len(), 1);
        // Quiet again: the watch keeps looking, and wakes nobody.
        wake_ups.borrow_and_update();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), wake_ups.changed())
                .await
                .is_err(),
            "woken with nothing published"
        );
    }

    /// A worker that found its subscription empty sleeps until a backed-off message comes
    /// due, not a whole poll interval.
    #[tokio::test]
    async fn an_empty_subscription_says_when_its_backed_off_message_comes_due() {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(&dir.path().join("bus.db")).unwrap();
        bus.ensure_subscription("t", "s", SubscriptionOptions::default())
            .await
            .unwrap();
        let event = CloudEvent::new(
            "tests",
            "tests.thing.happened.v1",
            "x",
            serde_json::json!({}),
        );
        bus.publish("t", Message::new(event)).await.unwrap();
        let held = bus.receive("t", "s", 10).await.unwrap();
        bus.abandon("t", "s", &held[0].lock, Duration::from_millis(300))
            .await
            .unwrap();
        // Written since the last receive: the bus cannot say.
        assert_eq!(bus.ready_in("t", "s"), None);
        assert!(bus.receive("t", "s", 10).await.unwrap().is_empty());
        let due = bus.ready_in("t", "s").unwrap();
        assert!(due <= Duration::from_millis(350), "{due:?}");
    }
}
