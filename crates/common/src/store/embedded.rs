//! The embedded adapter: one SQLite file per service (WAL mode), Cosmos-like semantics.
//!
//! Writes run in `IMMEDIATE` transactions (see [`writer`]) that also move a per-file sequence; the
//! sequence is the document's position on the change feed and, formatted, its ETag. SQLite's
//! file locks make the file safe for several processes; in WAL mode a committed transaction
//! survives the process being killed.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::now_ms;
use crate::file_guard::FileGuard;
use crate::usage::{Counted, count};

mod writer;

use writer::{Deliver, Ran, WriteJob, WriteTx, start_writer};

use super::{
    BatchOp, Cause, ChangeBatch, Checkpoint, Comparison, ContinuationToken, Document,
    DocumentStore, ETag, Json, Page, Query, QueryScope, StoreError, StoredText,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS documents (
    container TEXT NOT NULL,
    pk TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (container, pk, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS documents_by_id ON documents (container, id);
CREATE UNIQUE INDEX IF NOT EXISTS documents_by_seq ON documents (container, seq);
-- Services keep several kinds of document in one container (state, outbox entries,
-- processed-event records) and filter on `kind`; this serves those queries.
CREATE INDEX IF NOT EXISTS documents_by_kind ON documents (container, json_quote(json_extract(body, '$.kind')), id);
CREATE TABLE IF NOT EXISTS sequence (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO sequence (name, value) VALUES ('documents', 0);
";

/// Items written with a time to live carry `expires_at` (Unix ms): hidden from every read
/// from then on, and purged a few at a time by later writes.
const EXPIRY_SCHEMA: &str = "
CREATE INDEX IF NOT EXISTS documents_expiry ON documents (expires_at) WHERE expires_at IS NOT NULL;
";

/// Expired items removed per write transaction: enough to keep up with any write rate that
/// creates them, small enough not to slow the write.
const PURGE_PER_WRITE: i64 = 32;

fn migrate(connection: &Connection) -> Result<(), StoreError> {
    connection.execute_batch(SCHEMA).map_err(backend)?;
    let has_expiry: bool = connection
        .query_row(
            "SELECT COUNT(*) FROM pragma_table_info('documents') WHERE name = 'expires_at'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map_err(backend)?
        > 0;
    if !has_expiry {
        connection
            .execute_batch("ALTER TABLE documents ADD COLUMN expires_at INTEGER")
            .map_err(backend)?;
    }
    connection.execute_batch(EXPIRY_SCHEMA).map_err(backend)
}

/// Removes a few expired items; run once per write transaction.
fn purge_rows(connection: &Connection) -> rusqlite::Result<()> {
    connection
        .prepare_cached(
            "DELETE FROM documents WHERE (container, pk, id) IN (
            SELECT container, pk, id FROM documents WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2)",
        )?
        .execute(params![now_ms(), PURGE_PER_WRITE])?;
    Ok(())
}

/// How hard SQLite flushes at commit. `Normal` in WAL mode keeps every committed write
/// across a process crash (`kill -9`); `Full` also across power loss, at a cost per write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Normal,
    Full,
}

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    durability: Durability,
    /// The writer thread's queue (see [`group_commit`]).
    writer: Mutex<std::sync::mpsc::Sender<WriteJob>>,
    readers: Mutex<Vec<Connection>>,
    /// Counts the files opened at the path: a thread's own reader of an earlier one is
    /// replaced (see [`EmbeddedStore::read_here`]).
    generation: AtomicU64,
    /// Set when a write failed for lack of room or access, until a write succeeds again:
    /// readiness then tries a write itself, and reports why it fails.
    writes_failing: Arc<std::sync::atomic::AtomicBool>,
    /// Whether the file is still the one at the path (see [`FileGuard`]).
    guard: FileGuard,
}

/// Whether a write's failure says the storage itself cannot take writes now.
fn storage_failure(error: &StoreError) -> bool {
    matches!(error, StoreError::Full(_) | StoreError::Unavailable(_))
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        crate::private_files::ensure_private_file(path).map_err(|e| {
            StoreError::Unavailable((format!("cannot create {}: {e}", path.display())).into())
        })?;
        let queue = start_writer(path, durability)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                durability,
                writer: Mutex::new(queue),
                readers: Mutex::new(Vec::new()),
                generation: AtomicU64::new(0),
                writes_failing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                guard: FileGuard::new("store", path),
            }),
        })
    }

    /// Checks that the file the store has open is still the one at its path. Missing: the
    /// store is detached (unavailable) until it is back. Back as another file (restored
    /// from a copy): new connections are opened on it. Nothing needs a restart.
    fn check_attached(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.guard.check(
            |path| {
                StoreError::Unavailable(
                    (format!("the store file {} is missing", path.display())).into(),
                )
            },
            || {
                let queue = start_writer(&inner.path, inner.durability)?;
                if let Ok(mut writer) = inner.writer.lock() {
                    // The old writer thread ends once its queue is dropped.
                    *writer = queue;
                }
                if let Ok(mut readers) = inner.readers.lock() {
                    readers.clear();
                }
                inner.generation.fetch_add(1, Ordering::AcqRel);
                Ok(())
            },
        )
    }

    /// Runs `work` on the writer thread, inside a transaction it may share with other writes
    /// queued at the same time, and answers once that has committed. `work` checks what
    /// could refuse it before it changes anything (see [`writer`]).
    async fn with_writer<T: Send + 'static>(
        &self,
        work: impl FnOnce(&WriteTx<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.check_attached()?;
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let failing = self.inner.writes_failing.clone();
        let job: WriteJob = Box::new(move |tx: Result<&WriteTx<'_>, StoreError>| {
            let result = tx.and_then(work);
            let ran = match &result {
                Ok(_) => Ran::Ok,
                Err(StoreError::Full(_)) => Ran::OutOfRoom,
                Err(_) => Ran::Failed,
            };
            let deliver: Deliver = Box::new(move |commit_error: Option<StoreError>| {
                let outcome = match (commit_error, result) {
                    (Some(error), Ok(_)) => Err(error),
                    (_, result) => result,
                };
                // Only readiness clears this, once a write of its own (a page's worth)
                // goes through: a small write that still fits says little about the room.
                if outcome.as_ref().is_err_and(storage_failure) {
                    failing.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                let _ = reply.send(outcome);
            });
            (ran, deliver)
        });
        let stopped = || StoreError::Backend(("the store's writer has stopped").into());
        self.inner
            .writer
            .lock()
            .map_err(|_| stopped())?
            .send(job)
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Caps the file at `bytes` (rounded down to whole pages), or lifts the cap: writes
    /// past it fail as on a full disk (`StoreError::Full`). For quotas, and for tests of
    /// what a full disk does.
    pub async fn set_size_limit(&self, bytes: Option<u64>) -> Result<(), StoreError> {
        self.with_writer(move |connection| {
            let page_size: u64 = connection
                .query_row("PRAGMA page_size", [], |row| row.get(0))
                .map_err(backend)?;
            // SQLite's own ceiling when no cap is wanted.
            let pages = bytes.map_or(4_294_967_294, |bytes| (bytes / page_size.max(1)).max(1));
            connection
                .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
                .map_err(backend)
        })
        .await
    }

    /// Runs a point read on this thread, through a connection of its own: no hand-off to
    /// another thread and back, which cost a point read more than the read itself. Only
    /// for reads by key or by an index, that take microseconds from pages the OS has
    /// cached; queries and the change feed go to [`Self::with_reader`].
    fn read_here<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.inner.guard.is_detached() {
            self.check_attached()?;
        }
        let generation = self.inner.generation.load(Ordering::Acquire);
        THREAD_READERS.with(|readers| {
            let mut readers = readers
                .try_borrow_mut()
                .map_err(|_| StoreError::Backend(("a point read started inside another").into()))?;
            // Readers of stores that are gone, and of files this store no longer has open.
            readers.retain(|reader| {
                reader.store.strong_count() > 0
                    && (reader.generation == generation
                        || !std::ptr::eq(reader.store.as_ptr(), Arc::as_ptr(&self.inner)))
            });
            let position = readers
                .iter()
                .position(|reader| std::ptr::eq(reader.store.as_ptr(), Arc::as_ptr(&self.inner)));
            let index = match position {
                Some(index) => index,
                None => {
                    let connection =
                        open_connection(&self.inner.path, self.inner.durability, true)?;
                    readers.push(ThreadReader {
                        store: Arc::downgrade(&self.inner),
                        generation,
                        connection,
                    });
                    readers.len() - 1
                }
            };
            work(&readers[index].connection)
        })
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        // Only while detached does a read look at the path: is the file back?
        if self.inner.guard.is_detached() {
            self.check_attached()?;
        }
        let inner = self.inner.clone();
        run_blocking(move || {
            let pooled = inner.readers.lock().ok().and_then(|mut pool| pool.pop());
            let connection = match pooled {
                Some(connection) => connection,
                None => open_connection(&inner.path, inner.durability, true)?,
            };
            let result = work(&connection);
            if let Ok(mut pool) = inner.readers.lock() {
                pool.push(connection);
            }
            result
        })
        .await
    }
}

