//! The document store port: a small trait shaped after Cosmos DB containers.
//!
//! Items live in named containers, addressed by partition key and id, carry an opaque ETag
//! that changes on every write, and appear on an ordered per-container change feed that a
//! consumer resumes from a checkpoint. Both adapters ([`embedded::EmbeddedStore`] and
//! [`cosmos::CosmosStore`]) pass the same contract suite (`crates/common/tests/it/store_contract.rs`).

pub mod cosmos;
pub mod embedded;
pub mod measured;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub type Json = serde_json::Value;

/// An opaque version stamp of a document; it changes on every write.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ETag(String);

impl ETag {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored item with its system properties.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    pub id: String,
    pub partition_key: String,
    pub body: Json,
    pub etag: ETag,
}

impl Document {
    pub fn into_model<T: serde::de::DeserializeOwned>(self) -> Result<(T, ETag), StoreError> {
        let model = serde_json::from_value(self.body)
            .map_err(|error| StoreError::Serialization(error.into()))?;
        Ok((model, self.etag))
    }
}

/// A stored body as JSON text, with its version ([`DocumentStore::read_text`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredText {
    pub text: String,
    pub etag: ETag,
}

/// Which partitions a query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryScope {
    Partition(String),
    AllPartitions,
}

/// How a filter compares a field with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// Equal, and of the same JSON type.
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Comparison::Eq => "=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }
}

/// A filter on a top-level field of the document body. Ranges compare numbers with numbers
/// and strings with strings; a document whose field is missing or of another type never
/// matches a range.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldFilter {
    pub field: String,
    pub comparison: Comparison,
    pub value: Json,
}

/// Results ordered by a top-level field (then by id), instead of by id alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    pub field: String,
    pub descending: bool,
}

/// A page request: documents ordered by id (or by a field, then id), filtered on
/// top-level fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub scope: QueryScope,
    pub filters: Vec<FieldFilter>,
    pub order_by: Option<OrderBy>,
    pub limit: u32,
    pub continuation: Option<String>,
}

impl Query {
    pub fn new(scope: QueryScope, limit: u32) -> Self {
        Self {
            scope,
            filters: Vec::new(),
            order_by: None,
            limit,
            continuation: None,
        }
    }

    /// Only documents whose `field` equals `value` (same JSON type).
    pub fn filter(self, field: impl Into<String>, value: impl Into<Json>) -> Self {
        self.compare(field, Comparison::Eq, value)
    }

    /// Only documents whose `field` compares with `value` as said.
    pub fn compare(
        mut self,
        field: impl Into<String>,
        comparison: Comparison,
        value: impl Into<Json>,
    ) -> Self {
        self.filters.push(FieldFilter {
            field: field.into(),
            comparison,
            value: value.into(),
        });
        self
    }

    /// Orders by `field` (documents without it are left out), then by id.
    pub fn order_by(mut self, field: impl Into<String>, descending: bool) -> Self {
        self.order_by = Some(OrderBy {
            field: field.into(),
            descending,
        });
        self
    }

    pub fn continue_from(mut self, continuation: Option<String>) -> Self {
        self.continuation = continuation;
        self
    }

    /// Checks what both adapters rely on: a sane page size and field names that are plain
    /// identifiers (they end up inside SQL and JSON paths).
    pub(crate) fn validated(&self) -> Result<Option<ContinuationToken>, StoreError> {
        if self.limit == 0 || self.limit > MAX_PAGE_SIZE {
            return Err(StoreError::Backend(
                (format!("page size must be 1..={MAX_PAGE_SIZE}, got {}", self.limit)).into(),
            ));
        }
        let fields = self
            .filters
            .iter()
            .map(|f| &f.field)
            .chain(self.order_by.iter().map(|o| &o.field));
        for field in fields {
            plain_identifier(field)?;
        }
        for filter in &self.filters {
            if filter.comparison != Comparison::Eq
                && !(filter.value.is_number() || filter.value.is_string())
            {
                return Err(StoreError::Backend(
                    (format!("a range on {} needs a number or a string", filter.field)).into(),
                ));
            }
        }
        let position = self
            .continuation
            .as_deref()
            .map(ContinuationToken::decode)
            .transpose()?;
        // A token from an ordered query carries the sort value, and only such a token.
        if let Some(position) = &position
            && position.after_value.is_some() != self.order_by.is_some()
        {
            return Err(StoreError::InvalidContinuation);
        }
        Ok(position)
    }
}

pub const MAX_PAGE_SIZE: u32 = 1000;

/// One page of query results; `continuation` is present while more results may follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub items: Vec<Document>,
    pub continuation: Option<String>,
}

/// Keyset position shared by both adapters: results are ordered by id, the token remembers
/// the last id served. Opaque to clients (base64url of JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContinuationToken {
    #[serde(rename = "a")]
    pub after_id: String,
    /// The last item's partition key: ids repeat across partitions, so a page ends on
    /// (id, partition key), never on the id alone.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub after_pk: Option<String>,
    /// The sort field's value of the last item, for ordered queries.
    #[serde(rename = "v", default, skip_serializing_if = "Option::is_none")]
    pub after_value: Option<Json>,
}

