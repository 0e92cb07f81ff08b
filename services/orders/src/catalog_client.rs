//! The versioned REST call to the catalog for current prices: a timeout per attempt,
//! retries with exponential back-off and jitter, the caller's trace context, and a service
//! token (minted from the development secret, or from the managed identity on Azure).

use std::time::Duration;

use common::config::Settings;
use common::money::{Money, parse_currency};
use common::outbound::{Breakers, OutboundError, ResilientClient, ServiceTokens, TokenError};
use serde::Deserialize;

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

#[derive(Clone)]
pub struct CatalogClient {
    http: ResilientClient,
    base_url: String,
    tokens: ServiceTokens,
}

impl CatalogClient {
    /// A client of the catalog at `peer.url` (or `url` when the platform knows better).
    pub fn from_settings(
        settings: &Settings,
        peer: &CatalogPeer,
        url: Option<&str>,
        breakers: Breakers,
    ) -> anyhow::Result<Self> {
        let http = ResilientClient::new(
            common::outbound::LazyClient::with_timeout(Duration::from_millis(peer.timeout_ms)),
            peer.attempts,
            breakers,
        );
        Ok(Self {
            http,
            base_url: url.unwrap_or(&peer.url).trim_end_matches('/').to_owned(),
            tokens: ServiceTokens::from_settings(settings, "orders", "catalog.read")?,
        })
    }

    async fn token(&self) -> Result<String, CatalogError> {
        self.tokens.bearer().await.map_err(|error| match error {
            TokenError::Unavailable(_) => CatalogError::Unavailable(error.to_string()),
            TokenError::Mint(_) => CatalogError::Failed(error.to_string()),
        })
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
        let token = self.token().await?;
        let trace = common::telemetry::current_trace_headers();
        let response = self
            .http
            .send(&url, |client| {
                let mut request = client.get(url.clone()).bearer_auth(&token);
                for (name, value) in &trace {
                    request = request.header(name, value);
                }
                request
            })
            .await
            .map_err(|error| match error {
                // The catalog answers, but fails: a dependency failure, not a wait.
                OutboundError::Answered { .. } => CatalogError::Failed(error.to_string()),
                OutboundError::CircuitOpen { .. }
                | OutboundError::Unreachable(_)
                | OutboundError::Client(_) => CatalogError::Unavailable(error.to_string()),
            })?;
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
            404 => Err(CatalogError::UnknownProduct(sku.to_owned())),
            401 | 403 => Err(CatalogError::Failed(format!(
                "the catalog refused our credentials ({status})"
            ))),
            _ => Err(CatalogError::Failed(format!("answered {status}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::OutboundCredential;
    use secrecy::SecretString;

    fn client(base: &str) -> CatalogClient {
        let mut settings = Settings::defaults();
        settings.auth.hs256_secret = Some(SecretString::from("s".repeat(32)));
        let peer = CatalogPeer {
            url: base.to_owned(),
            timeout_ms: 100,
            attempts: 1,
        };
        CatalogClient::from_settings(
            &settings,
            &peer,
            None,
            Breakers::new(5, Duration::from_secs(30)),
        )
        .unwrap()
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
        let client = CatalogClient::from_settings(
            &settings,
            &peer,
            None,
            Breakers::new(5, Duration::from_secs(30)),
        )
        .unwrap();
        assert!(client.tokens.is_development());
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
