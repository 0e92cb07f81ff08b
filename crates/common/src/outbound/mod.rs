//! Calls one service makes to another: the bearer token it presents (minted from the
//! development secret, or taken from a managed identity on Azure) and the back-off between
//! attempts; and calls to targets outside the platform ([`targets`]).

pub mod breaker;
pub mod resilient;
pub mod targets;

pub use breaker::Breakers;
pub use resilient::{OutboundError, ResilientClient};

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use secrecy::SecretString;
use tokio::sync::Mutex;

use crate::config::{AuthSettings, OutboundCredential, Settings};

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The identity provider did not answer; worth another try later.
    #[error("getting a token: {0}")]
    Unavailable(String),
    /// Minting failed: a configuration problem.
    #[error("minting a service token: {0}")]
    Mint(String),
}

enum Source {
    Development {
        secret: SecretString,
        settings: AuthSettings,
    },
    Azure {
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
        scope: String,
    },
}

struct Cached {
    token: String,
    renew_after: Instant,
}

/// The tokens a service presents to its peers, cached for half their lifetime.
#[derive(Clone)]
pub struct ServiceTokens {
    source: Arc<Source>,
    subject: &'static str,
    scopes: &'static str,
    cached: Arc<Mutex<Option<Cached>>>,
}

/// How long a minted development token lives.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

impl ServiceTokens {
    /// Tokens for `subject` with `scopes` (minted in development; on Azure the identity's
    /// token for the configured audience, whose roles the peer checks).
    pub fn from_settings(
        settings: &Settings,
        subject: &'static str,
        scopes: &'static str,
    ) -> anyhow::Result<Self> {
        let scope = format!(
            "{}/.default",
            settings.outbound_audience().trim_end_matches('/')
        );
        let source = match settings.outbound_credential() {
            OutboundCredential::DevToken | OutboundCredential::Auto => {
                let secret = match &settings.auth.hs256_secret {
                    Some(secret) => secret.clone(),
                    None => crate::auth::load_or_create_dev_secret(&settings.data_dir)?,
                };
                Source::Development {
                    secret,
                    settings: settings.auth.clone(),
                }
            }
            OutboundCredential::ManagedIdentity => Source::Azure {
                credential: azure_identity::ManagedIdentityCredential::new(None)?,
                scope,
            },
            OutboundCredential::DeveloperTools => Source::Azure {
                credential: azure_identity::DeveloperToolsCredential::new(None)?,
                scope,
            },
        };
        Ok(Self {
            source: Arc::new(source),
            subject,
            scopes,
            cached: Arc::new(Mutex::new(None)),
        })
    }

    /// True when tokens are minted from the development secret.
    pub fn is_development(&self) -> bool {
        matches!(self.source.as_ref(), Source::Development { .. })
    }

    /// A bearer token, from the cache while it is fresh.
    pub async fn bearer(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.renew_after) {
            return Ok(token.token.clone());
        }
        let token = match self.source.as_ref() {
            Source::Development { secret, settings } => crate::auth::mint_dev_token(
                secret,
                settings,
                self.subject,
                self.scopes,
                TOKEN_LIFETIME.as_secs(),
            )
            .map_err(|e| TokenError::Mint(e.to_string()))?,
            Source::Azure { credential, scope } => credential
                .get_token(&[scope.as_str()], None)
                .await
                .map_err(|e| TokenError::Unavailable(e.to_string()))?
                .token
                .secret()
                .to_owned(),
        };
        *cached = Some(Cached {
            token: token.clone(),
            renew_after: Instant::now() + TOKEN_LIFETIME / 2,
        });
        Ok(token)
    }
}

/// Where and how a service calls a peer's versioned API (a service's own section, e.g.
/// orders' and sync's `[catalog]`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct PeerSettings {
    pub url: String,
    /// Per attempt.
    pub timeout_ms: u64,
    pub attempts: u32,
}

impl PeerSettings {
    /// Checks the section named `section`.
    pub fn validate(&self, section: &str) -> Result<(), crate::config::ConfigError> {
        use crate::config::ConfigError;
        if !self.url.starts_with("http://") && !self.url.starts_with("https://") {
            return Err(ConfigError::key(
                &format!("{section}.url"),
                "must be an http:// or https:// URL",
            ));
        }
        if self.attempts == 0 {
            return Err(ConfigError::key(
                &format!("{section}.attempts"),
                "must be at least 1",
            ));
        }
        if self.timeout_ms == 0 {
            return Err(ConfigError::key(
                &format!("{section}.timeout_ms"),
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// The pause before attempt `attempt` (2, 3, ...): exponential from 50 ms, capped at 3.2 s,
/// with up to half again of jitter so that retrying callers spread out.
pub fn backoff(attempt: u32) -> Duration {
    let base = 50u64 << attempt.saturating_sub(2).min(6);
    let jitter = rand::rng().random_range(0..=base / 2);
    Duration::from_millis(base + jitter)
}

/// An HTTP client made at its first use. Making one loads the system's CA certificates
/// (milliseconds of parsing), which a cold start should not pay before its first answer.
#[derive(Clone)]
pub struct LazyClient {
    made: std::sync::Arc<std::sync::OnceLock<reqwest::Client>>,
    make: std::sync::Arc<dyn Fn() -> reqwest::Result<reqwest::Client> + Send + Sync>,
}

impl LazyClient {
    pub fn new(
        make: impl Fn() -> reqwest::Result<reqwest::Client> + Send + Sync + 'static,
    ) -> Self {
        Self {
            made: std::sync::Arc::default(),
            make: std::sync::Arc::new(make),
        }
    }

    /// A client with these time-outs for both connecting and the whole request.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self::new(move || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()
        })
    }

    /// The client, made now if it was not yet.
    pub fn get(&self) -> reqwest::Result<&reqwest::Client> {
        if let Some(client) = self.made.get() {
            return Ok(client);
        }
        let client = (self.make)()?;
        Ok(self.made.get_or_init(|| client))
    }
}
