//! The embedded store's writer thread: writes queued at once share one transaction, one
//! commit and one append to the write-ahead log.
//!
//! A write checks everything that could refuse it before it changes anything (see
//! [`WriteTx::changing`]), so a refused write leaves nothing to undo and needs no savepoint
//! of its own: savepoints copied every page a write touched, a fifth of the writer's work.
//! A write that fails after it began changing rows (only SQLite itself can make it) takes
//! the group's transaction down with it, and every write of the group is answered with the
//! failure: none of them is committed.

use std::cell::Cell;
use std::ops::Deref;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};

use rusqlite::Connection;

use super::{Durability, backend, migrate, open_connection, purge_rows, run_cached};
use crate::store::{Cause, StoreError};

/// The writer's open transaction, as a queued write sees it.
pub(super) struct WriteTx<'c> {
    connection: &'c Connection,
    /// The last change-feed position handed out: read when the transaction begins, saved
    /// when it commits (one write of the sequence per group, not one per item).
    last_seq: Cell<i64>,
    /// Whether the running write has begun changing rows.
    changed: Cell<bool>,
}

impl Deref for WriteTx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
    }
}

impl WriteTx<'_> {
    /// The next change-feed position, for an item about to be written.
    pub(super) fn next_seq(&self) -> i64 {
        let next = self.last_seq.get() + 1;
        self.last_seq.set(next);
        next
    }

    /// Called by a write once it has checked everything that could refuse it, before its
    /// first change: a failure from then on is the group's (see the module's comment).
    pub(super) fn changing(&self) {
        self.changed.set(true);
    }
}

/// What a queued write does once its transaction has ended: hands its result, or the
/// commit's failure, to the caller.
pub(super) type Deliver = Box<dyn FnOnce(Option<StoreError>) + Send>;
/// A write, run by the writer thread inside the group's transaction (or told why there is
/// none, and then not run): how it went, and how to deliver its outcome.
pub(super) type WriteJob =
    Box<dyn FnOnce(Result<&WriteTx<'_>, StoreError>) -> (Ran, Deliver) + Send>;

/// How a queued write went.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    Ok,
    Failed,
    /// Failed for lack of room: when SQLite rolled the group back for it, the group's other
    /// writes failed for the same reason.
    OutOfRoom,
}

/// Writes queued at once share one transaction.
const GROUP_LIMIT: usize = 256;

const READ_SEQ: &str = "SELECT value FROM sequence WHERE name = 'documents'";
const SAVE_SEQ: &str = "UPDATE sequence SET value = ?1 WHERE name = 'documents'";

/// Opens the writer connection on `path` (creating the schema when it is new) and starts the
/// thread that runs its queue.
pub(super) fn start_writer(
    path: &Path,
    durability: Durability,
) -> Result<Sender<WriteJob>, StoreError> {
    let writer = open_connection(path, durability, false)?;
    migrate(&writer)?;
    let (queue, jobs) = std::sync::mpsc::channel::<WriteJob>();
    std::thread::Builder::new()
        .name(format!(
            "store-writer-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("db")
        ))
        .spawn(move || group_commit(writer, jobs))
        .map_err(|e| StoreError::Unavailable(Cause::new(e)))?;
    Ok(queue)
}

/// An error for every write of a group whose transaction did not commit.
fn group_error(error: &rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::SqliteFailure(code, message) => {
            backend(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => StoreError::Backend((format!("the write's transaction failed: {other}")).into()),
    }
}

/// Why every write of a group failed when one write's failure ended its transaction.
fn lost_group(ran: Ran) -> StoreError {
    match ran {
        Ran::OutOfRoom => StoreError::Full(Cause::new(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            Some("the group's transaction was rolled back: the store is full".into()),
        ))),
        _ => group_error(&rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
            Some("the transaction was rolled back by a failed write".into()),
        )),
    }
}

/// Begins the group's transaction and reads where the sequence stands.
fn begin(connection: &Connection) -> rusqlite::Result<i64> {
    run_cached(connection, "BEGIN IMMEDIATE")?;
    let last = connection
        .prepare_cached(READ_SEQ)
        .and_then(|mut statement| statement.query_row([], |row| row.get(0)));
    if last.is_err() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    last
}

/// Saves the sequence, purges a few expired items and commits.
fn commit(tx: &WriteTx<'_>) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(SAVE_SEQ)
        .and_then(|mut statement| statement.execute([tx.last_seq.get()]))?;
    purge_rows(tx)?;
    run_cached(tx, "COMMIT")
}

/// The writer thread: takes what is queued, runs it in one transaction, commits, and only
/// then answers each write (so an answered write is committed).
fn group_commit(connection: Connection, queue: Receiver<WriteJob>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP_LIMIT {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut waiting: Vec<Deliver> = Vec::with_capacity(jobs.len());
        let mut tx: Option<WriteTx<'_>> = None;
        for job in jobs {
            let open = match tx.take() {
                Some(open) => open,
                None => match begin(&connection) {
                    Ok(last_seq) => WriteTx {
                        connection: &connection,
                        last_seq: Cell::new(last_seq),
                        changed: Cell::new(false),
                    },
                    Err(error) => {
                        let (_, deliver) = job(Err(group_error(&error)));
                        deliver(None);
                        continue;
                    }
                },
            };
            open.changed.set(false);
            let (ran, deliver) = job(Ok(&open));
            let rolled_back = connection.is_autocommit();
            if rolled_back || (ran != Ran::Ok && open.changed.get()) {
                // SQLite rolled the transaction back (a full disk, an I/O error), or the
                // write failed half done: the group's writes are not committed.
                if !rolled_back {
                    let _ = connection.execute_batch("ROLLBACK");
                }
                for earlier in waiting.drain(..) {
                    earlier(Some(lost_group(ran)));
                }
                deliver((ran == Ran::Ok).then(|| lost_group(ran)));
                continue;
            }
            waiting.push(deliver);
            tx = Some(open);
        }
        let Some(open) = tx else {
            continue;
        };
        let failed = match commit(&open) {
            Ok(()) => None,
            Err(error) => {
                let _ = connection.execute_batch("ROLLBACK");
                Some(error)
            }
        };
        for deliver in waiting {
            deliver(failed.as_ref().map(group_error));
        }
    }
}
