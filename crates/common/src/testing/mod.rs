//! Helpers for the services' tests (feature `testing`): waiting on conditions, never on
//! fixed sleeps, free ports for processes a test starts, and an in-process Service Bus.
// Test support: a broken fixture should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod azurite;
pub mod fake_servicebus;
pub mod process;
pub mod python;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it holds (true) or `timeout` passes (false).
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// An embedded store in a temporary folder, which lives as long as the folder it comes with.
pub fn embedded_store() -> (tempfile::TempDir, crate::store::SharedStore) {
    use crate::store::embedded::{Durability, EmbeddedStore};
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.db"), Durability::Normal).unwrap();
    (dir, std::sync::Arc::new(store))
}

/// A port nothing listens on right now, for a child process to bind.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// What tracing writes on this thread while it lives (a test's own subscriber, no global
/// one): events at `level` and above, and with `span_closes`, each span as it closes with
/// its fields.
pub struct LogCapture {
    buffer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct CaptureWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CaptureWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    pub fn start(level: tracing::Level, span_closes: bool) -> Self {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = CaptureWriter(buffer.clone());
        let spans = if span_closes {
            tracing_subscriber::fmt::format::FmtSpan::CLOSE
        } else {
            tracing_subscriber::fmt::format::FmtSpan::NONE
        };
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(level)
            .with_span_events(spans)
            .with_ansi(false)
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

/// Loads service `S`'s settings from defaults and a `config/<service>.toml` holding
/// `contents`: `Err` with the message a start would print.
pub fn load_config_file<S: crate::runtime::Service>(contents: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(
        dir.path().join(format!("{}.toml", S::DESCRIPTOR.name)),
        contents,
    )
    .map_err(|e| e.to_string())?;
    let mut sources = crate::config::Sources::defaults_only();
    sources.config_dir = dir.path().to_path_buf();
    S::load(&sources).map(|_| ()).map_err(|e| e.to_string())
}