impl ContinuationToken {
    pub(crate) fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub(crate) fn decode(token: &str) -> Result<Self, StoreError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| StoreError::InvalidContinuation)?;
        serde_json::from_slice(&bytes).map_err(|_| StoreError::InvalidContinuation)
    }

    /// Turns a result set fetched with one extra row into a page.
    pub(crate) fn paginate(mut items: Vec<Document>, query: &Query) -> Page {
        let limit = query.limit;
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let continuation = more.then(|| items.last()).flatten().map(|last| {
            ContinuationToken {
                after_id: last.id.clone(),
                after_pk: Some(last.partition_key.clone()),
                after_value: query
                    .order_by
                    .as_ref()
                    .map(|order| last.body.get(&order.field).cloned().unwrap_or(Json::Null)),
            }
            .encode()
        });
        Page {
            items,
            continuation,
        }
    }
}

/// Where a change-feed consumer stands; opaque, store it and hand it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint(pub String);

/// Changes since a checkpoint: the latest version of each changed document, oldest change
/// first within a partition. An empty batch means nothing new was seen this time, not that
/// the feed is drained for good; keep polling.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeBatch {
    pub documents: Vec<Document>,
    pub checkpoint: Checkpoint,
}

/// Field names end up inside SQL and JSON paths: only plain identifiers are taken.
pub(crate) fn plain_identifier(field: &str) -> Result<(), StoreError> {
    let valid = !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::Backend(
            (format!("field {field:?} is not a plain identifier")).into(),
        ))
    }
}

/// One operation of an atomic batch; all operations of a batch share a container and a
/// partition key.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOp {
    Create {
        id: String,
        body: Json,
    },
    /// A create whose item disappears by itself `ttl_seconds` after it was written (Cosmos
    /// item `ttl`; the embedded store hides it at once and purges it as it writes).
    CreateExpiring {
        id: String,
        body: Json,
        ttl_seconds: u32,
    },
    Replace {
        id: String,
        body: Json,
        if_match: Option<ETag>,
    },
    Upsert {
        id: String,
        body: Json,
    },
    Delete {
        id: String,
        if_match: Option<ETag>,
    },
}

impl BatchOp {
    pub fn id(&self) -> &str {
        match self {
            BatchOp::Create { id, .. }
            | BatchOp::CreateExpiring { id, .. }
            | BatchOp::Replace { id, .. }
            | BatchOp::Upsert { id, .. }
            | BatchOp::Delete { id, .. } => id,
        }
    }
}

/// Point reads in flight at once in the default [`DocumentStore::read_many`].
const READ_MANY_CONCURRENCY: usize = 32;

/// Most operations one batch may hold (Cosmos DB's transactional batch limit).
pub const MAX_BATCH_OPERATIONS: usize = 100;

/// The largest item body, serialized (Cosmos DB: 2 MB per item, envelope included; the
/// margin leaves room for the envelope and system properties).
pub const MAX_ITEM_BYTES: usize = 2 * 1024 * 1024 - 4 * 1024;

/// The largest batch, serialized bodies added up (Cosmos DB: 2 MB per transactional batch).
pub const MAX_BATCH_BYTES: usize = 2 * 1024 * 1024 - 16 * 1024;

/// Refuses an item body over [`MAX_ITEM_BYTES`]; returns its serialized size.
pub(crate) fn check_item_size(id: &str, body: &Json) -> Result<usize, StoreError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| StoreError::Serialization(e.into()))?
        .len();
    if bytes > MAX_ITEM_BYTES {
        return Err(StoreError::TooLarge(format!(
            "item {id} is {bytes} bytes; at most {MAX_ITEM_BYTES} are stored"
        )));
    }
    Ok(bytes)
}

/// Refuses a batch whose bodies add up to more than [`MAX_BATCH_BYTES`], or with an item
/// over [`MAX_ITEM_BYTES`].
pub(crate) fn check_batch_bytes(operations: &[BatchOp]) -> Result<(), StoreError> {
    let mut total = 0;
    for operation in operations {
        let body = match operation {
            BatchOp::Create { body, .. }
            | BatchOp::CreateExpiring { body, .. }
            | BatchOp::Replace { body, .. }
            | BatchOp::Upsert { body, .. } => body,
            BatchOp::Delete { .. } => continue,
        };
        total += check_item_size(operation.id(), body)?;
    }
    if total > MAX_BATCH_BYTES {
        return Err(StoreError::TooLarge(format!(
            "the batch is {total} bytes; at most {MAX_BATCH_BYTES} are stored at once"
        )));
    }
    Ok(())
}

/// What caused a failure: the underlying error when there is one (kept as the source, so
/// that the whole chain reaches the logs), or a message. Compared by message.
#[derive(Debug, Clone)]
pub struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync>);

