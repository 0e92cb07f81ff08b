//! Helpers for the services' tests (feature `testing`): waiting on conditions, never on
//! fixed sleeps, free ports for processes a test starts, and an in-process Service Bus.
// Test support: a broken fixture should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fake_servicebus;

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

/// A port nothing listens on right now, for a child process to bind.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