thread_local! {
    /// This thread's read connections, one per open store (see [`EmbeddedStore::read_here`]).
    static THREAD_READERS: RefCell<Vec<ThreadReader>> = const { RefCell::new(Vec::new()) };
}

struct ThreadReader {
    store: Weak<Inner>,
    generation: u64,
    connection: Connection,
}

/// An item by id in whichever partition holds it. Without the index named, SQLite walks the
/// container in key order to spare the sort of `ORDER BY pk`: every read by id scanned every
/// document (an order's GET took longer with every order taken).
const FIND_BY_ID: &str = "SELECT pk, body, seq FROM documents INDEXED BY documents_by_id
     WHERE container = ?1 AND id = ?2
     AND (expires_at IS NULL OR expires_at > ?3) ORDER BY pk LIMIT 1";

/// The SQL of a query page and its values (the field names are checked identifiers).
fn query_statement(
    container: &str,
    query: &Query,
    position: Option<&ContinuationToken>,
) -> Result<(String, Vec<rusqlite::types::Value>), StoreError> {
    let mut sql = String::from(
        "SELECT pk, id, body, seq FROM documents WHERE container = ? AND (expires_at IS NULL OR expires_at > ?)",
    );
    let mut values: Vec<rusqlite::types::Value> =
        vec![container.to_owned().into(), now_ms().into()];
    if let QueryScope::Partition(pk) = &query.scope {
        sql.push_str(" AND pk = ?");
        values.push(pk.clone().into());
    }
    let sort = query.order_by.as_ref().map(|order| {
        (
            format!("json_extract(body, '$.{}')", order.field),
            order.descending,
        )
    });
    match (&position, &sort) {
        (Some(position), Some((key, descending))) => {
            let beyond = if *descending { "<" } else { ">" };
            let value = sql_value(position.after_value.as_ref().unwrap_or(&Json::Null))?;
            let pk = position.after_pk.clone().unwrap_or_default();
            sql.push_str(&format!(
                " AND ({key} {beyond} ? OR ({key} = ? AND (id > ? OR (id = ? AND pk > ?))))"
            ));
            values.extend([
                value.clone(),
                value,
                position.after_id.clone().into(),
                position.after_id.clone().into(),
                pk.into(),
            ]);
        }
        (Some(position), None) => {
            let pk = position.after_pk.clone().unwrap_or_default();
            sql.push_str(" AND (id > ? OR (id = ? AND pk > ?))");
            values.extend([
                position.after_id.clone().into(),
                position.after_id.clone().into(),
                pk.into(),
            ]);
        }
        _ => {}
    }
    if let Some((key, _)) = &sort {
        sql.push_str(&format!(" AND {key} IS NOT NULL"));
    }
    for filter in &query.filters {
        match filter.comparison {
            // Comparing JSON texts keeps types apart: "1" does not match 1. Strings
            // use the form the `kind` index is built on; `->` keeps booleans JSON.
            Comparison::Eq if filter.value.is_string() => {
                sql.push_str(&format!(
                    " AND json_quote(json_extract(body, '$.{}')) = json(?)",
                    filter.field
                ));
                values.push(serialize(&filter.value)?.into());
            }
            Comparison::Eq => {
                sql.push_str(&format!(" AND (body -> '$.{}') = json(?)", filter.field));
                values.push(serialize(&filter.value)?.into());
            }
            comparison => {
                let same_type = if filter.value.is_string() {
                    "'text'"
                } else {
                    "'integer', 'real'"
                };
                sql.push_str(&format!(
                    " AND json_type(body, '$.{field}') IN ({same_type}) AND json_extract(body, '$.{field}') {op} ?",
                    field = filter.field,
                    op = comparison.sql(),
                ));
                values.push(sql_value(&filter.value)?);
            }
        }
    }
    match &sort {
        Some((key, true)) => sql.push_str(&format!(" ORDER BY {key} DESC, id, pk LIMIT ?")),
        Some((key, false)) => sql.push_str(&format!(" ORDER BY {key}, id, pk LIMIT ?")),
        None => sql.push_str(" ORDER BY id, pk LIMIT ?"),
    }
    values.push(i64::from(query.limit + 1).into());
    Ok((sql, values))
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Backend((format!("store task failed: {e}")).into()))?
}

