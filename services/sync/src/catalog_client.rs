//! The catalog's bulk upsert (`POST /v2/products:batch`), called with a service token, the
//! caller's trace context, a timeout per attempt and retries with back-off.

use std::time::Duration;

use common::config::Settings;
use common::outbound::{ServiceTokens, TokenError, backoff};
use serde::Deserialize;
use serde_json::Value;

use crate::settings::CatalogPeer;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogCallError {
    /// Not reached, or failing for now: the import waits and sends the batch again.
    #[error("the catalog is unavailable: {0}")]
    Unavailable(String),
    /// Refused as a whole (not item by item): sending it again would not help.
    #[error("the catalog refused the batch: {0}")]
    Refused(String),
}

/// One item's outcome, as the catalog reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct ItemAnswer {
    pub index: usize,
    pub status: String,
    #[serde(default)]
    pub errors: Vec<ItemError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ItemError {
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
struct BatchAnswer {
    items: Vec<ItemAnswer>,
}

#[derive(Clone)]
pub struct CatalogClient {
    http: reqwest::Client,
    batch_url: url::Url,
    attempts: u32,
    tokens: ServiceTokens,
}

impl CatalogClient {
    /// A client of the catalog at `peer.url` (or `url` when the platform knows better).
    pub fn from_settings(
        settings: &Settings,
        peer: &CatalogPeer,
        url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let base = url.unwrap_or(&peer.url).trim_end_matches('/');
        let batch_url = url::Url::parse(&format!("{base}/v2/products:batch"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(peer.timeout_ms))
            .connect_timeout(Duration::from_millis(peer.timeout_ms.min(5_000)))
            .build()?;
        Ok(Self {
            http,
            batch_url,
            attempts: peer.attempts,
            tokens: ServiceTokens::from_settings(settings, "sync", "catalog.write")?,
        })
    }

    /// Upserts `items` (catalog bulk items), answering each one's outcome in order.
    #[tracing::instrument(name = "catalog.upsert_batch", skip_all, fields(otel.kind = "client", items = items.len(), attempts = tracing::field::Empty))]
    pub async fn upsert(&self, items: &[Value]) -> Result<Vec<ItemAnswer>, CatalogCallError> {
        let body = serde_json::json!({ "items": items });
        let mut last = CatalogCallError::Unavailable("no attempt made".into());
        for attempt in 1..=self.attempts {
            tracing::Span::current().record("attempts", attempt);
            if attempt > 1 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let token = self.tokens.bearer().await.map_err(|error| match error {
                TokenError::Unavailable(_) => CatalogCallError::Unavailable(error.to_string()),
                TokenError::Mint(_) => CatalogCallError::Refused(error.to_string()),
            })?;
            let mut request = self
                .http
                .post(self.batch_url.clone())
                .bearer_auth(token)
                .json(&body);
            for (name, value) in common::telemetry::current_trace_headers() {
                request = request.header(name, value);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    last = CatalogCallError::Unavailable(error.to_string());
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                let answer: BatchAnswer = response.json().await.map_err(|e| {
                    CatalogCallError::Unavailable(format!("an unreadable answer: {e}"))
                })?;
                if answer.items.len() != items.len() {
                    return Err(CatalogCallError::Refused(format!(
                        "answered {} items for {}",
                        answer.items.len(),
                        items.len()
                    )));
                }
                return Ok(answer.items);
            }
            let detail = response.text().await.unwrap_or_default();
            let detail: String = detail.chars().take(300).collect();
            match status.as_u16() {
                408 | 429 | 500..=599 => {
                    last = CatalogCallError::Unavailable(format!("answered {status}: {detail}"));
                }
                _ => {
                    return Err(CatalogCallError::Refused(format!(
                        "answered {status}: {detail}"
                    )));
                }
            }
        }
        Err(last)
    }
}
