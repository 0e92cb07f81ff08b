//! The versioned REST call to the catalog for current prices: a timeout per attempt,
//! retries with exponential back-off and jitter, the caller's trace context, and a service
//! token (minted from the development secret, or from the managed identity on Azure).

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::config::{OutboundCredential, Settings};
use common::money::{Money, parse_currency};
use rand::Rng;
use secrecy::SecretString;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::settings::CatalogPeer;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("product {0} does not exist")]
    UnknownProduct(String),
    #[error("the catalog could not be reached: {0}")]
    Unavailable(String),
    #[error("the catalog failed: {0}")]
    Failed(String),
}

#[derive(Deserialize)]
struct PriceV2 {
    amount: String,
    currency: String,
}

#[derive(Deserialize)]
struct ProductV2 {
    price: PriceV2,
}

/// Where the bearer token for catalog calls comes from.
enum TokenSource {
    Development {
        secret: SecretString,
        settings: common::config::AuthSettings,
    },
    Azure {
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
        scope: String,
    },
}

struct CachedToken {
    token: String,
    renew_after: Instant,
}

#[derive(Clone)]
pub struct CatalogClient {
    http: reqwest::Client,
    base_url: String,
    attempts: u32,
    tokens: Arc<TokenSource>,
    cached: Arc<Mutex<Option<CachedToken>>>,
}

const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

impl CatalogClient {
    /// A client of the catalog at `peer.url` (or `url` when the platform knows better).
    pub fn from_settings(
        settings: &Settings,
        peer: &CatalogPeer,
        url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let scope = format!(
            "{}/.default",
            settings.outbound_audience().trim_end_matches('/')
        );
        let tokens = match settings.outbound_credential() {
            OutboundCredential::DevToken | OutboundCredential::Auto => {
                let secret = match &settings.auth.hs256_secret {
                    Some(secret) => secret.clone(),
                    None => common::auth::load_or_create_dev_secret(&settings.data_dir)?,
                };
                TokenSource::Development {
                    secret,
                    settings: settings.auth.clone(),
                }
            }
            OutboundCredential::ManagedIdentity => TokenSource::Azure {
                credential: azure_identity::ManagedIdentityCredential::new(None)?,
                scope,
            },
            OutboundCredential::DeveloperTools => TokenSource::Azure {
                credential: azure_identity::DeveloperToolsCredential::new(None)?,
                scope,
            },
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(peer.timeout_ms))
            .connect_timeout(Duration::from_millis(peer.timeout_ms))
            .build()?;
        Ok(Self {
            http,
            base_url: url.unwrap_or(&peer.url).trim_end_matches('/').to_owned(),
            attempts: peer.attempts,
            tokens: Arc::new(tokens),
            cached: Arc::new(Mutex::new(None)),
        })
    }