fn open_connection(
    path: &Path,
    durability: Durability,
    read_only: bool,
) -> Result<Connection, StoreError> {
    let synchronous = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    crate::sqlite::open(path, read_only, synchronous).map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::CannotOpen) | None => {
            StoreError::Unavailable((format!("cannot open {}: {e}", path.display())).into())
        }
        _ => backend(e),
    })
}

fn backend(error: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let code = error.sqlite_error_code();
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Throttled {
            retry_after_ms: 100,
        },
        Some(ErrorCode::DiskFull) => StoreError::Full(Cause::new(error)),
        Some(
            ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied,
        ) => StoreError::Unavailable(Cause::new(error)),
        _ => StoreError::Backend(Cause::new(error)),
    }
}

pub(crate) fn check_batch_size(operations: &[BatchOp]) -> Result<(), StoreError> {
    if operations.is_empty() || operations.len() > super::MAX_BATCH_OPERATIONS {
        return Err(StoreError::Backend(
            (format!(
                "a batch holds 1 to {} operations, got {}",
                super::MAX_BATCH_OPERATIONS,
                operations.len()
            ))
            .into(),
        ));
    }
    Ok(())
}

fn etag_of(seq: i64) -> ETag {
    ETag::new(format!("{seq:016x}"))
}

fn to_document(
    container_pk: String,
    id: String,
    body: String,
    seq: i64,
) -> Result<Document, StoreError> {
    let body: Json =
        serde_json::from_str(&body).map_err(|e| StoreError::Serialization(e.into()))?;
    Ok(Document {
        id,
        partition_key: container_pk,
        body,
        etag: etag_of(seq),
    })
}

