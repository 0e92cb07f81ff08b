//! The document store contract. Every adapter runs every test here: the embedded SQLite
//! store, the Cosmos adapter against the SDK's in-memory emulator, and, when
//! `COSMOS_ENDPOINT` (and `COSMOS_KEY`) are set, the Cosmos adapter against that account.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::store::embedded::{Durability, EmbeddedStore};
use common::store::{BatchOp, Checkpoint, Comparison, Query, QueryScope, SharedStore, StoreError};
use serde_json::json;

pub(crate) const THINGS: &str = "things";
const OTHER: &str = "other";

/// A store under test, with whatever must outlive it.
pub(crate) struct Subject {
    pub(crate) store: SharedStore,
    _keep: Box<dyn std::any::Any + Send>,
}

pub(crate) fn embedded() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("contract.db"), Durability::Normal).unwrap();
    Subject {
        store: Arc::new(store),
        _keep: Box::new(dir),
    }
}

pub(crate) async fn cosmos_emulator() -> Subject {
    cosmos_emulator_with(None).await
}

/// The Cosmos adapter on the in-memory emulator; with `throttled`, containers have that
/// many RU/s and the emulator answers 429 past them, and the adapter's retry budget is the
/// settings'.
async fn cosmos_emulator_with(throttled: Option<(u64, common::config::CosmosSettings)>) -> Subject {
    cosmos_emulator_and_store(throttled).await.0
}

/// As [`cosmos_emulator_with`], with the emulator's store (for control-plane operations
/// such as a partition split).
async fn cosmos_emulator_and_store(
    throttled: Option<(u64, common::config::CosmosSettings)>,
) -> (
    Subject,
    Arc<azure_data_cosmos_driver::in_memory_emulator::EmulatorStore>,
) {
    use azure_data_cosmos::options::Region;
    use azure_data_cosmos::{
        AccountEndpoint, AccountReference, CosmosClientBuilder, CosmosRuntimeBuilder,
        RoutingStrategy,
    };
    use azure_data_cosmos_driver::in_memory_emulator::{
        ConsistencyLevel, InMemoryEmulatorHttpClient, VirtualAccountConfig, VirtualRegion,
    };

    const GATEWAY: &str = "https://eastus.emulator.local";
    const DATABASE: &str = "contract";
    let config = VirtualAccountConfig::new(vec![VirtualRegion::new(
        "East US",
        azure_core::http::Url::parse(GATEWAY).unwrap(),
    )])
    .unwrap()
    .with_consistency(ConsistencyLevel::Session)
    .with_throttling_enabled(throttled.is_some());
    let emulator = Arc::new(InMemoryEmulatorHttpClient::new(config));
    let emulated = emulator.store();
    emulated.create_database(DATABASE);
    for container in [THINGS, OTHER, common::runtime::LEASES] {
        let definition =
            serde_json::from_value(json!({"paths": ["/pk"], "kind": "Hash", "version": 2}))
                .unwrap();
        match &throttled {
            Some((ru, _)) => emulated.create_container_with_config(
                DATABASE,
                container,
                definition,
                azure_data_cosmos_driver::in_memory_emulator::ContainerConfig::new()
                    .with_throughput(*ru),
            ),
            None => emulated.create_container(DATABASE, container, definition),
        }
    }
    let account = AccountReference::with_authentication_key(
        GATEWAY.parse::<AccountEndpoint>().unwrap(),
        azure_core::credentials::Secret::new("dGVzdGtleQ=="),
    );
    let mut builder = CosmosClientBuilder::new();
    if let Some((_, settings)) = &throttled {
        builder = builder
            .with_default_operation_options(common::store::cosmos::throttle_budget(settings));
    }
    let client = builder
        .with_runtime(
            CosmosRuntimeBuilder::from(emulator.runtime_builder())
                .build()
                .await
                .unwrap(),
        )
        .build(account, RoutingStrategy::ProximityTo(Region::EAST_US))
        .await
        .unwrap();
    let store = common::store::cosmos::CosmosStore::open(
        &client,
        DATABASE,
        &[THINGS, OTHER, common::runtime::LEASES],
    )
    .await
    .unwrap();
    (
        Subject {
            store: Arc::new(store),
            _keep: Box::new(emulator),
        },
        emulated,
    )
}

