//! A store that times every operation of the store it wraps (`db.client.operation.duration`
//! by operation, container and error), and counts throttled calls and the request units
//! that the Cosmos DB adapter reports while the operation runs.

use std::cell::Cell;
use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use opentelemetry::KeyValue;

use super::{
    BatchOp, ChangeBatch, Checkpoint, Document, DocumentStore, ETag, Json, Page, Query,
    SharedStore, StoreError, StoredText,
};
use crate::metrics::{Counter, DURATION_BUCKETS, Histogram, Metrics};

tokio::task_local! {
    /// Request units charged to the operation under way.
    static CHARGED: Cell<f64>;
}

/// Adds the request units a response reported to the operation under way (no-op outside a
/// measured operation).
pub(crate) fn charge(request_units: f64) {
    let _ = CHARGED.try_with(|charged| charged.set(charged.get() + request_units));
}

pub struct MeasuredStore {
    inner: SharedStore,
    system: &'static str,
    duration: Histogram<f64>,
    request_units: Counter<f64>,
    throttled: Counter<u64>,
}

impl MeasuredStore {
    /// `system` names the backend (`sqlite`, `azure.cosmosdb`).
    pub fn new(inner: SharedStore, system: &'static str, metrics: &Metrics) -> Self {
        let meter = metrics.meter();
        Self {
            inner,
            system,
            duration: meter
                .f64_histogram("db.client.operation.duration")
                .with_unit("s")
                .with_description("Duration of store operations.")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
            request_units: meter
                .f64_counter("platform.store.request_units")
                .with_unit("{request_unit}")
                .with_description("Request units Cosmos DB charged, by operation and container.")
                .build(),
            throttled: meter
                .u64_counter("platform.store.throttled")
                .with_unit("{operation}")
                .with_description("Store operations refused for throttling (HTTP 429).")
                .build(),
        }
    }

    async fn measure<T>(
        &self,
        operation: &'static str,
        container: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let (result, charged) = CHARGED
            .scope(Cell::new(0.0), async {
                let result = call.await;
                (result, CHARGED.with(Cell::get))
            })
            .await;
        let mut attributes = vec![
            KeyValue::new("db.system.name", self.system),
            KeyValue::new("db.operation.name", operation),
            KeyValue::new("db.collection.name", container.to_owned()),
        ];
        if let Err(error) = &result {
            attributes.push(KeyValue::new("error.type", error_type(error)));
        }
        self.duration
            .record(started.elapsed().as_secs_f64(), &attributes);
        if charged > 0.0 {
            self.request_units.add(charged, &attributes[..3]);
        }
        if matches!(result, Err(StoreError::Throttled { .. })) {
            self.throttled.add(1, &attributes[..3]);
        }
        result
    }
}

fn error_type(error: &StoreError) -> &'static str {
    match error {
        StoreError::NotFound => "not_found",
        StoreError::Conflict => "conflict",
        StoreError::PreconditionFailed => "precondition_failed",
        StoreError::InvalidContinuation => "invalid_continuation",
        StoreError::Throttled { .. } => "throttled",
        StoreError::Unavailable(_) => "unavailable",
        StoreError::TooLarge(_) => "too_large",
        StoreError::Full(_) => "full",
        StoreError::Serialization(_) => "serialization",
        StoreError::Backend(_) => "backend",
    }
}

#[async_trait]
impl DocumentStore for MeasuredStore {
    async fn read(
        &self,
        container: &str,
        pk: &str,
        id: &str,
    ) -> Result<Option<Document>, StoreError> {
        self.measure("read", container, self.inner.read(container, pk, id))
            .await
    }

    async fn read_text(
        &self,
        container: &str,
        pk: &str,
        id: &str,
    ) -> Result<Option<StoredText>, StoreError> {
        self.measure("read", container, self.inner.read_text(container, pk, id))
            .await
    }

    async fn read_many(
        &self,
        container: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<Document>>, StoreError> {
        self.measure(
            "read_many",
            container,
            self.inner.read_many(container, keys),
        )
        .await
    }

    async fn find_by_id(&self, container: &str, id: &str) -> Result<Option<Document>, StoreError> {
        self.measure(
            "find_by_id",
            container,
            self.inner.find_by_id(container, id),
        )
        .await
    }

    async fn create(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
    ) -> Result<Document, StoreError> {
        self.measure(
            "create",
            container,
            self.inner.create(container, pk, id, body),
        )
        .await
    }

    async fn replace(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
        if_match: Option<&ETag>,
    ) -> Result<Document, StoreError> {
        self.measure(
            "replace",
            container,
            self.inner.replace(container, pk, id, body, if_match),
        )
        .await
    }

    async fn upsert(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
    ) -> Result<Document, StoreError> {
        self.measure(
            "upsert",
            container,
            self.inner.upsert(container, pk, id, body),
        )
        .await
    }

    async fn delete(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        if_match: Option<&ETag>,
    ) -> Result<(), StoreError> {
        self.measure(
            "delete",
            container,
            self.inner.delete(container, pk, id, if_match),
        )
        .await
    }

    async fn query(&self, container: &str, query: &Query) -> Result<Page, StoreError> {
        self.measure("query", container, self.inner.query(container, query))
            .await
    }

    async fn changes(
        &self,
        container: &str,
        since: Option<&Checkpoint>,
        max: usize,
    ) -> Result<ChangeBatch, StoreError> {
        self.measure(
            "changes",
            container,
            self.inner.changes(container, since, max),
        )
        .await
    }

    async fn batch(
        &self,
        container: &str,
        pk: &str,
        operations: Vec<BatchOp>,
    ) -> Result<Vec<Option<ETag>>, StoreError> {
        self.measure(
            "batch",
            container,
            self.inner.batch(container, pk, operations),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn index_field(&self, field: &str) -> Result<(), StoreError> {
        self.inner.index_field(field).await
    }
}
