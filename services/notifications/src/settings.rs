//! The notifications service's own settings (`config/notifications.toml`,
//! `NOTIFICATIONS__*`), beside the shared sections.

use common::config::ConfigError;
use secrecy::SecretString;
use serde::Deserialize;

/// Their defaults, with the reason for each.
pub const DEFAULTS: &str = include_str!("defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct NotificationsSettings {
    pub webhooks: WebhookSettings,
    pub email: EmailSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebhookSettings {
    pub allow_private_targets: bool,
    pub timeout_ms: u64,
    pub retry_schedule_ms: Vec<u64>,
    pub jitter_percent: u64,
    pub retry_after_max_ms: u64,
    pub disable_after_failing_ms: u64,
    pub response_excerpt_bytes: usize,
    pub max_in_flight_per_endpoint: usize,
    pub queue_per_endpoint: usize,
    pub poll_interval_ms: u64,
    pub retention_days: u64,
}

impl WebhookSettings {
    /// How long a message being sent is held by its sender: a sender that died lets go
    /// when this has passed, and the message is sent again.
    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.timeout_ms.saturating_mul(2).saturating_add(1_000)).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailKind {
    Files,
    Smtp,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmailSettings {
    pub kind: EmailKind,
    pub folder: String,
    pub from: String,
    pub templates: String,
    pub smtp: SmtpSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: String,
    #[serde(default)]
    pub password: Option<SecretString>,
    pub timeout_ms: u64,
}

impl NotificationsSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let webhooks = &self.webhooks;
        if webhooks.retry_schedule_ms.is_empty() || webhooks.retry_schedule_ms.len() > 50 {
            return Err(ConfigError::key(
                "webhooks.retry_schedule_ms",
                "must list 1 to 50 pauses (the first is before the first attempt)",
            ));
        }
        if webhooks.jitter_percent > 100 {
            return Err(ConfigError::key(
                "webhooks.jitter_percent",
                "must be 0 to 100",
            ));
        }
        for (key, value) in [
            ("webhooks.timeout_ms", webhooks.timeout_ms),
            ("webhooks.poll_interval_ms", webhooks.poll_interval_ms),
            ("webhooks.retention_days", webhooks.retention_days),
            (
                "webhooks.disable_after_failing_ms",
                webhooks.disable_after_failing_ms,
            ),
            (
                "webhooks.max_in_flight_per_endpoint",
                webhooks.max_in_flight_per_endpoint as u64,
            ),
            (
                "webhooks.queue_per_endpoint",
                webhooks.queue_per_endpoint as u64,
            ),
            ("email.smtp.timeout_ms", self.email.smtp.timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::key(key, "must be greater than 0"));
            }
        }
        if self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::key(
                "email.from",
                "must be a mailbox such as `Shop <no-reply@example.com>`",
            ));
        }
        if self.email.kind == EmailKind::Smtp {
            let smtp = &self.email.smtp;
            if smtp.host.trim().is_empty() {
                return Err(ConfigError::key("email.smtp.host", "must name the server"));
            }
            if !smtp.username.is_empty() && smtp.password.is_none() {
                return Err(ConfigError::key(
                    "email.smtp.password",
                    "must be set (NOTIFICATIONS__EMAIL__SMTP__PASSWORD) when email.smtp.username is",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::startup::NotificationsService;

    fn load_file(contents: &str) -> Result<(), String> {
        common::testing::load_config_file::<NotificationsService>(contents)
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        assert!(load_file("").is_ok());
        let error = load_file("[email.smtp]\npassword = \"leaked\"\n").unwrap_err();
        assert!(
            error.contains("email.smtp.password") && error.contains("environment"),
            "{error}"
        );
        let error = load_file("[webhooks]\nretry_schedule_ms = []\n").unwrap_err();
        assert!(error.contains("webhooks.retry_schedule_ms"), "{error}");
        let error = load_file("[email]\nfrom = \"not an address\"\n").unwrap_err();
        assert!(error.contains("email.from"), "{error}");
        let error =
            load_file("[email]\nkind = \"smtp\"\n[email.smtp]\nusername = \"u\"\n").unwrap_err();
        assert!(error.contains("email.smtp.password"), "{error}");
        let error = load_file("[webhooks]\ntimeout = 3\n").unwrap_err();
        assert!(error.contains("webhooks.timeout"), "{error}");
    }
}
