//! Layered configuration: compiled-in defaults, then `config/<service>.toml` if present,
//! then `PLATFORM__*` (shared by all services), then `<SERVICE>__*` environment variables.
//!
//! Secrets are never read from a file: they come from the environment only, and a file
//! that sets one is refused at start.

mod keys;

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use keys::KnownKeys;

use crate::store::embedded::Durability;

/// The defaults every service starts from, with the reason for each.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// Keys that hold secrets: allowed from the environment only.
const SECRET_KEYS: &[&str] = &[
    "auth.hs256_secret",
    "store.cosmos.key",
    "bus.servicebus.key",
];

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub http: HttpSettings,
    pub store: StoreSettings,
    pub bus: BusSettings,
    pub change_feed: ChangeFeedSettings,
    pub auth: AuthSettings,
    pub outbound: OutboundSettings,
    pub rate_limit: RateLimitSettings,
    pub telemetry: TelemetrySettings,
    pub hosting: HostingSettings,
}

/// How the service is hosted: a process that runs its own loops, or an Azure Functions
/// custom handler whose triggers drive everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostingMode {
    Process,
    Functions,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HostingSettings {
    pub mode: HostingMode,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    pub workers: usize,
    pub shutdown_timeout_seconds: u64,
    pub request_timeout_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    Embedded,
    Cosmos,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub durability: Durability,
    pub max_size_mb: u64,
    pub cosmos: CosmosSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CosmosCredentialKind {
    Key,
    ManagedIdentity,
    DeveloperTools,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CosmosSettings {
    pub endpoint: String,
    pub database: String,
    pub region: String,
    pub credential: CosmosCredentialKind,
    pub throttle_retries: u32,
    pub throttle_budget_ms: u64,
    /// From the environment only.
    #[serde(default)]
    pub key: Option<SecretString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BusKind {
    Embedded,
    Servicebus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceBusCredentialKind {
    Sas,
    ManagedIdentity,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceBusSettings {
    pub namespace: String,
    pub credential: ServiceBusCredentialKind,
    pub policy: String,
    /// From the environment only.
    #[serde(default)]
    pub key: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BusSettings {
    pub kind: BusKind,
    pub max_delivery_count: u32,
    pub lock_seconds: u64,
    pub duplicate_window_seconds: u64,
    pub retry_backoff_ms: Vec<u64>,
    pub poll_interval_ms: u64,
    pub processed_retention_seconds: u32,
    pub servicebus: ServiceBusSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ChangeFeedSettings {
    pub poll_interval_ms: u64,
    pub lease_seconds: u64,
    pub batch_size: usize,
    pub instance_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboundCredential {
    Auto,
    DevToken,
    ManagedIdentity,
    DeveloperTools,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutboundSettings {
    pub credential: OutboundCredential,
    pub audience: String,
    pub breaker_failures: u32,
    pub breaker_open_ms: u64,
}

impl Settings {
    /// The credential outbound calls use, `auto` resolved from `auth.mode`.
    pub fn outbound_credential(&self) -> OutboundCredential {
        match (self.outbound.credential, self.auth.mode) {
            (OutboundCredential::Auto, AuthMode::Hs256) => OutboundCredential::DevToken,
            (OutboundCredential::Auto, AuthMode::Oidc) => OutboundCredential::ManagedIdentity,
            (chosen, _) => chosen,
        }
    }

    /// The audience outbound tokens are for.
    pub fn outbound_audience(&self) -> &str {
        let audience = self.outbound.audience.trim();
        if audience.is_empty() {
            &self.auth.audience
        } else {
            audience
        }
    }
}

/// Settings of a service's own that has none (yet).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NoOwnSettings {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMode {
    Hs256,
    Oidc,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub mode: AuthMode,
    pub issuer: String,
    pub audience: String,
    pub leeway_seconds: u64,
    pub jwks_url: String,
    pub jwks_refresh_min_seconds: u64,
    pub allow_hs256_with_azure: bool,
    /// From the environment only; when absent in HS256 mode the development secret in
    /// `data_dir` is used (created on first start).
    #[serde(default)]
    pub hs256_secret: Option<SecretString>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub log_level: String,
    pub otlp_endpoint: String,
    pub sample_ratio: f64,
    pub metrics_export_interval_ms: u64,
    pub metrics_access: MetricsAccess,
}

/// Who may read `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    Loopback,
    Operator,
    Open,
    Off,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Key { key: String, message: String },
    #[error(
        "unknown configuration key `{key}` (from {origin}); the nearest known key is `{nearest}`"
    )]
    UnknownKey {
        key: String,
        origin: String,
        nearest: String,
    },
}

impl ConfigError {
    pub fn key(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Where a service's settings come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Folder holding `<service>.toml`; missing file is fine.
    pub config_dir: PathBuf,
    /// Read `PLATFORM__*` and `<SERVICE>__*` environment variables.
    pub environment: bool,
    /// Extra defaults applied after the built-ins (a service's own port, say).
    pub service_defaults: Vec<(String, String)>,
    /// Applied last, over everything (command-line flags such as `--data-dir`).
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    pub fn standard(service_defaults: &[(&str, &str)]) -> Self {
        Self {
            config_dir: PathBuf::from("config"),
            environment: true,
            service_defaults: service_defaults
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            overrides: Vec::new(),
        }
    }

    pub fn with_override(mut self, key: &str, value: impl Into<String>) -> Self {
        self.overrides.push((key.to_owned(), value.into()));
        self
    }

    /// Built-in defaults only: what tests start from.
    pub fn defaults_only() -> Self {
        Self {
            config_dir: PathBuf::from("/nonexistent"),
            environment: false,
            service_defaults: Vec::new(),
            overrides: Vec::new(),
        }
    }
}

impl Settings {
    /// Loads and validates the shared settings of a service that has none of its own.
    pub fn load(service: &str, sources: &Sources) -> Result<Settings, ConfigError> {
        Ok(Self::load_with::<NoOwnSettings>(service, "", &[], sources)?.0)
    }

    /// Loads and validates one service's settings: the shared sections, and the service's
    /// own (`S`, whose defaults are `own_defaults` and whose secrets, from the environment
    /// only, are `own_secrets`). A key known to neither stops it here.
    pub fn load_with<S: DeserializeOwned>(
        service: &str,
        own_defaults: &str,
        own_secrets: &[&str],
        sources: &Sources,
    ) -> Result<(Settings, S), ConfigError> {
        let mut shared_keys = KnownKeys::from_defaults(DEFAULTS)?;
        for secret in SECRET_KEYS {
            shared_keys.add_leaf(secret);
        }
        let mut service_keys = KnownKeys::from_defaults(own_defaults)?;
        for secret in own_secrets {
            service_keys.add_leaf(secret);
        }
        service_keys.merge(&shared_keys);

        let mut service_defaults = Config::builder();
        for (key, value) in &sources.service_defaults {
            service_defaults = service_defaults.set_override(key.as_str(), value.as_str())?;
        }
        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::from_str(own_defaults, FileFormat::Toml))
            .add_source(service_defaults.build()?);
        let file_path = sources.config_dir.join(format!("{service}.toml"));
        if file_path.exists() {
            let text = std::fs::read_to_string(&file_path)
                .map_err(|e| ConfigError::key("(file)", format!("{}: {e}", file_path.display())))?;
            let table: toml::Table = text.parse().map_err(|e| {
                ConfigError::key(
                    "(file)",
                    format!("{} is not valid TOML: {e}", file_path.display()),
                )
            })?;
            service_keys.check_table(&table, &file_path.display().to_string())?;
            refuse_secrets_in_file(&file_path, own_secrets)?;
            builder = builder.add_source(File::from(file_path.as_path()).format(FileFormat::Toml));
        }
        if sources.environment {
            let prefix = service.to_uppercase();
            // Shared variables may only set shared keys: they reach every service.
            shared_keys.check_environment("PLATFORM", std::env::vars())?;
            service_keys.check_environment(&prefix, std::env::vars())?;
            builder = builder
                .add_source(environment("PLATFORM", &service_keys))
                .add_source(environment(&prefix, &service_keys));
        }
        for (key, value) in &sources.overrides {
            builder = match list_value(value) {
                Some(items) => builder.set_override(key.as_str(), items)?,
                None => builder.set_override(key.as_str(), value.as_str())?,
            };
        }
        let config = builder.build()?;
        let settings: Settings = config.clone().try_deserialize()?;
        settings.validate()?;
        let own: S = config.try_deserialize()?;
        Ok((settings, own))
    }

    /// Built-in defaults, no file, no environment.
    pub fn defaults() -> Settings {
        // The compiled-in defaults are covered by a unit test; failing here is a build bug.
        #[allow(clippy::expect_used)]
        Settings::load("defaults", &Sources::defaults_only()).expect("built-in defaults are valid")
    }

    pub fn uses_azure_backends(&self) -> bool {
        self.store.kind == StoreKind::Cosmos || self.bus.kind == BusKind::Servicebus
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.http.request_timeout_seconds == 0 {
            return Err(ConfigError::key(
                "http.request_timeout_seconds",
                "must be greater than 0",
            ));
        }
        if self.http.max_body_bytes == 0 {
            return Err(ConfigError::key(
                "http.max_body_bytes",
                "must be greater than 0",
            ));
        }
        if self.store.kind == StoreKind::Cosmos {
            if self.store.cosmos.endpoint.trim().is_empty() {
                return Err(ConfigError::key(
                    "store.cosmos.endpoint",
                    "is required when store.kind is \"cosmos\"",
                ));
            }
            if self.store.cosmos.credential == CosmosCredentialKind::Key
                && self.store.cosmos.key.is_none()
            {
                return Err(ConfigError::key(
                    "store.cosmos.key",
                    "is required (from the environment) when store.cosmos.credential is \"key\"",
                ));
            }
        }
        self.validate_bus()?;
        self.validate_change_feed()?;
        if self.auth.mode == AuthMode::Hs256
            && self.uses_azure_backends()
            && !self.auth.allow_hs256_with_azure
        {
            return Err(ConfigError::key(
                "auth.mode",
                "\"hs256\" is a development mode; with Azure backends use \"oidc\" or set auth.allow_hs256_with_azure = true",
            ));
        }
        if self.auth.mode == AuthMode::Oidc && self.auth.issuer.trim().is_empty() {
            return Err(ConfigError::key(
                "auth.issuer",
                "is required when auth.mode is \"oidc\"",
            ));
        }
        if self.auth.audience.trim().is_empty() {
            return Err(ConfigError::key("auth.audience", "must not be empty"));
        }
        if self.rate_limit.enabled
            && (self.rate_limit.per_second == 0 || self.rate_limit.burst == 0)
        {
            return Err(ConfigError::key(
                "rate_limit.per_second",
                "and rate_limit.burst must be greater than 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.telemetry.sample_ratio) {
            return Err(ConfigError::key(
                "telemetry.sample_ratio",
                "must be between 0.0 and 1.0",
            ));
        }
        if self.outbound.breaker_failures == 0 {
            return Err(ConfigError::key(
                "outbound.breaker_failures",
                "must be at least 1",
            ));
        }
        if self.telemetry.metrics_export_interval_ms < 1000 {
            return Err(ConfigError::key(
                "telemetry.metrics_export_interval_ms",
                "must be at least 1000",
            ));
        }
        Ok(())
    }

    fn validate_bus(&self) -> Result<(), ConfigError> {
        let bus = &self.bus;
        if bus.kind == BusKind::Servicebus {
            if bus.servicebus.namespace.trim().is_empty() {
                return Err(ConfigError::key(
                    "bus.servicebus.namespace",
                    "is required when bus.kind is \"servicebus\"",
                ));
            }
            if bus.servicebus.credential == ServiceBusCredentialKind::Sas
                && bus.servicebus.key.is_none()
            {
                return Err(ConfigError::key(
                    "bus.servicebus.key",
                    "is required (from the environment) when bus.servicebus.credential is \"sas\"",
                ));
            }
        }
        if bus.max_delivery_count == 0 {
            return Err(ConfigError::key(
                "bus.max_delivery_count",
                "must be at least 1",
            ));
        }
        if bus.lock_seconds == 0 {
            return Err(ConfigError::key(
                "bus.lock_seconds",
                "must be greater than 0",
            ));
        }
        if bus.poll_interval_ms == 0 {
            return Err(ConfigError::key(
                "bus.poll_interval_ms",
                "must be greater than 0",
            ));
        }
        if bus.retry_backoff_ms.is_empty() {
            return Err(ConfigError::key(
                "bus.retry_backoff_ms",
                "needs at least one delay",
            ));
        }
        // A redelivery must find the record that its event was handled: keep the record
        // longer than any message can come back (duplicate window, or every retry with its
        // lock held to the end).
        let redelivery_ms = bus
            .retry_backoff_ms
            .iter()
            .max()
            .copied()
            .unwrap_or(0)
            .saturating_add(bus.lock_seconds.saturating_mul(1000))
            .saturating_mul(u64::from(bus.max_delivery_count));
        let window_ms = (bus.duplicate_window_seconds.saturating_mul(1000)).max(redelivery_ms);
        if u64::from(bus.processed_retention_seconds).saturating_mul(1000) <= window_ms {
            return Err(ConfigError::key(
                "bus.processed_retention_seconds",
                format!(
                    "must be longer than the redelivery and duplicate-detection window ({} s)",
                    window_ms.div_ceil(1000)
                ),
            ));
        }
        Ok(())
    }

    fn validate_change_feed(&self) -> Result<(), ConfigError> {
        let feed = &self.change_feed;
        if feed.poll_interval_ms == 0 {
            return Err(ConfigError::key(
                "change_feed.poll_interval_ms",
                "must be greater than 0",
            ));
        }
        if feed.lease_seconds < 2 {
            return Err(ConfigError::key(
                "change_feed.lease_seconds",
                "must be at least 2",
            ));
        }
        if feed.batch_size == 0 || feed.batch_size > 1000 {
            return Err(ConfigError::key(
                "change_feed.batch_size",
                "must be 1 to 1000",
            ));
        }
        Ok(())
    }

    /// The embedded bus file, shared by every service using this data folder.
    pub fn bus_file(&self) -> PathBuf {
        self.data_dir.join("bus.db")
    }

    /// The embedded store's file for a service.
    pub fn store_file(&self, service: &str) -> PathBuf {
        self.data_dir.join(format!("{service}.db"))
    }
}

fn environment(prefix: &str, keys: &KnownKeys) -> Environment {
    let environment = Environment::with_prefix(prefix)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        // Lists come comma separated, e.g. PLATFORM__BUS__RETRY_BACKOFF_MS=100,500,2000.
        .list_separator(",");
    keys.lists().fold(environment, |environment, key| {
        environment.with_list_parse_key(key)
    })
}

fn refuse_secrets_in_file(path: &Path, own_secrets: &[&str]) -> Result<(), ConfigError> {
    let file = Config::builder()
        .add_source(File::from(path).format(FileFormat::Toml))
        .build()?;
    for key in SECRET_KEYS.iter().chain(own_secrets) {
        if file.get_string(key).is_ok() {
            return Err(ConfigError::key(
                key,
                format!(
                    "is a secret and must come from the environment, not {}",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// An override written as a list, `[1, 2]`: its items, each converted like any override.
fn list_value(value: &str) -> Option<Vec<String>> {
    let inner = value.trim().strip_prefix('[')?.strip_suffix(']')?;
    Some(
        inner
            .split(',')
            .map(|item| item.trim().trim_matches('"').to_owned())
            .filter(|item| !item.is_empty())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads service `svc` from a folder holding `svc.toml` with `contents`.
    fn load_with_file(contents: &str) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("svc.toml"), contents).unwrap();
        let sources = Sources {
            config_dir: dir.path().to_owned(),
            environment: false,
            service_defaults: vec![],
            overrides: vec![],
        };
        Settings::load("svc", &sources)
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let settings = Settings::defaults();
        assert_eq!(settings.store.kind, StoreKind::Embedded);
        assert_eq!(settings.auth.mode, AuthMode::Hs256);
    }

    #[test]
    fn a_file_overrides_defaults_and_a_wrong_type_names_the_key() {
        let error = load_with_file("[http]\nport = \"not-a-port\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("http.port"), "{error}");
    }

    #[test]
    fn secrets_in_a_file_are_refused() {
        let error = load_with_file("[auth]\nhs256_secret = \"oops\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("auth.hs256_secret"), "{error}");
    }

    #[test]
    fn cosmos_without_endpoint_names_the_key() {
        let error = load_with_file("[store]\nkind = \"cosmos\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("store.cosmos.endpoint"), "{error}");
    }

    #[test]
    fn service_bus_needs_a_namespace_and_a_key_from_the_environment() {
        let dev_auth = "[auth]\nallow_hs256_with_azure = true\n";
        let error = load_with_file(&format!("{dev_auth}[bus]\nkind = \"servicebus\"\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("bus.servicebus.namespace"), "{error}");
        let error = load_with_file(&format!(
            "{dev_auth}[bus]\nkind = \"servicebus\"\n[bus.servicebus]\nnamespace = \"ns\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains("bus.servicebus.key"), "{error}");
        let error = load_with_file("[bus.servicebus]\nkey = \"leaked\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("must come from the environment"), "{error}");
    }

    #[test]
    fn bus_and_peer_settings_are_checked() {
        let error = load_with_file("[bus]\nmax_delivery_count = 0\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("bus.max_delivery_count"), "{error}");
        let error = load_with_file("[bus]\nretry_backoff_ms = []\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("bus.retry_backoff_ms"), "{error}");
        let error = load_with_file("[bus]\nprocessed_retention_seconds = 60\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("bus.processed_retention_seconds"), "{error}");
    }

    #[test]
    fn an_unknown_key_in_the_file_names_the_nearest_known_one() {
        let error = load_with_file("[bus]\npoll_intervall_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("bus.poll_intervall_ms"), "{error}");
        assert!(error.contains("bus.poll_interval_ms"), "{error}");
    }

    #[test]
    fn a_service_reads_its_own_section_and_refuses_unknown_keys_in_it() {
        #[derive(Debug, Deserialize)]
        struct Own {
            peer: Peer,
        }
        #[derive(Debug, Deserialize)]
        struct Peer {
            url: String,
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("svc.toml"), "[peer]\nurl = \"http://x\"\n").unwrap();
        let sources = Sources {
            config_dir: dir.path().to_owned(),
            environment: false,
            service_defaults: vec![],
            overrides: vec![],
        };
        let own_defaults = "[peer]\nurl = \"http://default\"\n";
        let (_, own) = Settings::load_with::<Own>("svc", own_defaults, &[], &sources).unwrap();
        assert_eq!(own.peer.url, "http://x");
        std::fs::write(dir.path().join("svc.toml"), "[peer]\nurls = \"http://x\"\n").unwrap();
        let error = Settings::load_with::<Own>("svc", own_defaults, &[], &sources)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("peer.urls") && error.contains("peer.url`"),
            "{error}"
        );
    }

    #[test]
    fn hs256_with_cosmos_is_refused_unless_allowed() {
        let cosmos = "[store]\nkind = \"cosmos\"\n[store.cosmos]\nendpoint = \"https://x.documents.azure.com\"\ncredential = \"managed-identity\"\n";
        let error = load_with_file(cosmos).unwrap_err().to_string();
        assert!(error.contains("auth.mode"), "{error}");
        let allowed = format!("{cosmos}[auth]\nallow_hs256_with_azure = true\n");
        assert!(load_with_file(&allowed).is_ok());
    }
}