/// A real account (or Microsoft's emulator); the database and both containers (partition
/// key `/pk`) must exist. Each test uses fresh ids, so runs do not disturb each other.
async fn cosmos_live() -> Option<Subject> {
    let endpoint = std::env::var("COSMOS_ENDPOINT").ok()?;
    let key = std::env::var("COSMOS_KEY").ok();
    let mut settings = common::config::Settings::defaults().store.cosmos;
    settings.endpoint = endpoint;
    settings.database = std::env::var("COSMOS_DATABASE").unwrap_or_else(|_| "contract".into());
    settings.key = key.map(Into::into);
    if settings.key.is_none() {
        settings.credential = common::config::CosmosCredentialKind::DeveloperTools;
    }
    let store = common::store::cosmos::connect(&settings, &[THINGS, OTHER])
        .await
        .unwrap();
    Some(Subject {
        store: Arc::new(store),
        _keep: Box::new(()),
    })
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

macro_rules! contract {
    ($($name:ident),+ $(,)?) => {
        mod embedded_adapter {
            $(#[tokio::test] async fn $name() { super::$name(&super::embedded().store).await; })+
        }
        mod cosmos_adapter_on_in_memory_emulator {
            $(#[tokio::test] async fn $name() { super::$name(&super::cosmos_emulator().await.store).await; })+
        }
        mod cosmos_adapter_live {
            // Run with `cargo test -p common --test it -- --ignored` and COSMOS_ENDPOINT set.
            $(#[tokio::test] #[ignore = "needs COSMOS_ENDPOINT (a real account or Microsoft's emulator)"]
            async fn $name() {
                let subject = super::cosmos_live().await.expect("COSMOS_ENDPOINT is not set");
                super::$name(&subject.store).await;
            })+
        }
    };
}

contract!(
    create_then_read_round_trips,
    create_twice_conflicts,
    read_of_missing_is_none,
    read_many_answers_in_the_order_asked,
    operations_are_counted_by_kind,
    replace_with_current_etag_succeeds_and_changes_etag,
    replace_with_stale_etag_fails,
    replace_of_missing_is_not_found,
    upsert_creates_and_replaces,
    delete_honours_etag,
    same_id_in_two_partitions_are_two_items,
    containers_are_separate,
    query_in_a_partition_pages_with_continuation,
    query_across_partitions_with_filter_pages_in_id_order,
    query_filter_keeps_json_types_apart,
    bad_continuation_is_refused,
    change_feed_resumes_from_checkpoint,
    concurrent_writers_with_etags_lose_no_update,
    find_by_id_looks_in_every_partition,
    batch_applies_every_operation,
    failed_batch_applies_nothing,
    batch_with_stale_etag_applies_nothing,
    expiring_items_vanish_after_their_time_to_live,
    query_ranges_and_field_order_page_with_continuation,
    items_and_batches_over_two_megabytes_are_refused_alike,
    cross_partition_pages_never_skip_an_id_shared_by_two_partitions,
    an_indexed_field_filters_as_any_field_does,
);

async fn an_indexed_field_filters_as_any_field_does(store: &SharedStore) {
    store.index_field("state").await.unwrap();
    store.index_field("state").await.unwrap();
    assert!(store.index_field("state) --").await.is_err());
    let kind = unique("kind");
    let mut expected = Vec::new();
    for n in 0..6 {
        let id = unique(&format!("s{n}"));
        let state = if n % 2 == 0 { "open" } else { "closed" };
        store
            .create(
                THINGS,
                &format!("pk-{n}"),
                &id,
                json!({"kind": kind, "state": state}),
            )
            .await
            .unwrap();
        if n % 2 == 0 {
            expected.push(id);
        }
    }
    expected.sort();
    let query = Query::new(QueryScope::AllPartitions, 2)
        .filter("kind", kind.as_str())
        .filter("state", "open");
    let (ids, _) = collect_pages(store, query).await;
    assert_eq!(ids, expected);
}

async fn create_then_read_round_trips(store: &SharedStore) {
    let id = unique("a");
    let body = json!({"name": "widget", "price": 1250, "tags": ["x"]});
    let created = store.create(THINGS, "p1", &id, body.clone()).await.unwrap();
    assert_eq!(created.body, body);
    assert!(!created.etag.as_str().is_empty());
    let read = store.read(THINGS, "p1", &id).await.unwrap().unwrap();
    assert_eq!(read.body, body);
    assert_eq!(read.id, id);
    assert_eq!(read.partition_key, "p1");
    assert_eq!(read.etag, created.etag);
    // As text, for decoding straight into a model: the same body and version.
    let text = store.read_text(THINGS, "p1", &id).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text.text).unwrap(),
        body
    );
    assert_eq!(text.etag, created.etag);
}

async fn create_twice_conflicts(store: &SharedStore) {
    let id = unique("a");
    store
        .create(THINGS, "p1", &id, json!({"n": 1}))
        .await
        .unwrap();
    let error = store
        .create(THINGS, "p1", &id, json!({"n": 2}))
        .await
        .unwrap_err();
    assert_eq!(error, StoreError::Conflict);
    let read = store.read(THINGS, "p1", &id).await.unwrap().unwrap();
    assert_eq!(read.body, json!({"n": 1}));
}

async fn read_of_missing_is_none(store: &SharedStore) {
    assert_eq!(
        store.read(THINGS, "p1", &unique("missing")).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .read_text(THINGS, "p1", &unique("missing"))
            .await
            .unwrap(),
        None
    );
}

/// `common::usage` counts for cost estimates; other tests run at once, hence "at least".
async fn operations_are_counted_by_kind(store: &SharedStore) {
    let id = unique("counted");
    let before = common::usage::usage();
    store
        .create(THINGS, "p1", &id, json!({"n": 1}))
        .await
        .unwrap();
    store.read(THINGS, "p1", &id).await.unwrap();
    store
        .read_many(
            THINGS,
            &[("p1".to_owned(), id.clone()), ("p1".to_owned(), id)],
        )
        .await
        .unwrap();
    let used = common::usage::usage() - before;
    assert!(used.writes >= 1 && used.written_bytes >= 7, "{used:?}");
    assert!(used.point_reads >= 3, "{used:?}");
}

async fn read_many_answers_in_the_order_asked(store: &SharedStore) {
    let (a, b) = (unique("a"), unique("b"));
    let created_a = store
        .create(THINGS, "p1", &a, json!({"n": 1}))
        .await
        .unwrap();
    let created_b = store
        .create(THINGS, "p2", &b, json!({"n": 2}))
        .await
        .unwrap();
    let keys = [
        ("p2".to_owned(), b.clone()),
        ("p1".to_owned(), unique("missing")),
        ("p2".to_owned(), a.clone()),
        ("p1".to_owned(), a.clone()),
    ];
    let found = store.read_many(THINGS, &keys).await.unwrap();
    let summary: Vec<Option<(String, serde_json::Value, common::store::ETag)>> = found
        .into_iter()
        .map(|d| d.map(|d| (d.id, d.body, d.etag)))
        .collect();
    assert_eq!(
        summary,
        [
            Some((b, json!({"n": 2}), created_b.etag)),
            None,
            None,
            Some((a, json!({"n": 1}), created_a.etag)),
        ]
    );
    assert_eq!(store.read_many(THINGS, &[]).await.unwrap(), []);
}

async fn replace_with_current_etag_succeeds_and_changes_etag(store: &SharedStore) {
    let id = unique("a");
    let created = store
        .create(THINGS, "p1", &id, json!({"n": 1}))
        .await
        .unwrap();
    let replaced = store
        .replace(THINGS, "p1", &id, json!({"n": 2}), Some(&created.etag))
        .await
        .unwrap();
    assert_ne!(replaced.etag, created.etag);
    let read = store.read(THINGS, "p1", &id).await.unwrap().unwrap();
    assert_eq!(read.body, json!({"n": 2}));
    assert_eq!(read.etag, replaced.etag);
}

async fn replace_with_stale_etag_fails(store: &SharedStore) {
    let id = unique("a");
    let created = store
        .create(THINGS, "p1", &id, json!({"n": 1}))
        .await
        .unwrap();
    store
        .replace(THINGS, "p1", &id, json!({"n": 2}), None)
        .await
        .unwrap();
    let error = store
        .replace(THINGS, "p1", &id, json!({"n": 3}), Some(&created.etag))
        .await
        .unwrap_err();
    assert_eq!(error, StoreError::PreconditionFailed);
    assert_eq!(
        store.read(THINGS, "p1", &id).await.unwrap().unwrap().body,
        json!({"n": 2})
    );
}

async fn replace_of_missing_is_not_found(store: &SharedStore) {
    let error = store
        .replace(THINGS, "p1", &unique("missing"), json!({}), None)
        .await
        .unwrap_err();
    assert_eq!(error, StoreError::NotFound);
}

async fn upsert_creates_and_replaces(store: &SharedStore) {
    let id = unique("a");
    let first = store
        .upsert(THINGS, "p1", &id, json!({"n": 1}))
        .await
        .unwrap();
    let second = store
        .upsert(THINGS, "p1", &id, json!({"n": 2}))
        .await
        .unwrap();
    assert_ne!(first.etag, second.etag);
    assert_eq!(
        store.read(THINGS, "p1", &id).await.unwrap().unwrap().body,
        json!({"n": 2})
    );
}

async fn delete_honours_etag(store: &SharedStore) {
    let id = unique("a");
    let created = store
        .create(THINGS, "p1", &id, json!({"n": 1}))
        .await
        .unwrap();
    let updated = store
        .replace(THINGS, "p1", &id, json!({"n": 2}), None)
        .await
        .unwrap();
    assert_eq!(
        store
            .delete(THINGS, "p1", &id, Some(&created.etag))
            .await
            .unwrap_err(),
        StoreError::PreconditionFailed
    );
    store
        .delete(THINGS, "p1", &id, Some(&updated.etag))
        .await
        .unwrap();
    assert_eq!(store.read(THINGS, "p1", &id).await.unwrap(), None);
    assert_eq!(
        store.delete(THINGS, "p1", &id, None).await.unwrap_err(),
        StoreError::NotFound
    );
}

async fn same_id_in_two_partitions_are_two_items(store: &SharedStore) {
    let id = unique("a");
    store
        .create(THINGS, "p1", &id, json!({"at": 1}))
        .await
        .unwrap();
    store
        .create(THINGS, "p2", &id, json!({"at": 2}))
        .await
        .unwrap();
    assert_eq!(
        store.read(THINGS, "p1", &id).await.unwrap().unwrap().body,
        json!({"at": 1})
    );
    assert_eq!(
        store.read(THINGS, "p2", &id).await.unwrap().unwrap().body,
        json!({"at": 2})
    );
}

async fn containers_are_separate(store: &SharedStore) {
    let id = unique("a");
    store
        .create(THINGS, "p1", &id, json!({"in": "things"}))
        .await
        .unwrap();
    assert_eq!(store.read(OTHER, "p1", &id).await.unwrap(), None);
    store
        .create(OTHER, "p1", &id, json!({"in": "other"}))
        .await
        .unwrap();
    assert_eq!(
        store.read(THINGS, "p1", &id).await.unwrap().unwrap().body,
        json!({"in": "things"})
    );
}

async fn collect_pages(store: &SharedStore, first: Query) -> (Vec<String>, usize) {
    let mut query = first;
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.query(THINGS, &query).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= query.limit as usize);
        ids.extend(page.items.into_iter().map(|d| d.id));
        match page.continuation {
            Some(token) => query = query.continue_from(Some(token)),
            None => break,
        }
        assert!(pages < 100, "pagination does not end");
    }
    (ids, pages)
}