/// A live item's stored body and version.
fn stored_body(
    connection: &Connection,
    container: &str,
    pk: &str,
    id: &str,
) -> Result<Option<(String, i64)>, StoreError> {
    connection
        .prepare_cached(
            "SELECT body, seq FROM documents WHERE container = ?1 AND pk = ?2 AND id = ?3
             AND (expires_at IS NULL OR expires_at > ?4)",
        )
        .map_err(backend)?
        .query_row(params![container, pk, id, now_ms()], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()
        .map_err(backend)
}

/// A JSON scalar as the SQL value `json_extract` yields for it.
fn sql_value(value: &Json) -> Result<rusqlite::types::Value, StoreError> {
    use rusqlite::types::Value;
    Ok(match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::Text(s.clone()),
        other => Value::Text(serialize(other)?),
    })
}

fn serialize(body: &Json) -> Result<String, StoreError> {
    serde_json::to_string(body).map_err(|e| StoreError::Serialization(e.into()))
}

/// Runs a statement without parameters, kept prepared.
fn run_cached(connection: &Connection, sql: &str) -> rusqlite::Result<()> {
    connection
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
}

fn current_seq(
    tx: &Connection,
    container: &str,
    pk: &str,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    let found: Option<(i64, Option<i64>)> = tx
        .prepare_cached(
            "SELECT seq, expires_at FROM documents WHERE container = ?1 AND pk = ?2 AND id = ?3",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![container, pk, id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
        })
        .map_err(backend)?;
    match found {
        Some((_, Some(expires_at))) if expires_at <= now_ms() => {
            // Expired but not purged yet: it is gone for every reader, so for writers too.
            remove_row(tx, container, pk, id)?;
            Ok(None)
        }
        found => Ok(found.map(|(seq, _)| seq)),
    }
}

/// An item's version as a write sees it.
#[derive(Clone, Copy)]
enum Version {
    Stored(i64),
    /// Written earlier by the same batch: an ETag the caller cannot have named yet.
    Written,
}

/// What an operation needs of the item it names.
#[derive(Clone, Copy)]
enum Needs<'a> {
    /// Created: it must not exist.
    Absent,
    /// Replaced or deleted: it must exist, at the version named when there is an ETag.
    Present(Option<&'a ETag>),
    /// Upserted.
    Anything,
}

impl<'a> Needs<'a> {
    fn of_mode(mode: &WriteMode<'a>) -> Self {
        match mode {
            WriteMode::Create | WriteMode::CreateExpiring(_) => Needs::Absent,
            WriteMode::Replace(if_match) => Needs::Present(*if_match),
            WriteMode::Upsert => Needs::Anything,
        }
    }

    fn of_operation(operation: &'a BatchOp) -> Self {
        match operation {
            BatchOp::Create { .. } | BatchOp::CreateExpiring { .. } => Needs::Absent,
            BatchOp::Replace { if_match, .. } | BatchOp::Delete { if_match, .. } => {
                Needs::Present(if_match.as_ref())
            }
            BatchOp::Upsert { .. } => Needs::Anything,
        }
    }

    /// Why the operation is refused with the item at `current`, if it is: the one rule of
    /// every write, single or batched.
    fn refusal(self, current: Option<Version>) -> Result<(), StoreError> {
        match (self, current) {
            (Needs::Absent, Some(_)) => Err(StoreError::Conflict),
            (Needs::Present(_), None) => Err(StoreError::NotFound),
            (Needs::Present(Some(expected)), Some(Version::Stored(seq)))
                if *expected != etag_of(seq) =>
            {
                Err(StoreError::PreconditionFailed)
            }
            (Needs::Present(Some(_)), Some(Version::Written)) => {
                Err(StoreError::PreconditionFailed)
            }
            _ => Ok(()),
        }
    }
}

/// Checks a batch's operations, in order, against what is stored and what the batch's
/// earlier operations do: a batch that will be refused is refused before it changes
/// anything. Sizes are checked before the batch is queued.
fn check_batch(
    tx: &Connection,
    container: &str,
    pk: &str,
    operations: &[BatchOp],
) -> Result<(), StoreError> {
    let mut versions: std::collections::HashMap<&str, Option<Version>> =
        std::collections::HashMap::new();
    for operation in operations {
        let id = operation.id();
        let current = match versions.get(id) {
            Some(version) => *version,
            None => current_seq(tx, container, pk, id)?.map(Version::Stored),
        };
        Needs::of_operation(operation).refusal(current)?;
        let after = match operation {
            BatchOp::Delete { .. } => None,
            _ => Some(Version::Written),
        };
        versions.insert(id, after);
    }
    Ok(())
}

