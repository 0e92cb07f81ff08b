//! Per-client rate limiting (token subject, else peer IP address), GCRA via `governor`.
//! Answers 429 with `Retry-After`; every limited response carries `RateLimit` headers.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Gcra};

use crate::auth::Principal;
use crate::config::RateLimitSettings;
use crate::error::{ApiError, ErrorCode};

// The standard monotonic clock: the default (quanta) calibrates its TSC at first use, which
// cost each cold start several milliseconds of spinning.
type KeyedLimiter =
    Gcra<String, DefaultKeyedStateStore<String>, MonotonicClock, StateInformationMiddleware>;

/// How often (in checked requests) idle client entries are dropped.
const SWEEP_EVERY: u64 = 10_000;

#[derive(Clone)]
pub struct RateLimiter {
    limiter: Option<Arc<KeyedLimiter>>,
    clock: MonotonicClock,
    per_second: u32,
    checks: Arc<AtomicU64>,
}

enum Decision {
    Allowed {
        limit: u32,
        remaining: u32,
    },
    Limited {
        limit: u32,
        retry_after_seconds: u64,
    },
}

impl RateLimiter {
    pub fn from_settings(settings: &RateLimitSettings) -> Self {
        let quota = NonZeroU32::new(settings.per_second)
            .zip(NonZeroU32::new(settings.burst))
            .map(|(rate, burst)| Quota::per_second(rate).allow_burst(burst));
        let limiter = quota.filter(|_| settings.enabled).map(|quota| {
            Arc::new(KeyedLimiter::new(
                quota,
                DefaultKeyedStateStore::default(),
                MonotonicClock,
            ))
        });
        Self {
            limiter,
            clock: MonotonicClock,
            per_second: settings.per_second,
            checks: Arc::new(AtomicU64::new(0)),
        }
    }

    fn check(&self, client: &str) -> Option<Decision> {
        let limiter = self.limiter.as_ref()?;
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        Some(match limiter.check_key(&client.to_owned()) {
            Ok(snapshot) => Decision::Allowed {
                limit: snapshot.quota().burst_size().get(),
                remaining: snapshot.remaining_burst_capacity(),
            },
            Err(not_until) => Decision::Limited {
                limit: not_until.quota().burst_size().get(),
                retry_after_seconds: not_until
                    .wait_time_from(self.clock.now())
                    .as_secs_f64()
                    .ceil()
                    .max(1.0) as u64,
            },
        })
    }

    fn reset_seconds(&self, limit: u32, remaining: u32) -> u64 {
        let missing = u64::from(limit.saturating_sub(remaining));
        missing.div_ceil(u64::from(self.per_second.max(1)))
    }
}

fn insert(headers: &mut actix_web::http::header::HeaderMap, name: &'static str, value: String) {
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

fn rate_limit_headers(
    headers: &mut actix_web::http::header::HeaderMap,
    limit: u32,
    remaining: u32,
    reset: u64,
) {
    insert(
        headers,
        "ratelimit",
        format!("limit={limit}, remaining={remaining}, reset={reset}"),
    );
    insert(headers, "ratelimit-limit", limit.to_string());
    insert(headers, "ratelimit-remaining", remaining.to_string());
    insert(headers, "ratelimit-reset", reset.to_string());
}

/// Middleware: must run after [`crate::auth::authenticate`] so that the client is known.
pub async fn limit_rate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // Probes and trigger invocations from the hosting platform are never limited.
    let exempt = req.path().starts_with("/health/") || req.path().starts_with("/fn-");
    let limiter = req.app_data::<web::Data<RateLimiter>>().cloned();
    let Some(limiter) = limiter.filter(|_| !exempt) else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let client = req
        .extensions()
        .get::<Principal>()
        .map(|principal| format!("sub:{}", principal.subject))
        .or_else(|| req.peer_addr().map(|addr| format!("ip:{}", addr.ip())))
        .unwrap_or_else(|| "unknown".to_owned());
    match limiter.check(&client) {
        None => Ok(next.call(req).await?.map_into_left_body()),
        Some(Decision::Allowed { limit, remaining }) => {
            let mut response = next.call(req).await?;
            let reset = limiter.reset_seconds(limit, remaining);
            rate_limit_headers(response.headers_mut(), limit, remaining, reset);
            Ok(response.map_into_left_body())
        }
        Some(Decision::Limited {
            limit,
            retry_after_seconds,
        }) => {
            let error = ApiError::new(
                ErrorCode::RateLimited,
                format!("rate limit exceeded; retry in {retry_after_seconds} s"),
            )
            .with_retry_after(retry_after_seconds);
            let mut response = error.error_response();
            rate_limit_headers(response.headers_mut(), limit, 0, retry_after_seconds);
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}
