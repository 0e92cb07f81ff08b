//! E-mail about orders: confirmed, rejected and cancelled orders with a contact address are
//! mailed from templates an operator can replace. Each (event, recipient) is recorded in
//! container `emails` before it is sent and marked sent after, so that a repeated event
//! sends nothing new and one interrupted mid-send (crash, failing server) is sent when the
//! bus delivers the event again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::clock::now_ms;
use common::store::{SharedStore, StoreError};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;

use crate::settings::{EmailKind, EmailSettings, SmtpSecurity};

pub const EMAILS: &str = "emails";

/// The mails there are: the event type each answers, and its template name.
pub const MAILS: &[(&str, &str)] = &[
    ("orders.order.confirmed.v1", "order-confirmed"),
    ("orders.order.rejected.v1", "order-rejected"),
    ("orders.order.cancelled.v1", "order-cancelled"),
];

/// The parts of each mail's template.
const PARTS: &[&str] = &["subject", "txt", "html"];

/// The built-in templates, by file name.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "order-confirmed.subject",
        include_str!("../templates/order-confirmed.subject"),
    ),
    (
        "order-confirmed.txt",
        include_str!("../templates/order-confirmed.txt"),
    ),
    (
        "order-confirmed.html",
        include_str!("../templates/order-confirmed.html"),
    ),
    (
        "order-rejected.subject",
        include_str!("../templates/order-rejected.subject"),
    ),
    (
        "order-rejected.txt",
        include_str!("../templates/order-rejected.txt"),
    ),
    (
        "order-rejected.html",
        include_str!("../templates/order-rejected.html"),
    ),
    (
        "order-cancelled.subject",
        include_str!("../templates/order-cancelled.subject"),
    ),
    (
        "order-cancelled.txt",
        include_str!("../templates/order-cancelled.txt"),
    ),
    (
        "order-cancelled.html",
        include_str!("../templates/order-cancelled.html"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("template {name}: {reason}")]
    Template { name: String, reason: String },
    #[error("the message could not be built: {0}")]
    Build(String),
    #[error("the mail could not be sent: {0}")]
    Send(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The templates, loaded and checked (each rendered once with sample values).
pub struct Templates {
    environment: minijinja::Environment<'static>,
}

impl Templates {
    /// The built-in templates, each replaced by the file of the same name in `folder` when
    /// there is one. Every template is rendered once with sample values, so that a broken
    /// one stops the service at start, named.
    pub fn load(folder: Option<&Path>) -> Result<Self, MailError> {
        let mut environment = minijinja::Environment::new();
        environment.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        for (name, built_in) in BUILT_IN {
            let source = match folder.map(|f| f.join(name)) {
                Some(path) if path.exists() => {
                    std::fs::read_to_string(&path).map_err(|e| MailError::Template {
                        name: path.display().to_string(),
                        reason: e.to_string(),
                    })?
                }
                _ => (*built_in).to_owned(),
            };
            environment
                .add_template_owned((*name).to_owned(), source)
                .map_err(|e| MailError::Template {
                    name: (*name).to_owned(),
                    reason: e.to_string(),
                })?;
        }
        let templates = Self { environment };
        let sample = json!({"orderId": "sample", "customerId": "c", "reason": "r",
            "shortages": [{"sku": "S", "requested": 2, "available": 1}]});
        for (_, mail) in MAILS {
            templates.render(mail, &sample)?;
        }
        Ok(templates)
    }

    /// Subject, plain text and HTML of `mail` for `context`.
    pub fn render(
        &self,
        mail: &str,
        context: &Value,
    ) -> Result<(String, String, String), MailError> {
        let mut rendered = Vec::with_capacity(PARTS.len());
        for part in PARTS {
            let name = format!("{mail}.{part}");
            let text = self
                .environment
                .get_template(&name)
                .and_then(|template| template.render(context))
                .map_err(|e| MailError::Template {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            rendered.push(text);
        }
        let html = rendered.pop().unwrap_or_default();
        let text = rendered.pop().unwrap_or_default();
        let subject = rendered.pop().unwrap_or_default();
        // A subject is one line.
        let subject = subject.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok((subject, text, html))
    }
}

enum Transport {
    Files(AsyncFileTransport<Tokio1Executor>),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Off,
}

/// What is recorded of a mail.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MailRecord {
    kind: String,
    event_id: String,
    to: String,
    mail: String,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sent_at: Option<i64>,
}

const PENDING: &str = "email-pending";
pub const SENT: &str = "email-sent";

pub struct Mailer {
    store: SharedStore,
    transport: Transport,
    /// Loaded at start when an operator's folder replaces templates (so that a broken one
    /// stops the service, named); the built-in ones, tested here, at the first mail.
    templates: std::sync::OnceLock<Templates>,
    from: Mailbox,
}

/// Where `.eml` files go: `email.folder`, else `<data_dir>/notifications-mail`.
pub fn mail_folder(data_dir: &Path, settings: &EmailSettings) -> PathBuf {
    if settings.folder.is_empty() {
        data_dir.join("notifications-mail")
    } else {
        PathBuf::from(&settings.folder)
    }
}

impl Mailer {
    pub fn new(
        store: SharedStore,
        settings: &EmailSettings,
        data_dir: &Path,
    ) -> anyhow::Result<Self> {
        let templates_folder =
            (!settings.templates.is_empty()).then(|| PathBuf::from(&settings.templates));
        let templates = std::sync::OnceLock::new();
        if let Some(folder) = &templates_folder {
            let _ = templates.set(Templates::load(Some(folder))?);
        }
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("email.from: {e}"))?;
        let transport = match settings.kind {
            EmailKind::Off => Transport::Off,
            EmailKind::Files => {
                let folder = mail_folder(data_dir, settings);
                common::private_files::create_private_dir(&folder)?;
                Transport::Files(AsyncFileTransport::new(folder))
            }
            EmailKind::Smtp => {
                let smtp = &settings.smtp;
                let builder = match smtp.security {
                    SmtpSecurity::Starttls => {
                        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)?
                    }
                    SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&smtp.host)?,
                    SmtpSecurity::None => {
                        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
                    }
                };
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(Duration::from_millis(smtp.timeout_ms)));
                if let (false, Some(password)) = (smtp.username.is_empty(), &smtp.password) {
                    builder = builder.credentials(Credentials::new(
                        smtp.username.clone(),
                        password.expose_secret().to_owned(),
                    ));
                }
                Transport::Smtp(builder.build())
            }
        };
        Ok(Self {
            store,
            transport,
            templates,
            from,
        })
    }

    /// Mails `recipient` about `event` (of `event_type`, with `data`), once.
    #[tracing::instrument(name = "email.send", skip_all, fields(event = %event_id, mail))]
    pub async fn send_once(
        &self,
        event_id: &str,
        event_type: &str,
        recipient: &str,
        data: &Value,
    ) -> Result<(), MailError> {
        let Some((_, mail)) = MAILS.iter().find(|(t, _)| *t == event_type) else {
            return Ok(());
        };
        if matches!(self.transport, Transport::Off) {
            return Ok(());
        }
        tracing::Span::current().record("mail", *mail);
        let id = mail_id(event_id, recipient);
        let record = MailRecord {
            kind: PENDING.to_owned(),
            event_id: event_id.to_owned(),
            to: recipient.to_owned(),
            mail: (*mail).to_owned(),
            created_at: now_ms(),
            sent_at: None,
        };
        let body =
            serde_json::to_value(&record).map_err(|e| StoreError::Serialization(e.into()))?;
        let etag = match self.store.create(EMAILS, &id, &id, body).await {
            Ok(document) => document.etag,
            Err(StoreError::Conflict) => match self.store.read(EMAILS, &id, &id).await? {
                Some(document) if document.body["kind"] == SENT => return Ok(()),
                // Recorded, not known to be sent (a crash or a failure mid-send): send.
                Some(document) => document.etag,
                None => return Err(StoreError::NotFound.into()),
            },
            Err(other) => return Err(other.into()),
        };
        let to: Mailbox = recipient
            .parse()
            .map_err(|e| MailError::Build(format!("recipient: {e}")))?;
        let templates = match self.templates.get() {
            Some(templates) => templates,
            None => {
                let built_in = Templates::load(None)?;
                self.templates.get_or_init(|| built_in)
            }
        };
        let (subject, text, html) = templates.render(mail, data)?;
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            // The same on every send of this mail: a receiving system can tell a repeat.
            .message_id(Some(format!("<{id}@notifications>")))
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| MailError::Build(e.to_string()))?;
        match &self.transport {
            Transport::Files(files) => files
                .send(message)
                .await
                .map(drop)
                .map_err(|e| MailError::Send(e.to_string()))?,
            Transport::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(drop)
                .map_err(|e| MailError::Send(e.to_string()))?,
            Transport::Off => {}
        }
        let sent = MailRecord {
            kind: SENT.to_owned(),
            sent_at: Some(now_ms()),
            ..record
        };
        let body = serde_json::to_value(&sent).map_err(|e| StoreError::Serialization(e.into()))?;
        match self
            .store
            .replace(EMAILS, &id, &id, body, Some(&etag))
            .await
        {
            Ok(_) | Err(StoreError::PreconditionFailed) => {}
            Err(other) => return Err(other.into()),
        }
        tracing::info!("e-mail sent");
        Ok(())
    }
}

