//! Notifications against its real store: what is kept and for how long.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use common::clock::now_ms;
use common::config::Settings;
use notifications::deliveries::{MESSAGES, kind_of};
use notifications::domain::message::{Message, MessageStatus};
use notifications::mail::EMAILS;
use serde_json::{Value, json};

const DAY: i64 = 24 * 3600 * 1000;

fn message(id: &str, status: MessageStatus, updated_at: i64) -> Value {
    let mut message = Message::new(
        id,
        "event",
        "orders.order.confirmed.v1",
        Value::Null,
        updated_at,
    );
    message.status = status;
    let mut body = serde_json::to_value(&message).unwrap();
    body["kind"] = json!(kind_of(status));
    body
}

#[tokio::test]
async fn finished_messages_and_mail_records_are_purged_after_the_retention_and_pending_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::defaults();
    settings.data_dir = dir.path().to_owned();
    let store = common::runtime::adapters::open_store(
        &settings,
        "notifications",
        &notifications::startup::DESCRIPTOR.all_containers(),
    )
    .await
    .unwrap();
    let now = now_ms();
    let old = now - 31 * DAY;
    let recent = now - 29 * DAY;
    let documents = [
        ("old-delivered", message("a", MessageStatus::Delivered, old)),
        ("old-failed", message("b", MessageStatus::Failed, old)),
        ("old-pending", message("c", MessageStatus::Pending, old)),
        (
            "recent-delivered",
            message("d", MessageStatus::Delivered, recent),
        ),
    ];
    for (id, body) in &documents {
        store.create(MESSAGES, id, id, body.clone()).await.unwrap();
    }
    store
        .create(
            EMAILS,
            "old-mail",
            "old-mail",
            json!({"kind": "email-sent", "createdAt": old}),
        )
        .await
        .unwrap();
    store
        .create(
            EMAILS,
            "old-unsent",
            "old-unsent",
            json!({"kind": "email-pending", "createdAt": old}),
        )
        .await
        .unwrap();

    let purged = notifications::retention::purge_expired(&store, now, 30)
        .await
        .unwrap();
    assert_eq!(purged, 3);
    for (id, kept) in [
        ("old-delivered", false),
        ("old-failed", false),
        ("old-pending", true),
        ("recent-delivered", true),
    ] {
        assert_eq!(
            store.read(MESSAGES, id, id).await.unwrap().is_some(),
            kept,
            "{id}"
        );
    }
    assert!(
        store
            .read(EMAILS, "old-mail", "old-mail")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .read(EMAILS, "old-unsent", "old-unsent")
            .await
            .unwrap()
            .is_some()
    );
}
