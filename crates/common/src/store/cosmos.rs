//! The Azure Cosmos DB adapter, on the official `azure_data_cosmos` SDK.
//!
//! Every container is partitioned on `/pk`. A stored item is an envelope
//! `{"id", "pk", "doc": <body>}`, so a service's documents never collide with Cosmos's
//! own properties (`_etag`, `_ts`, ...), and filters address `c.doc['<field>']`.
//! Request charges (RU) are recorded on each operation's span.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use async_trait::async_trait;
use azure_data_cosmos::clients::ContainerClient;
use azure_data_cosmos::feed::ContinuationToken as SdkContinuation;
use azure_data_cosmos::models::ResponseHeaders;
use azure_data_cosmos::options::{
    ChangeFeedOptions, ChangeFeedStartFrom, ItemWriteOptions, MaxItemCountHint, Precondition,
    QueryOptions,
};
use azure_data_cosmos::{CosmosClient, CosmosError, FeedScope, Query as SqlQuery};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{
    BatchOp, Cause, ChangeBatch, Checkpoint, Comparison, ContinuationToken, Document,
    DocumentStore, ETag, Json, Page, Query, QueryScope, StoreError,
};
use crate::usage::{Counted, count};

#[derive(Clone)]
pub struct CosmosStore {
    containers: Arc<HashMap<String, ContainerClient>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    id: String,
    pk: String,
    doc: Json,
    /// Seconds the item lives after its last write (needs the container's default TTL on,
    /// `-1`: see docs/deploy-azure.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<u32>,
    #[serde(rename = "_etag", default, skip_serializing)]
    etag: Option<String>,
    #[serde(rename = "_ts", default, skip_serializing)]
    written_at: Option<i64>,
}

impl Envelope {
    /// Cosmos DB hides an item once `_ts + ttl` has passed; the check here says the same
    /// where deletion lags (the emulator does not expire items at all).
    fn expired(&self) -> bool {
        match (self.ttl, self.written_at) {
            (Some(ttl), Some(written_at)) => {
                written_at.saturating_add(i64::from(ttl))
                    <= time::OffsetDateTime::now_utc().unix_timestamp()
            }
            _ => false,
        }
    }

    /// The document, which must carry its ETag: without one, no write could be guarded.
    fn into_document(self) -> Result<Document, StoreError> {
        let etag = self.etag.ok_or_else(|| {
            StoreError::Serialization(format!("item {} came back without an _etag", self.id).into())
        })?;
        Ok(Document {
            id: self.id,
            partition_key: self.pk,
            body: self.doc,
            etag: ETag::new(etag),
        })
    }
}

impl CosmosStore {
    /// Resolves a client for each container up front, so a missing container fails start-up
    /// rather than the first request.
    pub async fn open(
        client: &CosmosClient,
        database: &str,
        containers: &[&str],
    ) -> Result<Self, StoreError> {
        let database = client.database_client(database);
        let mut clients = HashMap::new();
        for name in containers {
            let container = database
                .container_client(*name, None)
                .await
                .map_err(|e| StoreError::Unavailable((format!("container {name}: {e}")).into()))?;
            clients.insert((*name).to_owned(), container);
        }
        Ok(Self {
            containers: Arc::new(clients),
        })
    }

    fn container(&self, name: &str) -> Result<&ContainerClient, StoreError> {
        self.containers
            .get(name)
            .ok_or_else(|| StoreError::Backend((format!("container {name} was not opened")).into()))
    }
}

/// The SQL path of a body field. Always the quoted form, because a field named like a keyword
/// of Cosmos SQL (`value`, `order`, `top`, ...) is a syntax error as `c.doc.value`. Field
/// names are plain identifiers (`Query::validated`), so the quotes need no escaping.
fn document_field(field: &str) -> String {
    format!("c.doc['{field}']")
}