enum WriteMode<'a> {
    Create,
    CreateExpiring(u32),
    Replace(Option<&'a ETag>),
    Upsert,
}

fn write(
    connection: &WriteTx<'_>,
    container: &str,
    pk: &str,
    id: &str,
    body: &Json,
    mode: WriteMode<'_>,
) -> Result<Document, StoreError> {
    let etag = write_in(connection, container, pk, id, body, mode)?;
    Ok(Document {
        id: id.to_owned(),
        partition_key: pk.to_owned(),
        body: body.clone(),
        etag,
    })
}

fn delete_in(
    tx: &WriteTx<'_>,
    container: &str,
    pk: &str,
    id: &str,
    if_match: Option<&ETag>,
) -> Result<(), StoreError> {
    count(Counted::Writes, 1);
    let existing = current_seq(tx, container, pk, id)?;
    Needs::Present(if_match).refusal(existing.map(Version::Stored))?;
    tx.changing();
    remove_row(tx, container, pk, id)
}

fn remove_row(tx: &Connection, container: &str, pk: &str, id: &str) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM documents WHERE container = ?1 AND pk = ?2 AND id = ?3")
        .and_then(|mut statement| statement.execute(params![container, pk, id]))
        .map_err(backend)?;
    Ok(())
}

fn write_in(
    tx: &WriteTx<'_>,
    container: &str,
    pk: &str,
    id: &str,
    body: &Json,
    mode: WriteMode<'_>,
) -> Result<ETag, StoreError> {
    let text = serialize(body)?;
    count(Counted::Writes, 1);
    count(Counted::WrittenBytes, text.len() as u64);
    if text.len() > super::MAX_ITEM_BYTES {
        return Err(StoreError::TooLarge(format!(
            "item {id} is {} bytes; at most {} are stored",
            text.len(),
            super::MAX_ITEM_BYTES
        )));
    }
    let existing = current_seq(tx, container, pk, id)?;
    Needs::of_mode(&mode).refusal(existing.map(Version::Stored))?;
    tx.changing();
    let seq = tx.next_seq();
    let expires_at = match mode {
        WriteMode::CreateExpiring(ttl_seconds) => {
            Some(now_ms().saturating_add(i64::from(ttl_seconds) * 1000))
        }
        _ => None,
    };
    tx.prepare_cached(
        "INSERT INTO documents (container, pk, id, body, seq, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (container, pk, id) DO UPDATE SET body = excluded.body, seq = excluded.seq, expires_at = excluded.expires_at",
    )
    .map_err(backend)?
    .execute(params![container, pk, id, text, seq, expires_at])
    .map_err(backend)?;
    Ok(etag_of(seq))
}

#[async_trait]
impl DocumentStore for EmbeddedStore {
    async fn read(
        &self,
        container: &str,
        pk: &str,
        id: &str,
    ) -> Result<Option<Document>, StoreError> {
        count(Counted::PointReads, 1);
        self.read_here(|connection| {
            stored_body(connection, container, pk, id)?
                .map(|(body, seq)| to_document(pk.to_owned(), id.to_owned(), body, seq))
                .transpose()
        })
    }

    async fn read_text(
        &self,
        container: &str,
        pk: &str,
        id: &str,
    ) -> Result<Option<StoredText>, StoreError> {
        count(Counted::PointReads, 1);
        self.read_here(|connection| {
            Ok(
                stored_body(connection, container, pk, id)?.map(|(text, seq)| StoredText {
                    text,
                    etag: etag_of(seq),
                }),
            )
        })
    }