async fn query_in_a_partition_pages_with_continuation(store: &SharedStore) {
    let partition = unique("part");
    let mut expected = BTreeSet::new();
    for n in 0..7 {
        let id = format!("item-{n:02}");
        store
            .create(THINGS, &partition, &id, json!({"n": n}))
            .await
            .unwrap();
        expected.insert(id);
    }
    store
        .create(THINGS, &unique("elsewhere"), "item-99", json!({}))
        .await
        .unwrap();
    let (ids, pages) = collect_pages(store, Query::new(QueryScope::Partition(partition), 3)).await;
    assert_eq!(ids, expected.into_iter().collect::<Vec<_>>());
    assert_eq!(pages, 3);
}

async fn query_across_partitions_with_filter_pages_in_id_order(store: &SharedStore) {
    let category = unique("cat");
    let mut expected = Vec::new();
    for n in 0..5 {
        let id = unique(&format!("x{n}"));
        store
            .create(
                THINGS,
                &format!("pk-{n}"),
                &id,
                json!({"category": category, "n": n}),
            )
            .await
            .unwrap();
        expected.push(id);
        store
            .create(
                THINGS,
                &format!("pk-{n}"),
                &unique("noise"),
                json!({"category": "other"}),
            )
            .await
            .unwrap();
    }
    expected.sort();
    let query = Query::new(QueryScope::AllPartitions, 2).filter("category", category.as_str());
    let (ids, pages) = collect_pages(store, query).await;
    assert_eq!(ids, expected);
    assert_eq!(pages, 3);
}