/// The SQL text and parameters of a page request, from its validated position.
fn query_sql(query: &Query, position: Option<ContinuationToken>) -> (String, Vec<(String, Json)>) {
    // The page size is validated to be small; it is inlined because TOP takes a literal.
    let mut sql = format!("SELECT TOP {} * FROM c WHERE true", query.limit + 1);
    let mut parameters: Vec<(String, Json)> = Vec::new();
    let sort = query
        .order_by
        .as_ref()
        .map(|order| (document_field(&order.field), order.descending));
    match (position, &sort) {
        (Some(position), Some((key, descending))) => {
            let beyond = if *descending { "<" } else { ">" };
            sql.push_str(&format!(
                " AND ({key} {beyond} @afterValue OR ({key} = @afterValue AND (c.id > @after OR (c.id = @after AND c.pk > @afterPk))))"
            ));
            parameters.push(("@after".into(), Json::String(position.after_id)));
            parameters.push((
                "@afterPk".into(),
                Json::String(position.after_pk.unwrap_or_default()),
            ));
            parameters.push((
                "@afterValue".into(),
                position.after_value.unwrap_or(Json::Null),
            ));
        }
        (Some(position), None) => {
            sql.push_str(" AND (c.id > @after OR (c.id = @after AND c.pk > @afterPk))");
            parameters.push(("@after".into(), Json::String(position.after_id)));
            parameters.push((
                "@afterPk".into(),
                Json::String(position.after_pk.unwrap_or_default()),
            ));
        }
        _ => {}
    }
    if let Some((key, _)) = &sort {
        // Both stores leave out documents without the sort field.
        sql.push_str(&format!(" AND IS_DEFINED({key}) AND NOT IS_NULL({key})"));
    }
    for (index, filter) in query.filters.iter().enumerate() {
        let field = document_field(&filter.field);
        match filter.comparison {
            Comparison::Eq => sql.push_str(&format!(" AND {field} = @f{index}")),
            comparison => {
                let same_type = if filter.value.is_string() {
                    "IS_STRING"
                } else {
                    "IS_NUMBER"
                };
                sql.push_str(&format!(
                    " AND {same_type}({field}) AND {field} {} @f{index}",
                    comparison.sql()
                ));
            }
        }
        parameters.push((format!("@f{index}"), filter.value.clone()));
    }
    match &sort {
        Some((key, true)) => {
            sql.push_str(&format!(" ORDER BY {key} DESC, c.id ASC, c.pk ASC"));
        }
        Some((key, false)) => {
            sql.push_str(&format!(" ORDER BY {key} ASC, c.id ASC, c.pk ASC"));
        }
        None => sql.push_str(" ORDER BY c.id ASC, c.pk ASC"),
    }
    (sql, parameters)
}

fn map_error(error: CosmosError) -> StoreError {
    let status = error.status();
    if status.is_not_found() {
        StoreError::NotFound
    } else if status.is_conflict() {
        StoreError::Conflict
    } else if status.is_precondition_failed() {
        StoreError::PreconditionFailed
    } else if u16::from(status.status_code()) == 413 {
        StoreError::TooLarge("the item or batch is over Cosmos DB's size limit".into())
    } else if status.is_throttled() {
        // What the server asks, once the SDK's own bounded retries are spent.
        let retry_after_ms = error
            .response()
            .and_then(|response| response.headers().retry_after_ms)
            .unwrap_or(1000);
        StoreError::Throttled { retry_after_ms }
    } else if status.is_transient() || status.is_service_unavailable() || status.is_timeout() {
        StoreError::Unavailable(Cause::new(error))
    } else {
        StoreError::Backend(Cause::new(error))
    }
}

fn record_charge(headers: &ResponseHeaders) {
    if let Some(charge) = headers.request_charge() {
        tracing::Span::current().record("ru", f64::from(*charge));
        super::measured::charge(f64::from(*charge));
    }
}

/// The request units of an operation that reads several pages, added up and recorded on
/// its span as it goes.
#[derive(Default)]
struct Charge(f64);

impl Charge {
    fn add(&mut self, headers: &ResponseHeaders) {
        if let Some(charge) = headers.request_charge() {
            self.0 += f64::from(*charge);
            tracing::Span::current().record("ru", self.0);
            super::measured::charge(f64::from(*charge));
        }
    }
}

fn etag_from(headers: &ResponseHeaders) -> Result<ETag, StoreError> {
    headers
        .etag()
        .map(|e| ETag::new(e.to_string()))
        .ok_or_else(|| StoreError::Serialization("a write answered without an ETag".into()))
}

