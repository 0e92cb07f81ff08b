//! A message: one event for one subscription, with every attempt to deliver it. Its id is
//! the `webhook-id` the endpoint sees, the same on every attempt, and derived from the
//! subscription and the event, so that an event handled twice is one message.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;

/// Attempts kept with a message (the oldest are dropped past it).
pub const MAX_ATTEMPTS_KEPT: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Waiting for its next attempt, or being sent.
    Pending,
    Delivered,
    /// Its last attempt failed (or its endpoint was disabled): sent again only on request.
    Failed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// When it was made (Unix ms).
    pub at: i64,
    /// The endpoint's status code, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// The start of the answer's body, or why there was none.
    pub excerpt: String,
    pub succeeded: bool,
    /// `scheduled`, or `manual` for one asked for by retry or recover.
    pub trigger: String,
}

/// A message as stored (container `messages`, partition = id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The CloudEvent, the body of every attempt.
    pub event: Value,
    pub status: MessageStatus,
    /// When it is next due (Unix ms); while being sent, when its sender's hold ends.
    pub next_attempt_at: i64,
    /// Attempts in the current round (a manual retry starts a new round).
    pub round_attempts: u32,
    pub attempts: Vec<Attempt>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Whether the next attempt was asked for by hand.
    #[serde(default)]
    pub manual: bool,
}

/// The `webhook-id` of `event_id` for `subscription_id`.
pub fn message_id(subscription_id: &str, event_id: &str) -> String {
    let digest = sha2::Sha256::digest(format!("{subscription_id}\n{event_id}").as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

/// True for the ids [`message_id`] makes.
pub fn is_message_id(text: &str) -> bool {
    text.strip_prefix("msg_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Message {
    pub fn new(
        subscription_id: &str,
        event_id: &str,
        event_type: &str,
        event: Value,
        now: i64,
    ) -> Self {
        Self {
            id: message_id(subscription_id, event_id),
            subscription_id: subscription_id.to_owned(),
            event_id: event_id.to_owned(),
            event_type: event_type.to_owned(),
            event,
            status: MessageStatus::Pending,
            next_attempt_at: now,
            round_attempts: 0,
            attempts: Vec::new(),
            created_at: now,
            updated_at: now,
            manual: false,
        }
    }

    /// Records an attempt, keeping the last [`MAX_ATTEMPTS_KEPT`].
    pub fn record(&mut self, attempt: Attempt) {
        self.round_attempts += 1;
        self.updated_at = attempt.at;
        self.attempts.push(attempt);
        if self.attempts.len() > MAX_ATTEMPTS_KEPT {
            let excess = self.attempts.len() - MAX_ATTEMPTS_KEPT;
            self.attempts.drain(..excess);
        }
    }

    /// Asked to be sent again by hand: a new round, due at once.
    pub fn resend(&mut self, now: i64) {
        self.status = MessageStatus::Pending;
        self.round_attempts = 0;
        self.next_attempt_at = now;
        self.updated_at = now;
        self.manual = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_stable_per_subscription_and_event() {
        let id = message_id("sub-1", "event-1");
        assert_eq!(id, message_id("sub-1", "event-1"));
        assert_ne!(id, message_id("sub-2", "event-1"));
        assert!(is_message_id(&id));
        assert!(!is_message_id("msg_../../etc"));
    }

    #[test]
    fn only_the_last_attempts_are_kept() {
        let mut message = Message::new("s", "e", "t", Value::Null, 0);
        for at in 0..60 {
            message.record(Attempt {
                at,
                status_code: Some(500),
                latency_ms: 1,
                excerpt: String::new(),
                succeeded: false,
                trigger: "scheduled".into(),
            });
        }
        assert_eq!(message.attempts.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(message.attempts[0].at, 10);
        assert_eq!(message.round_attempts, 60);
        message.resend(100);
        assert_eq!(
            (message.round_attempts, message.status),
            (0, MessageStatus::Pending)
        );
    }
}
