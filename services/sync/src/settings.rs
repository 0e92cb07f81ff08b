//! The sync service's own settings (`config/sync.toml`, `SYNC__*`), beside the shared sections.

use std::collections::BTreeMap;

use common::config::ConfigError;
use serde::Deserialize;

use crate::domain::feed::FIELDS;

/// Their defaults, with the reason for each.
pub const DEFAULTS: &str = include_str!("defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct SyncSettings {
    pub catalog: CatalogPeer,
    pub files: FilesSettings,
    pub imports: ImportSettings,
    pub connectors: ConnectorSettings,
    pub timers: TimerSettings,
}

/// Cron expressions of the timers (empty: off).
#[derive(Debug, Clone, Deserialize)]
pub struct TimerSettings {
    pub reconcile: String,
}

/// How connectors are reached.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectorSettings {
    pub allow_private_targets: bool,
    pub timeout_ms: u64,
    pub retry_schedule_ms: Vec<u64>,
    pub poll_interval_ms: u64,
}

/// Where and how sync calls the catalog.
pub type CatalogPeer = common::outbound::PeerSettings;

#[derive(Debug, Clone, Deserialize)]
pub struct FilesSettings {
    pub kind: FilesKind,
    pub folder: String,
}

/// Where files live. (Azure Blob Storage is the next adapter of the file port.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesKind {
    Folder,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImportSettings {
    pub batch_size: usize,
    pub poll_interval_ms: u64,
    pub settle_ms: u64,
    pub lease_seconds: u64,
    pub max_upload_mb: u64,
    /// Feed column name -> field name.
    pub columns: BTreeMap<String, String>,
}

impl SyncSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.catalog.validate("catalog")?;
        if !(1..=1000).contains(&self.imports.batch_size) {
            return Err(ConfigError::key("imports.batch_size", "must be 1 to 1000"));
        }
        for (key, value) in [
            ("imports.poll_interval_ms", self.imports.poll_interval_ms),
            ("imports.lease_seconds", self.imports.lease_seconds),
            ("imports.max_upload_mb", self.imports.max_upload_mb),
            ("connectors.timeout_ms", self.connectors.timeout_ms),
            (
                "connectors.poll_interval_ms",
                self.connectors.poll_interval_ms,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be greater than 0"));
            }
        }
        if !self.timers.reconcile.trim().is_empty()
            && let Err(reason) = crate::reconcile::Timer::parse("reconcile", &self.timers.reconcile)
        {
            return Err(ConfigError::key(
                "timers.reconcile",
                format!("is not a cron expression: {reason}"),
            ));
        }
        for (column, field) in &self.imports.columns {
            if !FIELDS.contains(&field.as_str()) {
                return Err(ConfigError::key(
                    &format!("imports.columns.{column}"),
                    format!("must name one of {}", FIELDS.join(", ")),
                ));
            }
        }
        Ok(())
    }
}
