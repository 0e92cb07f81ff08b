//! Layered configuration: compiled-in defaults, then `config/<service>.toml` if present,
//! then `PLATFORM__*` (shared by all services), then `<SERVICE>__*` environment variables.
//!
//! Secrets are never read from a file: they come from the environment only, and a file
//! that sets one is refused at start.

use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use secrecy::SecretString;
use serde::Deserialize;

use crate::store::embedded::Durability;

/// The defaults every service starts from, with the reason for each.
pub const DEFAULTS: &str = r#"
# Folder for the embedded store and bus, and the development signing secret.
data_dir = "./.data"

[http]
host = "127.0.0.1"
# 0 picks a free port (tests); each service binary overrides its own default port.
port = 0
# Larger bodies are refused with 413 before they are parsed.
max_body_bytes = 262144
# Worker threads per service; 0 means one per core.
workers = 0
# Seconds a stopping server waits for requests in flight.
shutdown_timeout_seconds = 10

[store]
# "embedded" (SQLite file per service under data_dir) or "cosmos".
kind = "embedded"
# Embedded only: "normal" keeps committed writes across a crash, "full" also across power loss.
durability = "normal"

[store.cosmos]
endpoint = ""
database = "platform"
# Azure region the service runs in; the SDK prefers the account's nearest regions.
region = "westeurope"
# "key" (secret from <SERVICE>__STORE__COSMOS__KEY), "managed-identity" or "developer-tools".
credential = "key"

[bus]
# "embedded" (SQLite file data_dir/bus.db, shared by every service on the machine) or
# "servicebus" (Azure Service Bus; SAS key from <SERVICE>__BUS__SERVICEBUS__KEY).
kind = "embedded"
# Deliveries of one message before it is dead-lettered.
max_delivery_count = 10
# How long a received message stays locked to its receiver.
lock_seconds = 30
# How long a message id is remembered to drop repeats.
duplicate_window_seconds = 600
# Delay before the n-th redelivery of a failed message (the last repeats), plus jitter.
retry_backoff_ms = [100, 500, 2000, 10000]
# Longest wait between looks for new messages and outbox entries.
poll_interval_ms = 200

[bus.servicebus]
# The namespace name: <namespace>.servicebus.windows.net.
namespace = ""
# "sas" (policy + key from <SERVICE>__BUS__SERVICEBUS__KEY) or "managed-identity" (Entra ID).
credential = "sas"
# The shared access policy the key belongs to (Send + Listen; Manage to create entities).
policy = "RootManageSharedAccessKey"

[services]
# Where this service finds the others (versioned REST calls).
catalog_url = "http://127.0.0.1:8081"
# Per attempt; calls are retried with jitter.
timeout_ms = 2000
attempts = 3

[auth]
# "hs256" (development secret) or "oidc" (RS256/ES256 keys from the issuer's JWKS).
mode = "hs256"
issuer = "platform-dev"
audience = "platform"
# Allowed clock skew for exp and nbf.
leeway_seconds = 30
# OIDC only; empty means "<issuer>/.well-known/openid-configuration" discovery.
jwks_url = ""
# Minimum seconds between two JWKS refreshes caused by unknown key ids.
jwks_refresh_min_seconds = 30
# A service on Azure backends refuses HS256 unless this is set: it is a development mode.
allow_hs256_with_azure = false

[rate_limit]
enabled = true
# Sustained requests per second per client (token subject, else IP address) ...
per_second = 200
# ... and the burst a client may spend at once.
burst = 400

[telemetry]
# "text" or "json".
log_format = "text"
# tracing filter directive, overridden by RUST_LOG.
log_level = "info"
# OTLP/HTTP endpoint, e.g. "http://localhost:4318/v1/traces"; empty disables export.
otlp_endpoint = ""
# Fraction of new traces sampled; incoming sampled parents are always followed.
sample_ratio = 1.0
"#;

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
    pub services: ServicesSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    pub max_body_bytes: usize,
    pub workers: usize,
    pub shutdown_timeout_seconds: u64,
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
    pub servicebus: ServiceBusSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServicesSettings {
    pub catalog_url: String,
    pub timeout_ms: u64,
    pub attempts: u32,
}

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
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Key { key: String, message: String },
}

impl ConfigError {
    fn key(key: &str, message: impl Into<String>) -> Self {
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
        }
    }

    /// Built-in defaults only: what tests start from.
    pub fn defaults_only() -> Self {
        Self {
            config_dir: PathBuf::from("/nonexistent"),
            environment: false,
            service_defaults: Vec::new(),
        }
    }
}

impl Settings {
    /// Loads and validates one service's settings.
    pub fn load(service: &str, sources: &Sources) -> Result<Settings, ConfigError> {
        let mut service_defaults = Config::builder();
        for (key, value) in &sources.service_defaults {
            service_defaults = service_defaults.set_override(key.as_str(), value.as_str())?;
        }
        let mut builder = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(service_defaults.build()?);
        let file_path = sources.config_dir.join(format!("{service}.toml"));
        if file_path.exists() {
            refuse_secrets_in_file(&file_path)?;
            builder = builder.add_source(File::from(file_path.as_path()).format(FileFormat::Toml));
        }
        if sources.environment {
            builder = builder
                .add_source(environment("PLATFORM"))
                .add_source(environment(&service.to_uppercase()));
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
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
        if self.services.attempts == 0 || self.services.timeout_ms == 0 {
            return Err(ConfigError::key(
                "services.attempts",
                "and services.timeout_ms must be greater than 0",
            ));
        }
        if !self.services.catalog_url.starts_with("http://")
            && !self.services.catalog_url.starts_with("https://")
        {
            return Err(ConfigError::key(
                "services.catalog_url",
                "must be an http:// or https:// URL",
            ));
        }
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

fn environment(prefix: &str) -> Environment {
    Environment::with_prefix(prefix)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        // Lists come comma separated, e.g. PLATFORM__BUS__RETRY_BACKOFF_MS=100,500,2000.
        .list_separator(",")
        .with_list_parse_key("bus.retry_backoff_ms")
}

fn refuse_secrets_in_file(path: &Path) -> Result<(), ConfigError> {
    let file = Config::builder()
        .add_source(File::from(path).format(FileFormat::Toml))
        .build()?;
    for key in SECRET_KEYS {
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
        let error = load_with_file("[services]\ncatalog_url = \"catalog:8081\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("services.catalog_url"), "{error}");
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