/// The record id of the mail about `event_id` to `recipient`.
fn mail_id(event_id: &str, recipient: &str) -> String {
    let digest =
        sha2::Sha256::digest(format!("{event_id}\n{}", recipient.to_lowercase()).as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("mail_{hex}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn built_in_templates_render_and_html_is_escaped() {
        let templates = Templates::load(None).unwrap();
        let (subject, text, html) = templates
            .render(
                "order-rejected",
                &json!({"orderId": "<o-1>", "reason": "insufficient stock",
                "shortages": [{"sku": "A", "requested": 3, "available": 1}]}),
            )
            .unwrap();
        assert_eq!(subject, "Your order <o-1> could not be accepted");
        assert!(text.contains("A: 3 asked for, 1 available"), "{text}");
        assert!(html.contains("&lt;o-1&gt;"), "{html}");
    }

    #[test]
    fn an_operators_template_replaces_the_built_in_one_and_a_broken_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("order-confirmed.subject"),
            "Bestellung {{ orderId }} bestätigt",
        )
        .unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        let (subject, _, _) = templates
            .render("order-confirmed", &json!({"orderId": "7"}))
            .unwrap();
        assert_eq!(subject, "Bestellung 7 bestätigt");
        std::fs::write(dir.path().join("order-cancelled.html"), "{% if %}").unwrap();
        let error = Templates::load(Some(dir.path())).err().unwrap().to_string();
        assert!(error.contains("order-cancelled.html"), "{error}");
    }
}
