//! What the embedded adapters (store and bus) set on every SQLite connection they open.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

const STATEMENTS_KEPT: usize = 128;

/// Opens `path` in WAL mode (a reader never waits for the writer, and a commit survives the
/// process being killed) with the given `synchronous` level.
pub(crate) fn open(
    path: &Path,
    read_only: bool,
    synchronous: &str,
) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(Duration::from_secs(10))?;
    // Plans that never look at bound values. Otherwise SQLite marks a statement to be
    // planned again whenever such a value is bound anew, and it looks at every `LIMIT ?`
    // and at range bounds: each run of a cached receive, change-feed page or purge was
    // parsed and planned from its text, a fifth of the saga's CPU. Our plans do not depend
    // on the values (there are no statistics to weigh them with).
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    // Room for every statement an adapter runs, and for the shapes of queries the services
    // ask (the default keeps 16, and a statement pushed out is parsed again).
    connection.set_prepared_statement_cache_capacity(STATEMENTS_KEPT);
    if !read_only {
        connection.pragma_update(None, "journal_mode", "WAL")?;
    }
    connection.pragma_update(None, "synchronous", synchronous)?;
    Ok(connection)
}