    async fn read_many(
        &self,
        container: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<Document>>, StoreError> {
        count(Counted::PointReads, keys.len() as u64);
        self.read_here(|connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT body, seq FROM documents WHERE container = ?1 AND pk = ?2 AND id = ?3
                     AND (expires_at IS NULL OR expires_at > ?4)",
                )
                .map_err(backend)?;
            let now = now_ms();
            keys.iter()
                .map(|(pk, id)| {
                    let row = statement
                        .query_row(params![container, pk, id, now], |row| {
                            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                        })
                        .optional()
                        .map_err(backend)?;
                    row.map(|(body, seq)| to_document(pk.clone(), id.clone(), body, seq))
                        .transpose()
                })
                .collect()
        })
    }

    async fn find_by_id(&self, container: &str, id: &str) -> Result<Option<Document>, StoreError> {
        count(Counted::Queries, 1);
        self.read_here(|connection| {
            let row = connection
                .prepare_cached(FIND_BY_ID)
                .map_err(backend)?
                .query_row(params![container, id, now_ms()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .optional()
                .map_err(backend)?;
            row.map(|(pk, body, seq)| to_document(pk, id.to_owned(), body, seq))
                .transpose()
        })
    }

    async fn create(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
    ) -> Result<Document, StoreError> {
        let (container, pk, id) = (container.to_owned(), pk.to_owned(), id.to_owned());
        self.with_writer(move |c| write(c, &container, &pk, &id, &body, WriteMode::Create))
            .await
    }

    async fn replace(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
        if_match: Option<&ETag>,
    ) -> Result<Document, StoreError> {
        let (container, pk, id) = (container.to_owned(), pk.to_owned(), id.to_owned());
        let if_match = if_match.cloned();
        self.with_writer(move |c| {
            write(
                c,
                &container,
                &pk,
                &id,
                &body,
                WriteMode::Replace(if_match.as_ref()),
            )
        })
        .await
    }

    async fn upsert(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
    ) -> Result<Document, StoreError> {
        let (container, pk, id) = (container.to_owned(), pk.to_owned(), id.to_owned());
        self.with_writer(move |c| write(c, &container, &pk, &id, &body, WriteMode::Upsert))
            .await
    }

    async fn delete(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        if_match: Option<&ETag>,
    ) -> Result<(), StoreError> {
        let (container, pk, id) = (container.to_owned(), pk.to_owned(), id.to_owned());
        let if_match = if_match.cloned();
        self.with_writer(move |connection| {
            delete_in(connection, &container, &pk, &id, if_match.as_ref())
        })
        .await
    }

    async fn batch(
        &self,
        container: &str,
        pk: &str,
        operations: Vec<BatchOp>,
    ) -> Result<Vec<Option<ETag>>, StoreError> {
        check_batch_size(&operations)?;
        super::check_batch_bytes(&operations)?;
        let (container, pk) = (container.to_owned(), pk.to_owned());
        self.with_writer(move |tx| {
            // Refused before any operation changes anything (see [`writer`]).
            if operations.len() > 1 {
                check_batch(tx, &container, &pk, &operations)?;
            }
            let mut etags = Vec::with_capacity(operations.len());
            for operation in &operations {
                let etag = match operation {
                    BatchOp::Create { id, body } => {
                        Some(write_in(tx, &container, &pk, id, body, WriteMode::Create)?)
                    }
                    BatchOp::CreateExpiring {
                        id,
                        body,
                        ttl_seconds,
                    } => Some(write_in(
                        tx,
                        &container,
                        &pk,
                        id,
                        body,
                        WriteMode::CreateExpiring(*ttl_seconds),
                    )?),
                    BatchOp::Replace { id, body, if_match } => Some(write_in(
                        tx,
                        &container,
                        &pk,
                        id,
                        body,
                        WriteMode::Replace(if_match.as_ref()),
                    )?),
                    BatchOp::Upsert { id, body } => {
                        Some(write_in(tx, &container, &pk, id, body, WriteMode::Upsert)?)
                    }
                    BatchOp::Delete { id, if_match } => {
                        delete_in(tx, &container, &pk, id, if_match.as_ref())?;
                        None
                    }
                };
                etags.push(etag);
            }
            Ok(etags)
        })
        .await
    }

    async fn query(&self, container: &str, query: &Query) -> Result<Page, StoreError> {
        let position = query.validated()?;
        count(Counted::Queries, 1);
        let (sql, values) = query_statement(container, query, position.as_ref())?;
        let query = query.clone();
        self.with_reader(move |connection| {
            let mut statement = connection.prepare_cached(&sql).map_err(backend)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(values), |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .map_err(backend)?;
            let mut items = Vec::new();
            for row in rows {
                let (pk, id, body, seq) = row.map_err(backend)?;
                items.push(to_document(pk, id, body, seq)?);
            }
            Ok(ContinuationToken::paginate(items, &query))
        })
        .await
    }

    async fn changes(
        &self,
        container: &str,
        since: Option<&Checkpoint>,
        max: usize,
    ) -> Result<ChangeBatch, StoreError> {
        count(Counted::ChangeReads, 1);
        let after: i64 = match since {
            None => 0,
            Some(Checkpoint(token)) => token
                .strip_prefix("seq:")
                .and_then(|n| n.parse().ok())
                .ok_or(StoreError::InvalidContinuation)?,
        };
        let container = container.to_owned();
        let max = i64::try_from(max.max(1)).unwrap_or(i64::MAX);
        self.with_reader(move |connection| {
            let mut statement = connection
                .prepare_cached(
                    "SELECT pk, id, body, seq FROM documents WHERE container = ?1 AND seq > ?2
                     AND (expires_at IS NULL OR expires_at > ?4) ORDER BY seq LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = statement
                .query_map(params![container, after, max, now_ms()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, i64>(3)?,
                    ))
                })
                .map_err(backend)?;
            let mut documents = Vec::new();
            let mut last = after;
            for row in rows {
                let (pk, id, body, seq) = row.map_err(backend)?;
                last = seq;
                documents.push(to_document(pk, id, body, seq)?);
            }
            Ok(ChangeBatch {
                documents,
                checkpoint: Checkpoint(format!("seq:{last}")),
            })
        })
        .await
    }

    async fn index_field(&self, field: &str) -> Result<(), StoreError> {
        super::plain_identifier(field)?;
        // The same expressions the query filters are written with, so SQLite uses it; kind
        // first, as every query of a service names the kind it lists.
        let sql = format!(
            "CREATE INDEX IF NOT EXISTS documents_by_kind_and_{field} ON documents (container,
             json_quote(json_extract(body, '$.kind')), json_quote(json_extract(body, '$.{field}')), id)"
        );
        self.with_writer(move |connection| connection.execute_batch(&sql).map_err(backend))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check_attached()?;
        if self
            .inner
            .writes_failing
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Writes were failing: commit a page's worth and take it back. Success means
            // there is room again (and clears the state); failure says why.
            self.with_writer(|connection| {
                connection
                    .execute_batch(
                        "CREATE TABLE IF NOT EXISTS space_probe (filler BLOB);
                         INSERT INTO space_probe VALUES (zeroblob(8192));",
                    )
                    .map_err(backend)
            })
            .await?;
            self.with_writer(|connection| {
                connection
                    .execute_batch("DELETE FROM space_probe")
                    .map_err(backend)
            })
            .await?;
            self.inner
                .writes_failing
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        self.with_reader(|connection| {
            connection
                .query_row("SELECT 1", [], |_| Ok(()))
                .map_err(backend)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(store: &EmbeddedStore) -> i64 {
        let connection = open_connection(&store.inner.path, Durability::Normal, true).unwrap();
        connection
            .query_row("SELECT COUNT(*) FROM documents", [], |row| row.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn expired_items_are_purged_by_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
        let expiring: Vec<BatchOp> = (0..3)
            .map(|n| BatchOp::CreateExpiring {
                id: format!("p-{n}"),
                body: serde_json::json!({}),
                ttl_seconds: 0,
            })
            .collect();
        store.batch("c", "pk", expiring).await.unwrap();
        assert!(store.read("c", "pk", "p-0").await.unwrap().is_none());
        store
            .create("c", "pk", "kept", serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(rows(&store), 1, "the expired rows are still stored");
        // An expired id can be created again at once.
        store
            .create("c", "pk", "p-0", serde_json::json!({}))
            .await
            .unwrap();
    }

    /// How SQLite would run `sql` (with `values`), as one line.
    fn plan(store: &EmbeddedStore, sql: &str, values: Vec<rusqlite::types::Value>) -> String {
        let connection = open_connection(&store.inner.path, Durability::Normal, true).unwrap();
        let mut statement = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), |row| {
                row.get::<_, String>(3)
            })
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    /// Costs that grow with history: a read by id, and a list by kind and an indexed field,
    /// each go straight to their rows however many documents the container holds.
    #[tokio::test]
    async fn reads_by_id_and_indexed_filters_use_their_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
        store.index_field("status").await.unwrap();
        store
            .create(
                "c",
                "customer",
                "o-1",
                serde_json::json!({"kind": "order", "status": "pending"}),
            )
            .await
            .unwrap();
        let by_id = plan(
            &store,
            FIND_BY_ID,
            vec!["c".to_owned().into(), "o-1".to_owned().into(), 0.into()],
        );
        assert!(by_id.contains("USING INDEX documents_by_id"), "{by_id}");
        let query = Query::new(QueryScope::AllPartitions, 10)
            .filter("kind", "order")
            .filter("status", "pending");
        let (sql, values) = query_statement("c", &query, None).unwrap();
        let listed = plan(&store, &sql, values);
        assert!(listed.contains("documents_by_kind_and_status"), "{listed}");
        let page = store.query("c", &query).await.unwrap();
        assert_eq!(page.items.len(), 1);
        assert!(
            store
                .index_field("status; DROP TABLE documents")
                .await
                .is_err()
        );
    }

    /// Writes that share a transaction: those refused leave nothing, even a batch refused
    /// at its last operation, and do not stop the others.
    #[tokio::test]
    async fn refused_writes_in_a_shared_transaction_leave_nothing_and_stop_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
        for n in 0..20 {
            store
                .create(
                    "c",
                    "pk",
                    &format!("taken-{n}"),
                    serde_json::json!({"n": n}),
                )
                .await
                .unwrap();
        }
        let writes = (0..20).map(|n| {
            let store = store.clone();
            async move {
                // Refused at its last operation: its first two would have been written.
                let refused = store.batch(
                    "c",
                    "pk",
                    vec![
                        BatchOp::Create {
                            id: format!("half-{n}"),
                            body: serde_json::json!({}),
                        },
                        BatchOp::Replace {
                            id: format!("taken-{n}"),
                            body: serde_json::json!({"n": -1}),
                            if_match: None,
                        },
                        BatchOp::Create {
                            id: format!("taken-{n}"),
                            body: serde_json::json!({}),
                        },
                    ],
                );
                let written = store.batch(
                    "c",
                    "pk",
                    vec![
                        BatchOp::Create {
                            id: format!("new-{n}"),
                            body: serde_json::json!({"n": n}),
                        },
                        BatchOp::Delete {
                            id: format!("new-{n}"),
                            if_match: None,
                        },
                        BatchOp::Create {
                            id: format!("new-{n}"),
                            body: serde_json::json!({"n": n}),
                        },
                    ],
                );
                // At once: they share the writer's transaction.
                futures::join!(refused, written)
            }
        });
        for (refused, written) in futures::future::join_all(writes).await {
            assert!(matches!(refused, Err(StoreError::Conflict)), "{refused:?}");
            written.unwrap();
        }
        for n in 0..20 {
            assert!(
                store
                    .read("c", "pk", &format!("half-{n}"))
                    .await
                    .unwrap()
                    .is_none()
            );
            let taken = store
                .read("c", "pk", &format!("taken-{n}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(taken.body["n"], n, "the refused batch changed nothing");
            assert!(
                store
                    .read("c", "pk", &format!("new-{n}"))
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        // Every committed change has its own place on the feed, in order.
        let feed = store.changes("c", None, 1000).await.unwrap();
        assert_eq!(feed.documents.len(), 40);
        let mut etags: Vec<&str> = feed.documents.iter().map(|d| d.etag.as_str()).collect();
        etags.dedup();
        assert_eq!(etags.len(), 40);
    }
}

#[cfg(test)]
mod full_disk {
    use super::*;
    use crate::file_guard::files::{copy_database, take_away};

    #[tokio::test]
    async fn a_file_taken_away_is_refused_and_one_restored_from_a_copy_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = EmbeddedStore::open(&path, Durability::Normal).unwrap();
        store
            .upsert("c", "pk", "a", serde_json::json!({"n": 1}))
            .await
            .unwrap();
        // A backup (the file with its write-ahead log), then the file taken away.
        let backup = dir.path().join("backup.db");
        copy_database(&path, &backup);
        // Changed after the copy, and read on this thread: its reader has the old file open.
        store
            .upsert("c", "pk", "a", serde_json::json!({"n": 5}))
            .await
            .unwrap();
        assert_eq!(
            store.read("c", "pk", "a").await.unwrap().unwrap().body["n"],
            5
        );
        take_away(&path);
        let refused = store.upsert("c", "pk", "b", serde_json::json!({})).await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "{refused:?}"
        );
        let refused = store.read("c", "pk", "a").await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(store.ping().await.is_err());
        // Restored from the copy: another file, reopened without a restart.
        copy_database(&backup, &path);
        store.ping().await.unwrap();
        let restored = store.read("c", "pk", "a").await.unwrap().unwrap();
        assert_eq!(restored.body["n"], 1, "read from the restored file");
        store
            .upsert("c", "pk", "b", serde_json::json!({"n": 2}))
            .await
            .unwrap();
        let reopened = EmbeddedStore::open(&path, Durability::Normal).unwrap();
        assert_eq!(
            reopened.read("c", "pk", "b").await.unwrap().unwrap().body["n"],
            2,
            "the write after the restore went to the file at the path"
        );
    }

    #[tokio::test]
    async fn a_thread_lets_go_of_its_readers_of_stores_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let readers = || THREAD_READERS.with(|readers| readers.borrow().len());
        let before = readers();
        for n in 0..5 {
            let store =
                EmbeddedStore::open(&dir.path().join(format!("{n}.db")), Durability::Normal)
                    .unwrap();
            store
                .upsert("c", "pk", "a", serde_json::json!({"n": n}))
                .await
                .unwrap();
            let read = store.find_by_id("c", "a").await.unwrap().unwrap();
            assert_eq!(read.body["n"], n);
        }
        assert!(
            readers() <= before + 1,
            "only the last store's reader is kept: {} besides {before}",
            readers() - before
        );
    }

    #[tokio::test]
    async fn a_full_store_refuses_writes_says_why_and_resumes_when_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.db"), Durability::Normal).unwrap();
        store.set_size_limit(Some(64 * 1024)).await.unwrap();
        let big = serde_json::json!({"blob": "x".repeat(4000)});
        let mut written = Vec::new();
        let error = loop {
            let id = format!("d-{}", written.len());
            match store.create("c", "pk", &id, big.clone()).await {
                Ok(_) => written.push(id),
                Err(error) => break error,
            }
            assert!(written.len() < 1000, "the cap never bit");
        };
        assert!(matches!(error, StoreError::Full(_)), "{error:?}");
        let not_ready = store.ping().await.unwrap_err();
        assert!(matches!(not_ready, StoreError::Full(_)), "{not_ready:?}");
        assert!(not_ready.reason().contains("out of space"));
        // Reads go on, and everything acknowledged is there.
        for id in &written {
            assert!(store.read("c", "pk", id).await.unwrap().is_some(), "{id}");
        }
        // Room again: ready, and writes go through by themselves.
        store.set_size_limit(None).await.unwrap();
        store.ping().await.unwrap();
        store.create("c", "pk", "after", big).await.unwrap();
    }
}
