//! Signing keys of an OIDC issuer: fetched from its JWKS, cached, and refreshed when a
//! token names a key id we have not seen (key rotation), at most once per interval.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::AuthError;
use crate::config::AuthSettings;

#[derive(Clone)]
pub struct JwksClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    issuer: String,
    jwks_url: Option<String>,
    min_refresh_interval: Duration,
    keys: RwLock<JwkSet>,
    refresh: tokio::sync::Mutex<RefreshState>,
}

/// When the keys may be fetched again: a successful fetch waits the configured interval
/// (unknown key ids must not hammer the issuer), a failed one backs off from a second,
/// doubling up to that interval, so that an outage ends as soon as the issuer is back.
#[derive(Default)]
struct RefreshState {
    not_before: Option<Instant>,
    failures: u32,
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

impl JwksClient {
    pub fn for_settings(settings: &AuthSettings) -> Self {
        let jwks_url = Some(settings.jwks_url.trim().to_owned()).filter(|url| !url.is_empty());
        Self::new(
            settings.issuer.clone(),
            jwks_url,
            Duration::from_secs(settings.jwks_refresh_min_seconds),
        )
    }

    pub fn new(issuer: String, jwks_url: Option<String>, min_refresh_interval: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                http,
                issuer,
                jwks_url,
                min_refresh_interval,
                keys: RwLock::new(JwkSet { keys: Vec::new() }),
                refresh: tokio::sync::Mutex::new(RefreshState::default()),
            }),
        }
    }

    fn cached(&self, kid: &str) -> Option<Jwk> {
        self.inner.keys.read().ok()?.find(kid).cloned()
    }

    /// The verification key for `kid`, refusing a key whose type does not fit `algorithm`.
    pub async fn key_for(&self, kid: &str, algorithm: Algorithm) -> Result<DecodingKey, AuthError> {
        let jwk = match self.cached(kid) {
            Some(jwk) => jwk,
            None => {
                self.refresh().await?;
                self.cached(kid).ok_or(AuthError::UnknownKey)?
            }
        };
        let fits = matches!(
            (&jwk.algorithm, algorithm),
            (AlgorithmParameters::RSA(_), Algorithm::RS256)
                | (AlgorithmParameters::EllipticCurve(_), Algorithm::ES256)
        );
        let declared_fits = jwk
            .common
            .key_algorithm
            .is_none_or(|declared| format!("{declared:?}") == format!("{algorithm:?}"));
        if !fits || !declared_fits {
            return Err(AuthError::Algorithm);
        }
        DecodingKey::from_jwk(&jwk).map_err(|_| AuthError::UnknownKey)
    }

    /// Fetches the keys unless it is too early; too early after a failure is still a
    /// failure (the issuer is down: 503), too early after a success means the keys we have
    /// are the issuer's (an unknown key id: 401).
    async fn refresh(&self) -> Result<(), AuthError> {
        let mut state = self.inner.refresh.lock().await;
        if state.not_before.is_some_and(|at| Instant::now() < at) {
            return if state.failures > 0 {
                Err(AuthError::KeysUnavailable)
            } else {
                Ok(())
            };
        }
        match self.fetch().await {
            Ok(set) => {
                if let Ok(mut keys) = self.inner.keys.write() {
                    *keys = set;
                }
                state.failures = 0;
                state.not_before = Some(Instant::now() + self.inner.min_refresh_interval);
                Ok(())
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let backoff = Duration::from_secs(1 << state.failures.saturating_sub(1).min(10))
                    .min(self.inner.min_refresh_interval.max(Duration::from_secs(1)));
                state.not_before = Some(Instant::now() + backoff);
                tracing::warn!(%error, issuer = %self.inner.issuer, failures = state.failures, retry_in = ?backoff, "fetching JWKS failed");
                Err(AuthError::KeysUnavailable)
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, reqwest::Error> {
        let url = match &self.inner.jwks_url {
            Some(url) => url.clone(),
            None => {
                let discovery_url = format!(
                    "{}/.well-known/openid-configuration",
                    self.inner.issuer.trim_end_matches('/')
                );
                let discovery: Discovery = self
                    .inner
                    .http
                    .get(discovery_url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                discovery.jwks_uri
            }
        };
        self.inner
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }
}
