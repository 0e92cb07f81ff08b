//! The client every outbound call to a peer or an endpoint goes through: a time-out per
//! attempt (the client's), retries of transient failures with exponential back-off and
//! jitter, and the target's circuit breaker.

use std::time::Duration;

use super::breaker::{Admission, Breakers, target_of};
use super::{LazyClient, backoff, targets};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    /// The target failed repeatedly: calls to it fail at once for a while.
    #[error("{target} is failing: calls to it are refused for {}s (circuit open)", retry_in.as_secs().max(1))]
    CircuitOpen { target: String, retry_in: Duration },
    /// The last attempt got no answer (no connection, a time-out).
    #[error("{0}")]
    Unreachable(String),
    /// The last attempt was answered with a transient failure (408, 429 or 5xx).
    #[error("answered {status}: {said}")]
    Answered { status: u16, said: String },
    /// No HTTP client could be made (the system's certificates could not be read).
    #[error("no HTTP client: {0}")]
    Client(String),
}

impl OutboundError {
    /// When the caller may try again, if the error says.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            Self::CircuitOpen { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct ResilientClient {
    http: LazyClient,
    attempts: u32,
    breakers: Breakers,
}

/// Whether an answer is a transient failure worth another attempt.
pub fn is_transient(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500..=599)
}

impl ResilientClient {
    /// `attempts` per call (1: no retry, for callers with their own schedule).
    pub fn new(http: LazyClient, attempts: u32, breakers: Breakers) -> Self {
        Self {
            http,
            attempts: attempts.max(1),
            breakers,
        }
    }

    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// Sends the request `build` makes for `url` (once per attempt) and answers the first
    /// answer that is not a transient failure; records the attempts made on the current
    /// span's `attempts` field.
    pub async fn send(
        &self,
        url: &url::Url,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OutboundError> {
        let client = self
            .http
            .get()
            .map_err(|e| OutboundError::Client(e.to_string()))?;
        let target = target_of(url);
        let mut last = OutboundError::Unreachable("no attempt made".into());
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            if let Admission::Refused { retry_in } = self.breakers.admit(&target) {
                return Err(OutboundError::CircuitOpen {
                    target: target.clone(),
                    retry_in,
                });
            }
            tracing::Span::current().record("attempts", attempt);
            match build(client).send().await {
                Ok(response) if is_transient(response.status()) => {
                    self.breakers.failed(&target);
                    let status = response.status().as_u16();
                    let said = targets::excerpt(response, 200).await;
                    last = OutboundError::Answered { status, said };
                }
                Ok(response) => {
                    self.breakers.succeeded(&target);
                    return Ok(response);
                }
                Err(error) => {
                    self.breakers.failed(&target);
                    last = OutboundError::Unreachable(error.to_string());
                }
            }
        }
        Err(last)
    }
}
