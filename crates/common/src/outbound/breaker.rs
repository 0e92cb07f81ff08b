//! Circuit breakers, one per target (scheme, host and port): after `failures` transient
//! failures in a row a target's breaker opens and calls to it fail at once; after `open_for`
//! one call goes through as a probe, and its outcome closes the breaker or opens it again.
//!
//! A service has one set ([`Breakers`]) shared by all its outbound clients; its state shows in
//! `/health/ready` (as details: an open breaker degrades, it does not make the service
//! unready) and in the metrics.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Calls fail at once until the open period ends.
    Open,
    /// One probe is allowed through.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

/// Whether a call may go to its target now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// The breaker is open (or another call is probing): retry after this long.
    Refused {
        retry_in: Duration,
    },
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
    times_opened: u64,
}

impl Breaker {
    fn state(&self, open_for: Duration) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(at) if at.elapsed() < open_for => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

#[derive(Clone)]
pub struct Breakers {
    inner: Arc<Inner>,
}

struct Inner {
    failures: u32,
    open_for: Duration,
    targets: Mutex<BTreeMap<String, Breaker>>,
}

impl Breakers {
    /// Breakers that open after `failures` transient failures in a row and stay open for
    /// `open_for` before probing.
    pub fn new(failures: u32, open_for: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                failures: failures.max(1),
                open_for,
                targets: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// May a call go to `target` now? In the half-open state only one call (the probe) is
    /// let through until its outcome is recorded.
    pub fn admit(&self, target: &str) -> Admission {
        let Ok(mut targets) = self.inner.targets.lock() else {
            return Admission::Go;
        };
        let Some(breaker) = targets.get_mut(target) else {
            return Admission::Go;
        };
        match breaker.state(self.inner.open_for) {
            BreakerState::Closed => Admission::Go,
            BreakerState::Open => Admission::Refused {
                retry_in: breaker
                    .opened_at
                    .map(|at| self.inner.open_for.saturating_sub(at.elapsed()))
                    .unwrap_or_default(),
            },
            BreakerState::HalfOpen if breaker.probing => Admission::Refused {
                retry_in: Duration::from_secs(1),
            },
            BreakerState::HalfOpen => {
                breaker.probing = true;
                Admission::Go
            }
        }
    }

    /// The target answered (any answer that is not a transient failure).
    pub fn succeeded(&self, target: &str) {
        if let Ok(mut targets) = self.inner.targets.lock()
            && let Some(breaker) = targets.get_mut(target)
        {
            if breaker.opened_at.is_some() {
                tracing::info!(target, "circuit closed: the target answers again");
            }
            breaker.failures = 0;
            breaker.opened_at = None;
            breaker.probing = false;
        }
    }

    /// The target failed transiently (no connection, a time-out, 408, 429 or 5xx).
    pub fn failed(&self, target: &str) {
        let Ok(mut targets) = self.inner.targets.lock() else {
            return;
        };
        let breaker = targets.entry(target.to_owned()).or_insert(Breaker {
            failures: 0,
            opened_at: None,
            probing: false,
            times_opened: 0,
        });
        breaker.failures = breaker.failures.saturating_add(1);
        let probe_failed = breaker.probing;
        breaker.probing = false;
        if probe_failed || breaker.failures >= self.inner.failures {
            if breaker.opened_at.is_none() || probe_failed {
                breaker.times_opened += 1;
                tracing::warn!(
                    target,
                    failures = breaker.failures,
                    "circuit open: calls to the target fail at once for {:?}",
                    self.inner.open_for
                );
            }
            breaker.opened_at = Some(Instant::now());
        }
    }

    /// Each known target's state.
    pub fn states(&self) -> Vec<(String, BreakerState)> {
        let Ok(targets) = self.inner.targets.lock() else {
            return Vec::new();
        };
        targets
            .iter()
            .map(|(target, breaker)| (target.clone(), breaker.state(self.inner.open_for)))
            .collect()
    }

    /// What readiness shows: each target's state and failures in a row.
    pub fn details(&self) -> Value {
        let Ok(targets) = self.inner.targets.lock() else {
            return json!({});
        };
        let shown: serde_json::Map<String, Value> = targets
            .iter()
            .map(|(target, breaker)| {
                (
                    target.clone(),
                    json!({
                        "state": breaker.state(self.inner.open_for).as_str(),
                        "failuresInARow": breaker.failures,
                        "timesOpened": breaker.times_opened,
                    }),
                )
            })
            .collect();
        Value::Object(shown)
    }

    /// Whether any breaker is not closed.
    pub fn degraded(&self) -> bool {
        self.states()
            .iter()
            .any(|(_, state)| *state != BreakerState::Closed)
    }
}

/// A call's target as its breaker knows it: `scheme://host:port`.
pub fn target_of(url: &url::Url) -> String {
    format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_and_a_probe_closes_it() {
        let breakers = Breakers::new(3, Duration::ZERO);
        let target = "http://peer:80";
        breakers.failed(target);
        breakers.failed(target);
        breakers.succeeded(target);
        breakers.failed(target);
        breakers.failed(target);
        assert_eq!(breakers.states()[0].1, BreakerState::Closed);
        breakers.failed(target);
        // Open for zero: half-open at once, one probe at a time.
        assert_eq!(breakers.states()[0].1, BreakerState::HalfOpen);
        assert_eq!(breakers.admit(target), Admission::Go);
        assert!(matches!(breakers.admit(target), Admission::Refused { .. }));
        breakers.succeeded(target);
        assert_eq!(breakers.states()[0].1, BreakerState::Closed);
        assert!(!breakers.degraded());
    }

    #[test]
    fn an_open_breaker_refuses_until_its_time_and_a_failed_probe_reopens_it() {
        let breakers = Breakers::new(1, Duration::from_secs(3600));
        let target = "https://peer:443";
        breakers.failed(target);
        match breakers.admit(target) {
            Admission::Refused { retry_in } => assert!(retry_in > Duration::from_secs(3500)),
            Admission::Go => panic!("an open breaker let a call through"),
        }
        assert!(breakers.degraded());
        assert_eq!(breakers.details()[target]["state"], "open");
    }

    #[test]
    fn targets_are_origins() {
        let url = url::Url::parse("https://catalog.example/v2/products/A?x=1").unwrap();
        assert_eq!(target_of(&url), "https://catalog.example:443");
    }
}
