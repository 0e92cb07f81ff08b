//! The embedded store and bus keep their SQLite files open. A file moved or deleted under
//! them would go on being written (SQLite keeps the open file), and what was written would
//! be lost at the next start. A guard looks at the path before each use: missing, the
//! adapter refuses work until the file is back; back as another file (restored from a
//! copy), the adapter opens it again. Nothing needs a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct FileGuard {
    what: &'static str,
    path: PathBuf,
    /// The file the connections have open (device, inode).
    file: Mutex<Option<(u64, u64)>>,
    detached: AtomicBool,
}

impl FileGuard {
    /// Guards `path` (whose file is the one just opened); `what` names it in logs.
    pub fn new(what: &'static str, path: &Path) -> Self {
        Self {
            what,
            path: path.to_owned(),
            file: Mutex::new(file_identity(path)),
            detached: AtomicBool::new(false),
        }
    }

    /// Whether the file is missing as of the last look.
    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::SeqCst)
    }

    /// Looks at the path (one `stat`). Missing: `missing`'s error. Another file than the
    /// one open: `reopen` opens it (under the guard's lock, so that no caller goes on with
    /// the old file meanwhile), and it is the one open from then on.
    pub fn check<E>(
        &self,
        missing: impl FnOnce(&Path) -> E,
        reopen: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let Some(found) = file_identity(&self.path) else {
            if !self.detached.swap(true, Ordering::SeqCst) {
                tracing::error!(path = %self.path.display(), "the {} file is missing: work is refused until it is back", self.what);
            }
            return Err(missing(&self.path));
        };
        if let Ok(mut known) = self.file.lock()
            && *known != Some(found)
        {
            reopen()?;
            *known = Some(found);
            tracing::warn!(path = %self.path.display(), "the {} file was replaced: opened again", self.what);
        }
        if self.detached.swap(false, Ordering::SeqCst) {
            tracing::info!(path = %self.path.display(), "the {} file is back", self.what);
        }
        Ok(())
    }
}

/// The (device, inode) of the file at `path`, if there is one.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

/// What the adapters' tests do to a SQLite file: back it up (with its write-ahead log), take
/// it away, put the backup back.
#[cfg(test)]
pub(crate) mod files {
    use std::path::{Path, PathBuf};

    fn with_suffix(base: &Path, suffix: &str) -> PathBuf {
        PathBuf::from(format!("{}{suffix}", base.display()))
    }

    /// Copies `from` (and its log) to `to`.
    pub fn copy_database(from: &Path, to: &Path) {
        for suffix in ["", "-wal"] {
            if with_suffix(from, suffix).exists() {
                std::fs::copy(with_suffix(from, suffix), with_suffix(to, suffix)).unwrap();
            }
        }
    }

    /// Removes the file and its log and shared memory.
    pub fn take_away(path: &Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(path, suffix));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_taken_away_is_missing_until_it_is_back_and_a_copy_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        std::fs::write(&path, b"1").unwrap();
        let guard = FileGuard::new("test", &path);
        let reopened = std::cell::Cell::new(0);
        let check = || {
            guard.check(
                |_| "missing",
                || {
                    reopened.set(reopened.get() + 1);
                    Ok(())
                },
            )
        };
        assert_eq!(check(), Ok(()));
        let away = dir.path().join("away.db");
        std::fs::rename(&path, &away).unwrap();
        assert_eq!(check(), Err("missing"));
        assert!(guard.is_detached());
        std::fs::rename(&away, &path).unwrap();
        assert_eq!(check(), Ok(()));
        assert!(!guard.is_detached());
        assert_eq!(reopened.get(), 0, "the same file again needs no reopening");
        std::fs::copy(&path, &away).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::rename(&away, &path).unwrap();
        assert_eq!(check(), Ok(()));
        assert_eq!(check(), Ok(()));
        assert_eq!(reopened.get(), 1);
    }
}