/// The document a successful write stored, with its new ETag; records the charge.
fn written(
    pk: &str,
    id: &str,
    body: Json,
    response: &azure_data_cosmos::models::ItemResponse,
) -> Result<Document, StoreError> {
    record_charge(response.headers());
    Ok(Document {
        id: id.to_owned(),
        partition_key: pk.to_owned(),
        body,
        etag: etag_from(response.headers())?,
    })
}

fn if_match(etag: Option<&ETag>) -> Option<ItemWriteOptions> {
    etag.map(|etag| {
        ItemWriteOptions::default().with_precondition(Precondition::IfMatch(etag.as_str().into()))
    })
}

fn envelope(pk: &str, id: &str, body: Json) -> Envelope {
    Envelope {
        id: id.to_owned(),
        pk: pk.to_owned(),
        doc: body,
        ttl: None,
        etag: None,
        written_at: None,
    }
}

#[async_trait]
impl DocumentStore for CosmosStore {
    #[tracing::instrument(name = "cosmos.read", skip_all, fields(container = %container, ru = tracing::field::Empty))]
    async fn read(
        &self,
        container: &str,
        pk: &str,
        id: &str,
    ) -> Result<Option<Document>, StoreError> {
        count(Counted::PointReads, 1);
        match self
            .container(container)?
            .read_item(pk.to_owned(), id, None)
            .await
        {
            Ok(response) => {
                record_charge(response.headers());
                let etag = etag_from(response.headers())?;
                let item: Envelope = response
                    .into_model()
                    .map_err(|e| StoreError::Serialization(Cause::new(e)))?;
                if item.expired() {
                    return Ok(None);
                }
                let mut document = item.into_document()?;
                document.etag = etag;
                Ok(Some(document))
            }
            Err(error) if error.status().is_not_found() => Ok(None),
            Err(error) => Err(map_error(error)),
        }
    }

    #[tracing::instrument(name = "cosmos.find_by_id", skip_all, fields(container = %container, ru = tracing::field::Empty))]
    async fn find_by_id(&self, container: &str, id: &str) -> Result<Option<Document>, StoreError> {
        count(Counted::Queries, 1);
        let query = SqlQuery::from("SELECT TOP 1 * FROM c WHERE c.id = @id ORDER BY c.pk")
            .with_parameter("@id", id)
            .map_err(|e| StoreError::Serialization(Cause::new(e)))?;
        let mut pages = self
            .container(container)?
            .query_items::<Envelope>(query, FeedScope::full_container(), None)
            .await
            .map_err(map_error)?
            .into_pages();
        let mut charge = Charge::default();
        while let Some(page) = pages.try_next().await.map_err(map_error)? {
            charge.add(page.headers());
            if let Some(found) = page.into_items().into_iter().find(|e| !e.expired()) {
                return Ok(Some(found.into_document()?));
            }
        }
        Ok(None)
    }

    #[tracing::instrument(name = "cosmos.create", skip_all, fields(container = %container, ru = tracing::field::Empty))]
    async fn create(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
    ) -> Result<Document, StoreError> {
        let size = super::check_item_size(id, &body)?;
        count(Counted::Writes, 1);
        count(Counted::WrittenBytes, size as u64);
        let response = self
            .container(container)?
            .create_item(pk.to_owned(), id, envelope(pk, id, body.clone()), None)
            .await
            .map_err(map_error)?;
        written(pk, id, body, &response)
    }

    #[tracing::instrument(name = "cosmos.replace", skip_all, fields(container = %container, ru = tracing::field::Empty))]
    async fn replace(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
        expected: Option<&ETag>,
    ) -> Result<Document, StoreError> {
        let size = super::check_item_size(id, &body)?;
        count(Counted::Writes, 1);
        count(Counted::WrittenBytes, size as u64);
        let response = self
            .container(container)?
            .replace_item(
                pk.to_owned(),
                id,
                envelope(pk, id, body.clone()),
                if_match(expected),
            )
            .await
            .map_err(map_error)?;
        written(pk, id, body, &response)
    }

    #[tracing::instrument(name = "cosmos.upsert", skip_all, fields(container = %container, ru = tracing::field::Empty))]
    async fn upsert(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        body: Json,
    ) -> Result<Document, StoreError> {
        let size = super::check_item_size(id, &body)?;
        count(Counted::Writes, 1);
        count(Counted::WrittenBytes, size as u64);
        let response = self
            .container(container)?
            .upsert_item(pk.to_owned(), id, envelope(pk, id, body.clone()), None)
            .await
            .map_err(map_error)?;
        written(pk, id, body, &response)
    }

