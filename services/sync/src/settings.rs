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
    pub blob: common::files::blob::BlobSettings,
}

/// Where files live: a folder, or an Azure Blob Storage container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilesKind {
    Folder,
    Blob,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImportSettings {
    pub batch_size: usize,
    pub batches_in_flight: usize,
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
        if !(1..=16).contains(&self.imports.batches_in_flight) {
            return Err(ConfigError::key(
                "imports.batches_in_flight",
                "must be 1 to 16",
            ));
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
        if self.files.kind == FilesKind::Blob {
            self.check_blob()?;
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

    fn check_blob(&self) -> Result<(), ConfigError> {
        use common::files::blob::BlobCredentialKind;
        let blob = &self.files.blob;
        if url::Url::parse(&blob.endpoint).is_err() {
            return Err(ConfigError::key(
                "files.blob.endpoint",
                "must be the account's blob endpoint, e.g. https://<account>.blob.core.windows.net",
            ));
        }
        // Container names: 3-63 lower-case letters, digits and single hyphens.
        let name_ok = (3..=63).contains(&blob.container.len())
            && blob
                .container
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !blob.container.starts_with('-')
            && !blob.container.ends_with('-')
            && !blob.container.contains("--");
        if !name_ok {
            return Err(ConfigError::key(
                "files.blob.container",
                "must be 3 to 63 lower-case letters, digits and single hyphens",
            ));
        }
        if blob.credential == BlobCredentialKind::Sas && blob.sas.is_none() {
            return Err(ConfigError::key(
                "files.blob.sas",
                "must be set (SYNC__FILES__BLOB__SAS) when files.blob.credential is `sas`",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::startup::SyncService;

    fn load_file(contents: &str) -> Result<(), String> {
        common::testing::load_config_file::<SyncService>(contents)
    }

    #[test]
    fn the_blob_sas_is_a_secret_and_the_blob_settings_are_checked() {
        let error = load_file("[files.blob]\nsas = \"sv=2021&sig=leaked\"\n").unwrap_err();
        assert!(
            error.contains("files.blob.sas") && error.contains("environment"),
            "{error}"
        );
        let error = load_file("[files]\nkind = \"blob\"\n[files.blob]\ncredential = \"sas\"\n")
            .unwrap_err();
        assert!(error.contains("files.blob.sas"), "{error}");
        let error = load_file("[files]\nkind = \"blob\"\n[files.blob]\ncontainer = \"Feeds_1\"\n")
            .unwrap_err();
        assert!(error.contains("files.blob.container"), "{error}");
        let error = load_file("[files.blob]\ncontainr = \"feeds\"\n").unwrap_err();
        assert!(error.contains("files.blob.container"), "{error}");
        assert!(load_file("[files]\nkind = \"blob\"\n").is_ok());
    }
}
