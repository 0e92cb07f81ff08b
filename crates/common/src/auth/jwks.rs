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
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
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
                last_refresh: tokio::sync::Mutex::new(None),
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

    async fn refresh(&self) -> Result<(), AuthError> {
        let mut last = self.inner.last_refresh.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.inner.min_refresh_interval) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let set = self.fetch().await.map_err(|error| {
            tracing::warn!(%error, issuer = %self.inner.issuer, "fetching JWKS failed");
            AuthError::KeysUnavailable
        })?;
        if let Ok(mut keys) = self.inner.keys.write() {
            *keys = set;
        }
        Ok(())
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