async fn query_filter_keeps_json_types_apart(store: &SharedStore) {
    let partition = unique("types");
    store
        .create(THINGS, &partition, "number", json!({"v": 1}))
        .await
        .unwrap();
    store
        .create(THINGS, &partition, "string", json!({"v": "1"}))
        .await
        .unwrap();
    let numbers = store
        .query(
            THINGS,
            &Query::new(QueryScope::Partition(partition.clone()), 10).filter("v", 1),
        )
        .await
        .unwrap();
    assert_eq!(
        numbers
            .items
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["number"]
    );
    let strings = store
        .query(
            THINGS,
            &Query::new(QueryScope::Partition(partition), 10).filter("v", "1"),
        )
        .await
        .unwrap();
    assert_eq!(
        strings
            .items
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["string"]
    );
}

async fn bad_continuation_is_refused(store: &SharedStore) {
    let query = Query::new(QueryScope::AllPartitions, 2).continue_from(Some("not a token".into()));
    assert_eq!(
        store.query(THINGS, &query).await.unwrap_err(),
        StoreError::InvalidContinuation
    );
}

/// Polls the feed until `wanted` ids were seen or a deadline passes (an empty batch does
/// not mean the feed is drained).
async fn read_feed_until(
    store: &SharedStore,
    container: &str,
    since: Option<Checkpoint>,
    wanted: &BTreeSet<String>,
) -> (Vec<(String, serde_json::Value)>, Checkpoint) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut checkpoint = since;
    let mut seen = Vec::new();
    loop {
        let batch = store
            .changes(container, checkpoint.as_ref(), 4)
            .await
            .unwrap();
        assert!(batch.documents.len() <= 4, "asked for 4 changes, got more");
        seen.extend(batch.documents.into_iter().map(|d| (d.id, d.body)));
        checkpoint = Some(batch.checkpoint);
        let ids: BTreeSet<String> = seen.iter().map(|(id, _)| id.clone()).collect();
        if wanted.is_subset(&ids) {
            return (seen, checkpoint.unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "change feed did not deliver {wanted:?}, saw {ids:?}"
        );
        tokio::task::yield_now().await;
    }
}