    #[tracing::instrument(name = "cosmos.delete", skip_all, fields(container = %container, ru = tracing::field::Empty))]
    async fn delete(
        &self,
        container: &str,
        pk: &str,
        id: &str,
        expected: Option<&ETag>,
    ) -> Result<(), StoreError> {
        count(Counted::Writes, 1);
        let response = self
            .container(container)?
            .delete_item(pk.to_owned(), id, if_match(expected))
            .await
            .map_err(map_error)?;
        record_charge(response.headers());
        Ok(())
    }

    #[tracing::instrument(name = "cosmos.query", skip_all, fields(container = %container, ru = tracing::field::Empty))]
    async fn query(&self, container: &str, query: &Query) -> Result<Page, StoreError> {
        count(Counted::Queries, 1);
        let position = query.validated()?;
        let (sql, parameters) = query_sql(query, position);
        let mut sql_query = SqlQuery::from(sql);
        for (name, value) in parameters {
            sql_query = sql_query
                .with_parameter(name, value)
                .map_err(|e| StoreError::Serialization(Cause::new(e)))?;
        }
        let scope = match &query.scope {
            QueryScope::Partition(pk) => FeedScope::partition(pk.clone()),
            QueryScope::AllPartitions => FeedScope::full_container(),
        };
        let options = QueryOptions::default().with_max_item_count(MaxItemCountHint::Limit(
            NonZeroU32::MIN.saturating_add(query.limit),
        ));
        let mut pages = self
            .container(container)?
            .query_items::<Envelope>(sql_query, scope, Some(options))
            .await
            .map_err(map_error)?
            .into_pages();
        let wanted = query.limit as usize + 1;
        let mut items = Vec::new();
        let mut charge = Charge::default();
        while items.len() < wanted {
            match pages.try_next().await.map_err(map_error)? {
                Some(page) => {
                    charge.add(page.headers());
                    for item in page.into_items().into_iter().filter(|e| !e.expired()) {
                        items.push(item.into_document()?);
                    }
                }
                None => break,
            }
        }
        Ok(ContinuationToken::paginate(items, query))
    }