    async fn token(&self) -> Result<String, CatalogError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.renew_after) {
            return Ok(token.token.clone());
        }
        let token = match self.tokens.as_ref() {
            TokenSource::Development { secret, settings } => common::auth::mint_dev_token(
                secret,
                settings,
                "orders",
                "catalog.read",
                TOKEN_LIFETIME.as_secs(),
            )
            .map_err(|e| CatalogError::Failed(format!("minting a service token: {e}")))?,
            TokenSource::Azure { credential, scope } => credential
                .get_token(&[scope.as_str()], None)
                .await
                .map_err(|e| CatalogError::Unavailable(format!("getting a token: {e}")))?
                .token
                .secret()
                .to_owned(),
        };
        *cached = Some(CachedToken {
            token: token.clone(),
            renew_after: Instant::now() + TOKEN_LIFETIME / 2,
        });
        Ok(token)
    }

    /// `<base>/v2/products/<sku>`, the SKU checked and encoded as one path segment, so that
    /// no input can reach another route of the catalog.
    fn product_url(&self, sku: &str) -> Result<url::Url, CatalogError> {
        let sku = common::sku::Sku::parse(sku)
            .map_err(|rule| CatalogError::Failed(format!("SKU {sku:?} {rule}")))?;
        let mut url = url::Url::parse(&self.base_url)
            .map_err(|e| CatalogError::Failed(format!("catalog URL {}: {e}", self.base_url)))?;
        url.path_segments_mut()
            .map_err(|()| {
                CatalogError::Failed(format!("catalog URL {} cannot take a path", self.base_url))
            })?
            .pop_if_empty()
            .extend(["v2", "products", sku.as_str()]);
        Ok(url)
    }

    /// The current price of `sku`.
    #[tracing::instrument(name = "catalog.price", skip(self), fields(otel.kind = "client", attempts = tracing::field::Empty))]
    pub async fn price(&self, sku: &str) -> Result<Money, CatalogError> {
        let url = self.product_url(sku)?;
        let mut last_error = CatalogError::Unavailable("no attempt made".into());
        for attempt in 1..=self.attempts {
            tracing::Span::current().record("attempts", attempt);
            if attempt > 1 {
                let base = 50u64 << (attempt - 2).min(6);
                let jitter = rand::rng().random_range(0..=base / 2);
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
            let token = self.token().await?;
            let mut request = self.http.get(url.clone()).bearer_auth(token);
            for (name, value) in common::telemetry::current_trace_headers() {
                request = request.header(name, value);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    last_error = CatalogError::Unavailable(error.to_string());
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                let product: ProductV2 = response
                    .json()
                    .await
                    .map_err(|e| CatalogError::Failed(format!("unreadable product {sku}: {e}")))?;
                let currency = parse_currency(&product.price.currency)
                    .map_err(|e| CatalogError::Failed(format!("product {sku} currency {e}")))?;
                return Money::parse(&product.price.amount, currency)
                    .map_err(|e| CatalogError::Failed(format!("product {sku} price {e}")));
            }
            match status.as_u16() {
                404 => return Err(CatalogError::UnknownProduct(sku.to_owned())),
                401 | 403 => {
                    return Err(CatalogError::Failed(format!(
                        "the catalog refused our credentials ({status})"
                    )));
                }
                429 | 500..=599 => last_error = CatalogError::Failed(format!("answered {status}")),
                _ => return Err(CatalogError::Failed(format!("answered {status}"))),
            }
        }
        Err(last_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> CatalogClient {
        let mut settings = Settings::defaults();
        settings.auth.hs256_secret = Some(SecretString::from("s".repeat(32)));
        let peer = CatalogPeer {
            url: base.to_owned(),
            timeout_ms: 100,
            attempts: 1,
        };
        CatalogClient::from_settings(&settings, &peer, None).unwrap()
    }

    #[test]
    fn outbound_credentials_are_their_own_setting() {
        let mut settings = Settings::defaults();
        settings.auth.mode = common::config::AuthMode::Oidc;
        settings.auth.hs256_secret = Some(SecretString::from("s".repeat(32)));
        assert_eq!(
            settings.outbound_credential(),
            OutboundCredential::ManagedIdentity
        );
        settings.outbound.credential = OutboundCredential::DevToken;
        let peer = CatalogPeer {
            url: "http://c".into(),
            timeout_ms: 100,
            attempts: 1,
        };
        let client = CatalogClient::from_settings(&settings, &peer, None).unwrap();
        assert!(matches!(
            client.tokens.as_ref(),
            TokenSource::Development { .. }
        ));
    }

    #[test]
    fn a_sku_is_one_encoded_path_segment_under_the_base() {
        let url = client("http://catalog:8081/").product_url("A-1").unwrap();
        assert_eq!(url.as_str(), "http://catalog:8081/v2/products/A-1");
        let url = client("https://gw.example/catalog")
            .product_url("A.b_1")
            .unwrap();
        assert_eq!(url.as_str(), "https://gw.example/catalog/v2/products/A.b_1");
        for hostile in ["A?x", "A#x", "../x", "A/B", "%41"] {
            assert!(
                client("http://c").product_url(hostile).is_err(),
                "{hostile}"
            );
        }
    }
}