async fn change_feed_resumes_from_checkpoint(store: &SharedStore) {
    let partition = unique("feed");
    let first: BTreeSet<String> = (0..5).map(|n| format!("{partition}-a{n}")).collect();
    for id in &first {
        store
            .create(OTHER, &partition, id, json!({"v": 1}))
            .await
            .unwrap();
    }
    let (seen, checkpoint) = read_feed_until(store, OTHER, None, &first).await;
    assert!(seen.iter().all(|(_, body)| body == &json!({"v": 1})));

    // After the checkpoint: an update and a new item, each seen in its latest version.
    let updated = format!("{partition}-a0");
    store
        .replace(OTHER, &partition, &updated, json!({"v": 2}), None)
        .await
        .unwrap();
    let added = format!("{partition}-b0");
    store
        .create(OTHER, &partition, &added, json!({"v": 1}))
        .await
        .unwrap();
    let wanted: BTreeSet<String> = [updated.clone(), added.clone()].into();
    let (seen, _) = read_feed_until(store, OTHER, Some(checkpoint), &wanted).await;
    let after: BTreeSet<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert!(
        after.is_disjoint(&(&first - &BTreeSet::from([updated.clone()]))),
        "unchanged items came again: {after:?}"
    );
    let latest = seen.iter().rev().find(|(id, _)| id == &updated).unwrap();
    assert_eq!(latest.1, json!({"v": 2}));
}