    #[tracing::instrument(name = "cosmos.changes", skip_all, fields(container = %container, ru = tracing::field::Empty))]
    async fn changes(
        &self,
        container: &str,
        since: Option<&Checkpoint>,
        max: usize,
    ) -> Result<ChangeBatch, StoreError> {
        count(Counted::ChangeReads, 1);
        let page_size = NonZeroU32::new(u32::try_from(max.max(1)).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        let mut options =
            ChangeFeedOptions::default().with_max_item_count(MaxItemCountHint::Limit(page_size));
        if let Some(Checkpoint(token)) = since {
            options = options.with_continuation_token(SdkContinuation::from_string(token.clone()));
        }
        let client = self.container(container)?;
        // The SDK walks feed ranges one page at a time, and a resumed iterator starts again
        // at the first range: an empty page only says that one range had nothing, so a call
        // ends after a whole round of empty pages, never sooner (a range holding changes
        // would otherwise starve).
        let ranges = client
            .read_feed_ranges(None)
            .await
            .map_err(map_error)?
            .len();
        let empty_pages_allowed = ranges.max(1);
        let mut pages = client
            .query_change_feed::<Envelope>(
                FeedScope::full_container(),
                ChangeFeedStartFrom::Beginning,
                Some(options),
            )
            .await
            .map_err(|error| match map_error(error) {
                StoreError::Backend(_) if since.is_some() => StoreError::InvalidContinuation,
                other => other,
            })?;
        let mut documents = Vec::new();
        let mut empty_pages = 0;
        let mut charge = Charge::default();
        // One non-empty page ends the call: a page holds at most `max` changes, and the
        // continuation cannot point inside a page, so reading on could only overshoot `max`.
        while documents.is_empty() && empty_pages < empty_pages_allowed {
            let Some(page) = pages.next().await else {
                break;
            };
            let page = page.map_err(map_error)?;
            charge.add(page.headers());
            let before = documents.len();
            for change in page.into_items() {
                if let Some(e) = change.current().filter(|e| !e.expired()) {
                    let envelope = Envelope {
                        id: e.id.clone(),
                        pk: e.pk.clone(),
                        doc: e.doc.clone(),
                        ttl: e.ttl,
                        etag: e.etag.clone(),
                        written_at: e.written_at,
                    };
                    documents.push(envelope.into_document()?);
                }
            }
            if documents.len() == before {
                empty_pages += 1;
            }
        }
        let checkpoint = pages.to_continuation_token().map_err(map_error)?;
        Ok(ChangeBatch {
            documents,
            checkpoint: Checkpoint(checkpoint.as_str().to_owned()),
        })
    }

    #[tracing::instrument(name = "cosmos.batch", skip_all, fields(container = %container, ru = tracing::field::Empty))]
    async fn batch(
        &self,
        container: &str,
        pk: &str,
        operations: Vec<BatchOp>,
    ) -> Result<Vec<Option<ETag>>, StoreError> {
        count(Counted::Writes, operations.len() as u64);
        use azure_data_cosmos::TransactionalBatch;
        use azure_data_cosmos::options::{BatchDeleteOptions, BatchReplaceOptions};

        super::embedded::check_batch_size(&operations)?;
        super::check_batch_bytes(&operations)?;
        let serialization = |e: CosmosError| StoreError::Serialization(Cause::new(e));
        let mut batch = TransactionalBatch::new(pk.to_owned());
        for operation in &operations {
            batch = match operation {
                BatchOp::Create { id, body } => batch
                    .create_item(envelope(pk, id, body.clone()))
                    .map_err(serialization)?,
                BatchOp::CreateExpiring {
                    id,
                    body,
                    ttl_seconds,
                } => batch
                    .create_item(Envelope {
                        ttl: Some(*ttl_seconds),
                        ..envelope(pk, id, body.clone())
                    })
                    .map_err(serialization)?,
                BatchOp::Upsert { id, body } => batch
                    .upsert_item(envelope(pk, id, body.clone()), None)
                    .map_err(serialization)?,
                BatchOp::Replace { id, body, if_match } => {
                    let options = if_match.as_ref().map(|etag| {
                        BatchReplaceOptions::default()
                            .with_precondition(Precondition::IfMatch(etag.as_str().into()))
                    });
                    batch
                        .replace_item(id.clone(), envelope(pk, id, body.clone()), options)
                        .map_err(serialization)?
                }
                BatchOp::Delete { id, if_match } => {
                    let options = if_match.as_ref().map(|etag| {
                        BatchDeleteOptions::default()
                            .with_precondition(Precondition::IfMatch(etag.as_str().into()))
                    });
                    batch.delete_item(id.clone(), options)
                }
            };
        }
        let response = self
            .container(container)?
            .execute_transactional_batch(batch, None)
            .await
            .map_err(map_error)?;
        record_charge(response.headers());
        // A failed batch still answers "Ok" with a status per operation: the first failure
        // (not the 424s of the operations rolled back with it) tells what went wrong.
        let results = response.into_model().map_err(serialization)?;
        let results = results.results();
        if let Some(failed) = results
            .iter()
            .find(|r| !r.is_success() && r.status_code() != 424)
        {
            return Err(match failed.status_code() {
                404 => StoreError::NotFound,
                409 => StoreError::Conflict,
                412 => StoreError::PreconditionFailed,
                429 => StoreError::Throttled {
                    retry_after_ms: failed.retry_after().map_or(1000, |delay| {
                        u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
                    }),
                },
                other => StoreError::Backend(
                    (format!("batch operation failed with status {other}")).into(),
                ),
            });
        }
        if results.len() != operations.len() || results.iter().any(|r| !r.is_success()) {
            return Err(StoreError::Backend(
                "the batch failed without a failing operation".into(),
            ));
        }
        operations
            .iter()
            .zip(results)
            .map(|(operation, result)| match operation {
                BatchOp::Delete { .. } => Ok(None),
                _ => result
                    .etag()
                    .map(|etag| Some(ETag::new(etag)))
                    .ok_or_else(|| {
                        StoreError::Serialization(
                            format!("batch write of {} answered without an ETag", operation.id())
                                .into(),
                        )
                    }),
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Reading a known-missing item is the cheapest authenticated round trip.
        let container = self
            .containers
            .values()
            .next()
            .ok_or_else(|| StoreError::Backend(("no container opened").into()))?;
        match container.read_item("__ping__", "__ping__", None).await {
            Ok(_) => Ok(()),
            Err(error) if error.status().is_not_found() => Ok(()),
            Err(error) => Err(map_error(error)),
        }
    }
}

/// How long the SDK may retry a throttled request (429) by itself before the store
/// answers `Throttled` with the server's delay: bounded, so that a request never waits on
/// throttling longer than the service's own callers would.
pub fn throttle_budget(
    settings: &crate::config::CosmosSettings,
) -> azure_data_cosmos::options::OperationOptions {
    use azure_data_cosmos::options::{OperationOptionsBuilder, ThrottlingRetryOptionsBuilder};
    OperationOptionsBuilder::new()
        .with_throttling_retry_options(
            ThrottlingRetryOptionsBuilder::new()
                .with_max_retry_count(settings.throttle_retries)
                .with_max_retry_wait_time(std::time::Duration::from_millis(
                    settings.throttle_budget_ms,
                ))
                .build(),
        )
        .build()
}

/// Connects to the account in `settings` and opens the service's containers.
pub async fn connect(
    settings: &crate::config::CosmosSettings,
    containers: &[&str],
) -> Result<CosmosStore, StoreError> {
    use azure_data_cosmos::options::Region;
    use azure_data_cosmos::{AccountEndpoint, AccountReference, RoutingStrategy};
    use secrecy::ExposeSecret;

    use crate::config::CosmosCredentialKind;

    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Unavailable((format!("{what}: {e}")).into())
    };
    let endpoint: AccountEndpoint = settings
        .endpoint
        .parse()
        .map_err(|e| unavailable("store.cosmos.endpoint", &e))?;
    let account = match settings.credential {
        CosmosCredentialKind::Key => {
            let key = settings
                .key
                .as_ref()
                .ok_or_else(|| StoreError::Unavailable(("store.cosmos.key is not set").into()))?;
            AccountReference::with_authentication_key(
                endpoint,
                azure_core::credentials::Secret::new(key.expose_secret().to_owned()),
            )
        }
        CosmosCredentialKind::ManagedIdentity => {
            let credential = azure_identity::ManagedIdentityCredential::new(None)
                .map_err(|e| unavailable("managed identity", &e))?;
            AccountReference::with_credential(endpoint, credential)
        }
        CosmosCredentialKind::DeveloperTools => {
            let credential = azure_identity::DeveloperToolsCredential::new(None)
                .map_err(|e| unavailable("developer tools credential", &e))?;
            AccountReference::with_credential(endpoint, credential)
        }
    };
    let client = CosmosClient::builder()
        .with_default_operation_options(throttle_budget(settings))
        .build(
            account,
            RoutingStrategy::ProximityTo(Region::new(settings.region.clone())),
        )
        .await
        .map_err(|e| unavailable("cosmos client", &e))?;
    CosmosStore::open(&client, &settings.database, containers).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::QueryScope;

    /// The SDK's in-memory emulator accepts `c.doc.value`; Cosmos DB itself answers 400,
    /// so the text is checked here.
    #[test]
    fn fields_named_like_sql_keywords_are_quoted_everywhere() {
        let query = Query::new(QueryScope::AllPartitions, 10)
            .filter("value", 1)
            .compare("order", Comparison::Gt, 2)
            .order_by("select", true);
        let position = ContinuationToken {
            after_id: "a".into(),
            after_pk: Some("p".into()),
            after_value: Some(Json::from(3)),
        };
        let (sql, parameters) = query_sql(&query, Some(position));
        for keyword in ["value", "order", "select"] {
            assert!(
                !sql.contains(&format!(".{keyword}")),
                "{keyword} is unquoted in {sql}"
            );
            assert!(sql.contains(&format!("c.doc['{keyword}']")), "{sql}");
        }
        assert!(
            sql.ends_with("ORDER BY c.doc['select'] DESC, c.id ASC, c.pk ASC"),
            "{sql}"
        );
        assert_eq!(parameters.len(), 5);
    }
}
