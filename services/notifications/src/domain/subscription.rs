//! A webhook subscription: where events go, which ones, signed with which secrets, and
//! whether its endpoint is taking them.

use serde::{Deserialize, Serialize};

use super::signature::new_secret;

/// How long a rotated-out secret keeps signing beside the new one.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionStatus {
    Active,
    /// Paused by hand: messages are kept for it and sent once resumed.
    Paused,
    /// Disabled after failing for too long: messages for it fail until it is resumed.
    Disabled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    pub value: String,
    /// When it stops signing (a rotated-out secret); `None` for the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// A subscription as stored (container `subscriptions`, partition = id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    /// Deliveries per second at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// Delivered one at a time, so that the events about one subject arrive in the order they
    /// happened; a message waiting for a retry holds back the rest.
    #[serde(default)]
    pub ordered: bool,
    pub status: SubscriptionStatus,
    /// Why it was disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Since when every attempt failed (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<i64>,
    /// The current secret first.
    pub secrets: Vec<Secret>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Subscription {
    /// The secrets that sign at `now`.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|at| at > now))
            .map(|s| s.value.as_str())
            .collect()
    }

    /// A new current secret; the old one signs beside it for [`ROTATION_OVERLAP_MS`], and
    /// secrets past their time are dropped. Returns the new one.
    pub fn rotate_secret(&mut self, now: i64) -> String {
        let secret = new_secret();
        for old in &mut self.secrets {
            if old.expires_at.is_none() {
                old.expires_at = Some(now + ROTATION_OVERLAP_MS);
            }
        }
        self.secrets
            .retain(|s| s.expires_at.is_none_or(|at| at > now));
        self.secrets.insert(
            0,
            Secret {
                value: secret.clone(),
                expires_at: None,
            },
        );
        self.updated_at = now;
        secret
    }

    pub fn current_secret(&self) -> Option<&str> {
        self.secrets.first().map(|s| s.value.as_str())
    }

    /// Whether it takes deliveries now.
    pub fn is_active(&self) -> bool {
        self.status == SubscriptionStatus::Active
    }
}

/// What follows an attempt for the endpoint's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Unchanged,
    /// It started failing at this time.
    FailingSince(i64),
    /// It answers again.
    Recovered,
    /// It failed for longer than allowed: disable it.
    Disable {
        failing_since: i64,
    },
}

/// The endpoint's health after an attempt that `succeeded` (or not) at `now`, given since
/// when it has been failing.
pub fn health_after(
    failing_since: Option<i64>,
    succeeded: bool,
    now: i64,
    disable_after_ms: i64,
) -> Health {
    match (failing_since, succeeded) {
        (None, true) => Health::Unchanged,
        (Some(_), true) => Health::Recovered,
        (None, false) => Health::FailingSince(now),
        (Some(since), false) if now - since >= disable_after_ms => Health::Disable {
            failing_since: since,
        },
        (Some(_), false) => Health::Unchanged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscription() -> Subscription {
        Subscription {
            id: "s".into(),
            url: "https://example.com/hook".into(),
            event_types: vec!["orders.*".into()],
            description: String::new(),
            rate_limit: None,
            ordered: false,
            status: SubscriptionStatus::Active,
            disabled_reason: None,
            failing_since: None,
            secrets: vec![Secret {
                value: new_secret(),
                expires_at: None,
            }],
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_for_a_day() {
        let mut s = subscription();
        let old = s.secrets[0].value.clone();
        let new = s.rotate_secret(1_000);
        assert_eq!(s.current_secret(), Some(new.as_str()));
        assert_eq!(s.signing_secrets(2_000), vec![new.as_str(), old.as_str()]);
        assert_eq!(
            s.signing_secrets(1_000 + ROTATION_OVERLAP_MS),
            vec![new.as_str()]
        );
        let newest = s.rotate_secret(1_000 + ROTATION_OVERLAP_MS + 1);
        assert_eq!(s.secrets.len(), 2, "the expired secret is dropped");
        assert_eq!(s.current_secret(), Some(newest.as_str()));
    }

    #[test]
    fn an_endpoint_is_disabled_after_failing_for_long_enough() {
        assert_eq!(health_after(None, true, 5, 10), Health::Unchanged);
        assert_eq!(health_after(None, false, 5, 10), Health::FailingSince(5));
        assert_eq!(health_after(Some(5), false, 10, 10), Health::Unchanged);
        assert_eq!(
            health_after(Some(5), false, 15, 10),
            Health::Disable { failing_since: 5 }
        );
        assert_eq!(health_after(Some(5), true, 15, 10), Health::Recovered);
    }
}