/// Read-modify-write with ETags from many tasks: every increment lands exactly once.
async fn concurrent_writers_with_etags_lose_no_update(store: &SharedStore) {
    let id = unique("counter");
    store
        .create(THINGS, "counters", &id, json!({"n": 0}))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move {
                for _ in 0..5 {
                    loop {
                        let current = store.read(THINGS, "counters", &id).await.unwrap().unwrap();
                        let n = current.body["n"].as_i64().unwrap();
                        match store
                            .replace(
                                THINGS,
                                "counters",
                                &id,
                                json!({"n": n + 1}),
                                Some(&current.etag),
                            )
                            .await
                        {
                            Ok(_) => break,
                            Err(StoreError::PreconditionFailed) => continue,
                            Err(other) => panic!("unexpected {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let end = store.read(THINGS, "counters", &id).await.unwrap().unwrap();
    assert_eq!(end.body, json!({"n": 40}));
}

async fn batch_applies_every_operation(store: &SharedStore) {
    let pk = unique("batch");
    let existing = store
        .create(THINGS, &pk, "existing", json!({"n": 1}))
        .await
        .unwrap();
    store
        .create(THINGS, &pk, "doomed", json!({}))
        .await
        .unwrap();
    let etags = store
        .batch(
            THINGS,
            &pk,
            vec![
                BatchOp::Create {
                    id: "new".into(),
                    body: json!({"n": 2}),
                },
                BatchOp::Replace {
                    id: "existing".into(),
                    body: json!({"n": 3}),
                    if_match: Some(existing.etag.clone()),
                },
                BatchOp::Upsert {
                    id: "upserted".into(),
                    body: json!({"n": 4}),
                },
                BatchOp::Delete {
                    id: "doomed".into(),
                    if_match: None,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(etags.len(), 4);
    assert!(etags[3].is_none());
    let read = store.read(THINGS, &pk, "existing").await.unwrap().unwrap();
    assert_eq!(read.body, json!({"n": 3}));
    assert_eq!(Some(read.etag), etags[1]);
    assert_eq!(
        store.read(THINGS, &pk, "new").await.unwrap().unwrap().body,
        json!({"n": 2})
    );
    assert_eq!(
        store
            .read(THINGS, &pk, "upserted")
            .await
            .unwrap()
            .unwrap()
            .body,
        json!({"n": 4})
    );
    assert_eq!(store.read(THINGS, &pk, "doomed").await.unwrap(), None);
}

async fn failed_batch_applies_nothing(store: &SharedStore) {
    let pk = unique("batch");
    store
        .create(THINGS, &pk, "taken", json!({"n": 1}))
        .await
        .unwrap();
    let error = store
        .batch(
            THINGS,
            &pk,
            vec![
                BatchOp::Create {
                    id: "fresh".into(),
                    body: json!({}),
                },
                BatchOp::Replace {
                    id: "taken".into(),
                    body: json!({"n": 2}),
                    if_match: None,
                },
                BatchOp::Create {
                    id: "taken".into(),
                    body: json!({"n": 3}),
                },
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(error, StoreError::Conflict);
    assert_eq!(store.read(THINGS, &pk, "fresh").await.unwrap(), None);
    assert_eq!(
        store
            .read(THINGS, &pk, "taken")
            .await
            .unwrap()
            .unwrap()
            .body,
        json!({"n": 1})
    );
}

async fn batch_with_stale_etag_applies_nothing(store: &SharedStore) {
    let pk = unique("batch");
    let first = store
        .create(THINGS, &pk, "a", json!({"n": 1}))
        .await
        .unwrap();
    store
        .replace(THINGS, &pk, "a", json!({"n": 2}), None)
        .await
        .unwrap();
    let error = store
        .batch(
            THINGS,
            &pk,
            vec![
                BatchOp::Create {
                    id: "b".into(),
                    body: json!({}),
                },
                BatchOp::Replace {
                    id: "a".into(),
                    body: json!({"n": 3}),
                    if_match: Some(first.etag),
                },
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(error, StoreError::PreconditionFailed);
    assert_eq!(store.read(THINGS, &pk, "b").await.unwrap(), None);
    let missing = store
        .batch(
            THINGS,
            &pk,
            vec![BatchOp::Delete {
                id: "nope".into(),
                if_match: None,
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(missing, StoreError::NotFound);
}

async fn find_by_id_looks_in_every_partition(store: &SharedStore) {
    let id = unique("findable");
    assert_eq!(store.find_by_id(THINGS, &id).await.unwrap(), None);
    store
        .create(THINGS, &unique("somewhere"), &id, json!({"here": true}))
        .await
        .unwrap();
    let found = store.find_by_id(THINGS, &id).await.unwrap().unwrap();
    assert_eq!(found.body, json!({"here": true}));
    assert_eq!(found.id, id);
    assert!(!found.etag.as_str().is_empty());
    assert_eq!(store.find_by_id(OTHER, &id).await.unwrap(), None);
}

async fn expiring_items_vanish_after_their_time_to_live(store: &SharedStore) {
    let pk = unique("ttl");
    store
        .batch(
            THINGS,
            &pk,
            vec![
                BatchOp::CreateExpiring {
                    id: "brief".into(),
                    body: json!({"kind": "processed"}),
                    ttl_seconds: 1,
                },
                BatchOp::CreateExpiring {
                    id: "lasting".into(),
                    body: json!({"kind": "processed"}),
                    ttl_seconds: 3600,
                },
            ],
        )
        .await
        .unwrap();
    assert!(store.read(THINGS, &pk, "brief").await.unwrap().is_some());
    let gone = common::testing::eventually(Duration::from_secs(10), || async {
        store.read(THINGS, &pk, "brief").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "an item past its time to live is still read");
    assert!(store.read(THINGS, &pk, "lasting").await.unwrap().is_some());
    let page = store
        .query(THINGS, &Query::new(QueryScope::Partition(pk.clone()), 10))
        .await
        .unwrap();
    let ids: Vec<&str> = page.items.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["lasting"]);
    assert!(store.find_by_id(THINGS, "brief").await.unwrap().is_none());
}

/// Every page of `query`, following continuations; the ids in the order served.
async fn all_pages(store: &SharedStore, container: &str, query: Query) -> Vec<String> {
    let mut ids = Vec::new();
    let mut continuation = None;
    loop {
        let page = store
            .query(container, &query.clone().continue_from(continuation))
            .await
            .unwrap();
        ids.extend(page.items.into_iter().map(|d| d.id));
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => return ids,
        }
    }
}

async fn query_ranges_and_field_order_page_with_continuation(store: &SharedStore) {
    let pk = unique("range");
    // Prices repeat, so that the id breaks ties across page boundaries.
    for n in 0..10 {
        store
            .create(
                THINGS,
                &pk,
                &format!("i{n}"),
                json!({"price": (n % 5) * 10, "order": n}),
            )
            .await
            .unwrap();
    }
    store
        .create(THINGS, &pk, "no-price", json!({"order": 1}))
        .await
        .unwrap();
    store
        .create(THINGS, &pk, "text-price", json!({"price": "20"}))
        .await
        .unwrap();
    let scope = QueryScope::Partition(pk.clone());
    let ascending = Query::new(scope.clone(), 3)
        .compare("price", Comparison::Ge, 10)
        .compare("price", Comparison::Lt, 40)
        .order_by("price", false);
    assert_eq!(
        all_pages(store, THINGS, ascending).await,
        ["i1", "i6", "i2", "i7", "i3", "i8"]
    );
    // Strings sort after numbers on both stores.
    let descending = Query::new(scope.clone(), 4).order_by("price", true);
    assert_eq!(
        all_pages(store, THINGS, descending).await,
        [
            "text-price",
            "i4",
            "i9",
            "i3",
            "i8",
            "i2",
            "i7",
            "i1",
            "i6",
            "i0",
            "i5"
        ]
    );
    // A field named like an SQL keyword works too, and equality still keeps types apart.
    let keyword = Query::new(scope.clone(), 10).compare("order", Comparison::Gt, 7);
    assert_eq!(all_pages(store, THINGS, keyword).await, ["i8", "i9"]);
    let by_keyword = Query::new(scope.clone(), 4)
        .compare("order", Comparison::Ge, 6)
        .order_by("order", true);
    assert_eq!(
        all_pages(store, THINGS, by_keyword).await,
        ["i9", "i8", "i7", "i6"]
    );
    let text = Query::new(scope.clone(), 10).compare("price", Comparison::Le, "3");
    assert_eq!(all_pages(store, THINGS, text).await, ["text-price"]);
    // Booleans compare as booleans.
    store
        .create(THINGS, &pk, "yes", json!({"flag": true}))
        .await
        .unwrap();
    store
        .create(THINGS, &pk, "no", json!({"flag": false}))
        .await
        .unwrap();
    store
        .create(THINGS, &pk, "one", json!({"flag": 1}))
        .await
        .unwrap();
    let flagged = Query::new(scope.clone(), 10).filter("flag", true);
    assert_eq!(all_pages(store, THINGS, flagged).await, ["yes"]);
    let unflagged = Query::new(scope.clone(), 10).filter("flag", false);
    assert_eq!(all_pages(store, THINGS, unflagged).await, ["no"]);
    // A token of an ordered query is not one of an unordered query.
    let page = store
        .query(
            THINGS,
            &Query::new(scope.clone(), 2).order_by("price", false),
        )
        .await
        .unwrap();
    let error = store
        .query(
            THINGS,
            &Query::new(scope, 2).continue_from(page.continuation),
        )
        .await
        .unwrap_err();
    assert_eq!(error, StoreError::InvalidContinuation);
}

async fn items_and_batches_over_two_megabytes_are_refused_alike(store: &SharedStore) {
    let pk = unique("big");
    let huge = json!({"blob": "x".repeat(common::store::MAX_ITEM_BYTES)});
    for result in [
        store
            .create(THINGS, &pk, "huge", huge.clone())
            .await
            .map(|_| ()),
        store
            .upsert(THINGS, &pk, "huge", huge.clone())
            .await
            .map(|_| ()),
    ] {
        assert!(matches!(result, Err(StoreError::TooLarge(_))), "{result:?}");
    }
    // Each item fits, together they do not.
    let half = json!({"blob": "x".repeat(common::store::MAX_ITEM_BYTES / 2 + 1024)});
    let batch = vec![
        BatchOp::Create {
            id: "a".into(),
            body: half.clone(),
        },
        BatchOp::Create {
            id: "b".into(),
            body: half.clone(),
        },
        BatchOp::Create {
            id: "c".into(),
            body: half,
        },
    ];
    let result = store.batch(THINGS, &pk, batch).await;
    assert!(matches!(result, Err(StoreError::TooLarge(_))), "{result:?}");
    assert!(store.read(THINGS, &pk, "a").await.unwrap().is_none());
    assert!(store.read(THINGS, &pk, "huge").await.unwrap().is_none());
}

async fn cross_partition_pages_never_skip_an_id_shared_by_two_partitions(store: &SharedStore) {
    let kind = unique("shared");
    // Two partitions hold the same ids; a page boundary falls between the two copies.
    for id in ["a", "b", "c"] {
        for pk in ["p1", "p2"] {
            store
                .create(THINGS, &format!("{kind}-{pk}"), id, json!({"kind": kind}))
                .await
                .unwrap();
        }
    }
    let mut seen = Vec::new();
    let mut continuation = None;
    loop {
        let page = store
            .query(
                THINGS,
                &Query::new(QueryScope::AllPartitions, 3)
                    .filter("kind", kind.as_str())
                    .continue_from(continuation),
            )
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|d| {
            format!(
                "{}@{}",
                d.id,
                d.partition_key.rsplit('-').next().unwrap_or("")
            )
        }));
        match page.continuation {
            Some(next) => continuation = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ["a@p1", "a@p2", "b@p1", "b@p2", "c@p1", "c@p2"]);
}

/// A throttled Cosmos DB answers `Throttled` with the server's delay once the SDK's
/// retries, bounded by the settings, are spent (never a 500, never an endless wait).
#[tokio::test]
async fn cosmos_throttling_surfaces_the_servers_delay_within_the_budget() {
    let mut settings = common::config::Settings::defaults().store.cosmos;
    settings.throttle_retries = 1;
    settings.throttle_budget_ms = 200;
    let subject = cosmos_emulator_with(Some((400, settings))).await;
    let body = json!({"blob": "x".repeat(100_000)});
    let pk = unique("hot");
    let mut throttled = None;
    for n in 0..200 {
        let started = Instant::now();
        match subject
            .store
            .upsert(THINGS, &pk, &format!("i{n}"), body.clone())
            .await
        {
            Ok(_) => {}
            Err(StoreError::Throttled { retry_after_ms }) => {
                throttled = Some((retry_after_ms, started.elapsed()));
                break;
            }
            Err(other) => panic!("a throttled write failed otherwise: {other:?}"),
        }
    }
    let (retry_after_ms, waited) = throttled.expect("400 RU/s never throttled");
    assert!(retry_after_ms > 0);
    assert!(
        waited < Duration::from_secs(5),
        "the SDK retried past its budget: {waited:?}"
    );
    println!("throttled: server asked {retry_after_ms} ms; gave up after {waited:?}");
}

/// Each Cosmos call's span names its container and carries the request units it cost, a
/// read of several pages adding them up.
#[tokio::test]
async fn cosmos_spans_name_their_container_and_carry_the_charge() {
    let logs = common::testing::LogCapture::start(tracing::Level::INFO, true);
    let subject = cosmos_emulator().await;
    let pk = unique("spans");
    for n in 0..5 {
        subject
            .store
            .create(OTHER, &pk, &format!("i{n}"), json!({"n": n}))
            .await
            .unwrap();
    }
    all_pages(
        &subject.store,
        OTHER,
        Query::new(QueryScope::Partition(pk.clone()), 2),
    )
    .await;
    subject.store.changes(OTHER, None, 10).await.unwrap();
    let logged = logs.text();
    for operation in ["cosmos.create", "cosmos.query", "cosmos.changes"] {
        let line = logged
            .lines()
            .find(|line| line.contains(operation) && line.contains("close"))
            .unwrap_or_else(|| panic!("no closed {operation} span in {logged}"));
        assert!(line.contains("container=other"), "{line}");
        assert!(line.contains("ru="), "{line}");
    }
}

/// A physical partition that splits under a reader: the change feed resumes from its
/// checkpoint and misses nothing; queries across partitions still page through everything.
#[tokio::test]
async fn cosmos_change_feed_and_queries_survive_a_partition_split() {
    let (subject, emulated) = cosmos_emulator_and_store(None).await;
    let store = subject.store.clone();
    let kind = unique("split");
    let mut ids = BTreeSet::new();
    for n in 0..40 {
        let id = format!("i{n:02}");
        store
            .create(THINGS, &format!("pk-{n}"), &id, json!({"kind": kind}))
            .await
            .unwrap();
        ids.insert(id);
    }
    let first = store.changes(THINGS, None, 10).await.unwrap();
    let mut seen: BTreeSet<String> = first.documents.iter().map(|d| d.id.clone()).collect();
    let parents = vec![0u32];
    emulated.split_partition("contract", THINGS, 0, Duration::from_millis(20));
    let split = common::testing::eventually(Duration::from_secs(10), || {
        let emulated = emulated.clone();
        let parents = parents.clone();
        async move {
            !emulated
                .child_partition_ids("contract", THINGS, &parents)
                .is_empty()
        }
    })
    .await;
    assert!(split, "the partition did not split");
    let mut checkpoint = first.checkpoint;
    for _ in 0..60 {
        // Seven does not divide the items of either half, so a page can end short of it.
        let batch = store.changes(THINGS, Some(&checkpoint), 7).await.unwrap();
        assert!(
            batch.documents.len() <= 7,
            "asked for 7 changes, got {}",
            batch.documents.len()
        );
        seen.extend(batch.documents.iter().map(|d| d.id.clone()));
        checkpoint = batch.checkpoint;
        if ids.is_subset(&seen) {
            break;
        }
    }
    assert!(
        ids.is_subset(&seen),
        "missed after the split: {:?}",
        ids.difference(&seen).collect::<Vec<_>>()
    );
    let paged = all_pages(
        &store,
        THINGS,
        Query::new(QueryScope::AllPartitions, 7).filter("kind", kind.as_str()),
    )
    .await;
    let paged_set: BTreeSet<String> = paged.iter().cloned().collect();
    assert_eq!(paged.len(), 40, "an item was served twice or missed");
    assert_eq!(paged_set, ids);
}
