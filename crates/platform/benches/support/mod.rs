//! What the platform's benchmarks share: their knobs and their statistics.
#![allow(dead_code)]

use std::time::Duration;

pub mod saga;

/// A number from the environment (a benchmark's knob), else `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Logs only errors, with trace ids as the services have them.
pub fn quiet_telemetry(name: &str) -> anyhow::Result<common::telemetry::TelemetryGuard> {
    let mut telemetry = common::config::Settings::defaults().telemetry;
    telemetry.log_level = "error".into();
    Ok(common::telemetry::init(&telemetry, name)?)
}

/// The `q` quantile of sorted durations, in milliseconds.
pub fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let index = ((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}