#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl Cause {
    /// Keeps `error` (and its own sources) as the cause.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(error))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self(std::sync::Arc::new(Message(message)))
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

impl From<serde_json::Error> for Cause {
    fn from(error: serde_json::Error) -> Self {
        Self::new(error)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("document not found")]
    NotFound,
    #[error("a document with this id already exists in the partition")]
    Conflict,
    #[error("the ETag does not match the document's current ETag")]
    PreconditionFailed,
    #[error("the continuation token is not valid")]
    InvalidContinuation,
    #[error("the store is throttling requests; retry after {retry_after_ms} ms")]
    Throttled { retry_after_ms: u64 },
    #[error("the store is unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// An item or a batch over Cosmos DB's limits (2 MB each), on every store alike.
    #[error("{0}")]
    TooLarge(String),
    /// No room to write (disk or quota full); reads go on, writes resume once there is.
    #[error("the store is out of space: {0}")]
    Full(#[source] Cause),
    #[error("a document could not be (de)serialized: {0}")]
    Serialization(#[source] Cause),
    #[error("store failure: {0}")]
    Backend(#[source] Cause),
}

impl StoreError {
    /// What a health probe may say of the failure: a category, nothing internal.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::Full(_) => "out of space: writes are refused until space is freed",
            StoreError::TooLarge(_) => "asked to store too much at once",
            StoreError::Unavailable(_) => "unavailable (unreachable, read-only or failing storage)",
            StoreError::Throttled { .. } => "throttling",
            _ => "failing",
        }
    }
}

#[async_trait]
pub trait DocumentStore: Send + Sync + 'static {
    /// Point read; `None` when the item does not exist.
    async fn read(
        &self,
        container: &str,
        pk: &str,
        id: &str,
    ) -> Result<Option<Document>, StoreError>;

    /// Point read of the body as JSON text, for a caller that decodes it straight into its
    /// model: one decoding in place of two (into a `Value`, then from it). The text holds
    /// what [`DocumentStore::read`] gives as the body.
    async fn read_text(
        &self,
        container: &str,
        pk: &str,
        id: &str,
    ) -> Result<Option<StoredText>, StoreError> {
        self.read(container, pk, id)
            .await?
            .map(|document| {
                Ok(StoredText {
                    text: serde_json::to_string(&document.body)
                        .map_err(|error| StoreError::Serialization(error.into()))?,
                    etag: document.etag,
                })
            })
            .transpose()
    }

    /// Point reads of many items at once (`(pk, id)` each), answered in the order asked;
    /// `None` where an item does not exist. Not a snapshot: each read is a point read.
    async fn read_many(
        &self,
        container: &str,
        keys: &[(String, String)],
    ) -> Result<Vec<Option<Document>>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(READ_MANY_CONCURRENCY) {
            let mut reads = Vec::with_capacity(chunk.len());
            for (pk, id) in chunk {
                reads.push(self.read(container, pk, id));
            }
            for read in futures::future::join_all(reads).await {
                found.push(read?);
            }
        }
        Ok(found)
    }

    /// The item with this id in whichever partition holds it (ids unique across the
    /// container by the caller's convention); the first found otherwise.
    async fn find_by_id(&self, container: &str, id: &str) -> Result<Option<Document>, StoreError>;

    /// Creates the item; [`StoreError::Conflict`] when the id is taken in that partition.
    async fn create(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
    ) -> Result<Document, StoreError>;

    /// Replaces an existing item, optionally only if its ETag still matches.
    async fn replace(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
        if_match: Option<&ETag>,
    ) -> Result<Document, StoreError>;

    /// Creates or replaces the item unconditionally.
    async fn upsert(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
    ) -> Result<Document, StoreError>;

    /// Deletes the item, optionally only if its ETag still matches.
    async fn delete(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        if_match: Option<&ETag>,
    ) -> Result<(), StoreError>;

    /// One page of a query, ordered by id.
    async fn query(&self, container: &str, query: &Query) -> Result<Page, StoreError>;

    /// Up to `max` changes after `since` (from the beginning when `None`).
    async fn changes(
        &self,
        container: &str,
        since: Option<&Checkpoint>,
        max: usize,
    ) -> Result<ChangeBatch, StoreError>;

    /// Applies every operation or none (a transaction in one partition). On failure the
    /// error is that of the first operation that failed. Returns the new ETag of each
    /// operation, `None` for deletes.
    async fn batch(
        &self,
        container: &str,
        pk: &str,
        operations: Vec<BatchOp>,
    ) -> Result<Vec<Option<ETag>>, StoreError>;

    /// Cheap round trip used by readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Makes queries that filter on `kind` and on `field` by equality independent of how
    /// many other documents the container holds (a service lists its orders by status among
    /// every order it ever took). Cosmos DB indexes every path by default, so its adapter
    /// has nothing to do; the embedded store keeps an index.
    async fn index_field(&self, field: &str) -> Result<(), StoreError> {
        plain_identifier(field)
    }
}

pub type SharedStore = Arc<dyn DocumentStore>;
