//! Reconciliation: what a connector has not taken is sent again, and stock levels are pulled
//! from the connectors that are stock sources into the catalog, each drift reported. Run by
//! the `reconcile` timer and on request; each run is kept as a report.
//!
//! Container `reconciliations`: one report per run (id = partition key). Container `timers`:
//! one item per timer (id = partition key = its name), the last scheduled time it ran for.

use std::str::FromStr;
use std::time::Duration;

use common::clock::now_ms;
use common::outbound::targets;
use common::store::{Query, QueryScope, SharedStore, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::catalog_client::{CatalogCallError, CatalogClient};
use crate::connectors::{ConnectorError, Connectors};
use crate::domain::connector::{Connector, Entity};
use crate::domain::schedule::due;

pub const RECONCILIATIONS: &str = "reconciliations";
pub const TIMERS: &str = "timers";
/// Stock levels read from one source at most.
const MAX_LEVELS: usize = 100_000;
/// Bytes of a stock source's answer read at most.
const MAX_SOURCE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Connectors(#[from] ConnectorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A SKU whose stock differed between a source and the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    pub sku: String,
    /// On hand in the catalog before the run (`None`: no such product).
    pub catalog: Option<i64>,
    pub source: i64,
    /// Whether the catalog now says what the source says.
    pub fixed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one stock source gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceReport {
    pub connector_id: String,
    pub connector: String,
    /// SKUs compared.
    pub checked: u64,
    pub drift: Vec<Drift>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub id: String,
    /// `timer` or `request`.
    pub trigger: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: i64,
    /// Parked deliveries sent again.
    pub resent: u64,
    pub sources: Vec<SourceReport>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Level {
    sku: String,
    on_hand: i64,
}

/// A source answers a list of levels, or an object holding it as `items`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Levels {
    List(Vec<Level>),
    Page { items: Vec<Level> },
}

#[derive(Clone)]
pub struct Reconciler {
    store: SharedStore,
    connectors: Connectors,
    catalog: CatalogClient,
    http: common::outbound::LazyClient,
    allow_private: bool,
}

impl Reconciler {
    pub fn new(
        store: SharedStore,
        connectors: Connectors,
        catalog: CatalogClient,
        timeout: Duration,
        allow_private: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            store,
            connectors,
            catalog,
            http: targets::lazy_client(timeout, allow_private),
            allow_private,
        })
    }

    /// One run: resend what is parked, pull every stock source; the report is kept.
    #[tracing::instrument(name = "reconcile", skip(self))]
    pub async fn run(&self, trigger: &str) -> Result<Report, ReconcileError> {
        let started_at = now_ms();
        let mut resent = 0u64;
        let mut sources = Vec::new();
        for connector in self.connectors.list().await? {
            resent += self.connectors.retry(&connector.id).await? as u64;
            if connector.wants(Entity::StockSource) {
                sources.push(self.pull(&connector).await);
            }
        }
        let report = Report {
            id: uuid::Uuid::now_v7().to_string(),
            trigger: trigger.to_owned(),
            started_at,
            finished_at: now_ms(),
            resent,
            sources,
        };
        let body =
            serde_json::to_value(&report).map_err(|e| StoreError::Serialization(e.into()))?;
        self.store
            .create(RECONCILIATIONS, &report.id, &report.id, body)
            .await?;
        let drift: usize = report.sources.iter().map(|s| s.drift.len()).sum();
        tracing::info!(resent, drift, "reconciliation finished");
        Ok(report)
    }

    /// Reads the source's levels and counts the catalog's stock where they differ.
    async fn pull(&self, connector: &Connector) -> SourceReport {
        let mut report = SourceReport {
            connector_id: connector.id.clone(),
            connector: connector.name.clone(),
            checked: 0,
            drift: Vec::new(),
            error: None,
        };
        let levels = match self.levels(connector).await {
            Ok(levels) => levels,
            Err(reason) => {
                tracing::warn!(connector = %connector.id, %reason, "stock source unreadable");
                report.error = Some(reason);
                return report;
            }
        };
        for level in levels {
            report.checked += 1;
            let catalog = match self.catalog.on_hand(&level.sku).await {
                Ok(catalog) => catalog,
                Err(error) => {
                    report.drift.push(Drift {
                        sku: level.sku,
                        catalog: None,
                        source: level.on_hand,
                        fixed: false,
                        error: Some(error.to_string()),
                    });
                    continue;
                }
            };
            if catalog == Some(level.on_hand) {
                continue;
            }
            let outcome = match catalog {
                None => Err("the catalog has no such product".to_owned()),
                Some(_) => self
                    .catalog
                    .count(&level.sku, level.on_hand)
                    .await
                    .map_err(|e: CatalogCallError| e.to_string()),
            };
            report.drift.push(Drift {
                sku: level.sku,
                catalog,
                source: level.on_hand,
                fixed: outcome.is_ok(),
                error: outcome.err(),
            });
        }
        report
    }

    async fn levels(&self, connector: &Connector) -> Result<Vec<Level>, String> {
        targets::check_url(&connector.url, self.allow_private).map_err(|e| format!("url {e}"))?;
        let mut request = self
            .http
            .get()
            .map_err(|e| format!("no HTTP client: {e}"))?
            .get(&connector.url)
            .header("accept", "application/json");
        if let crate::domain::connector::ConnectorAuth::Bearer { token } = &connector.auth {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("not reached: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let excerpt = targets::excerpt(response, 300).await;
            return Err(format!("answered {status}: {excerpt}"));
        }
        let body = targets::excerpt(response, MAX_SOURCE_BYTES).await;
        let levels = match serde_json::from_str::<Levels>(&body) {
            Ok(Levels::List(levels) | Levels::Page { items: levels }) => levels,
            Err(error) => {
                return Err(format!(
                    "not a list of {{sku, onHand}} (nor {{items: [...]}}): {error}"
                ));
            }
        };
        if levels.len() > MAX_LEVELS {
            return Err(format!("more than {MAX_LEVELS} levels"));
        }
        Ok(levels)
    }

    /// Reports, newest first.
    pub async fn reports(
        &self,
        limit: u32,
        continuation: Option<String>,
    ) -> Result<(Vec<Report>, Option<String>), ReconcileError> {
        let query = Query::new(QueryScope::AllPartitions, limit)
            .order_by("startedAt", true)
            .continue_from(continuation);
        let page = self.store.query(RECONCILIATIONS, &query).await?;
        let reports = page
            .items
            .into_iter()
            .map(|d| d.into_model::<Report>().map(|(r, _)| r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((reports, page.continuation))
    }
}

/// A timer: a job run on a cron schedule (UTC), once per scheduled time across every
/// instance, and once at start for a time missed while nothing ran.
pub struct Timer {
    pub name: &'static str,
    pub schedule: croner::Cron,
}

impl Timer {
    /// `expression`: a cron expression (five fields, or six with seconds first).
    pub fn parse(name: &'static str, expression: &str) -> Result<Self, String> {
        croner::Cron::from_str(expression)
            .map(|schedule| Self { name, schedule })
            .map_err(|e| e.to_string())
    }

    fn latest_at_or_before(&self, now_ms: i64) -> Option<i64> {
        let now = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now_ms)?;
        self.schedule
            .find_previous_occurrence(&now, true)
            .ok()
            .map(|at| at.timestamp_millis())
    }

    fn next_after(&self, now_ms: i64) -> Option<i64> {
        let now = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now_ms)?;
        self.schedule
            .find_next_occurrence(&now, false)
            .ok()
            .map(|at| at.timestamp_millis())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimerState {
    last_scheduled: i64,
}

/// Claims the scheduled time that is due, if any: true when this instance is to run it.
async fn claim(store: &SharedStore, timer: &Timer, now: i64) -> Result<bool, StoreError> {
    let latest = timer.latest_at_or_before(now);
    let Some(document) = store.read(TIMERS, timer.name, timer.name).await? else {
        // First sight of the timer: nothing was missed; it waits for its next time.
        let state = TimerState {
            last_scheduled: latest.unwrap_or(now),
        };
        let body = serde_json::to_value(&state).map_err(|e| StoreError::Serialization(e.into()))?;
        return match store.create(TIMERS, timer.name, timer.name, body).await {
            Ok(_) | Err(StoreError::Conflict) => Ok(false),
            Err(other) => Err(other),
        };
    };
    let (state, etag): (TimerState, _) = document.into_model()?;
    let Some(scheduled) = due(latest, Some(state.last_scheduled)) else {
        return Ok(false);
    };
    let body = serde_json::to_value(&TimerState {
        last_scheduled: scheduled,
    })
    .map_err(|e| StoreError::Serialization(e.into()))?;
    match store
        .replace(TIMERS, timer.name, timer.name, body, Some(&etag))
        .await
    {
        Ok(_) => Ok(true),
        // Another instance took this one.
        Err(StoreError::PreconditionFailed | StoreError::NotFound) => Ok(false),
        Err(other) => Err(other),
    }
}

/// Runs the reconciliation timer until `stop`.
pub async fn run_timer(
    store: SharedStore,
    timer: Timer,
    reconciler: Reconciler,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        let now = now_ms();
        match claim(&store, &timer, now).await {
            Ok(true) => {
                if let Err(error) = reconciler.run("timer").await {
                    tracing::warn!(timer = timer.name, %error, "timer run failed");
                }
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(timer = timer.name, %error, "timer state unreadable"),
        }
        let wait = timer
            .next_after(now_ms())
            .map_or(Duration::from_secs(60), |next| {
                Duration::from_millis(u64::try_from(next - now_ms()).unwrap_or(0).max(10))
            });
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// The document a report is shown as.
pub fn report_view(report: &Report) -> Value {
    let at = common::clock::rfc3339;
    serde_json::json!({
        "id": report.id,
        "trigger": report.trigger,
        "startedAt": at(report.started_at),
        "finishedAt": at(report.finished_at),
        "resent": report.resent,
        "sources": report.sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_knows_its_last_and_next_time() {
        let timer = Timer::parse("t", "0 */15 * * * *").unwrap();
        // 2026-11-26T10:07:30Z
        let now = 1_795_687_650_000;
        let latest = timer.latest_at_or_before(now).unwrap();
        let next = timer.next_after(now).unwrap();
        assert_eq!(latest % (15 * 60 * 1000), 0);
        assert_eq!(next - latest, 15 * 60 * 1000);
        assert!(latest <= now && now < next);
        assert!(Timer::parse("t", "every now and then").is_err());
    }

    fn store() -> (SharedStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = common::store::embedded::EmbeddedStore::open(
            &dir.path().join("sync.db"),
            common::store::embedded::Durability::Normal,
        )
        .unwrap();
        (std::sync::Arc::new(store), dir)
    }

    const MINUTE: i64 = 60_000;

    #[tokio::test]
    async fn each_time_runs_once_across_instances_and_a_missed_one_runs_at_start() {
        let (store, _dir) = store();
        let timer = Timer::parse("reconcile", "0 * * * * *").unwrap();
        let start = 1_795_687_200_000; // on a minute
        // First sight: nothing missed.
        assert!(!claim(&store, &timer, start + 1_000).await.unwrap());
        // The next minute: two instances race for it; one runs it.
        let (a, b) = tokio::join!(
            claim(&store, &timer, start + MINUTE + 10),
            claim(&store, &timer, start + MINUTE + 20)
        );
        assert!(a.unwrap() ^ b.unwrap(), "exactly one instance runs it");
        assert!(!claim(&store, &timer, start + MINUTE + 30).await.unwrap());
        // Down for an hour: the missed times are one run at start, then none until the next.
        assert!(
            claim(&store, &timer, start + 61 * MINUTE + 5)
                .await
                .unwrap()
        );
        assert!(
            !claim(&store, &timer, start + 61 * MINUTE + 50)
                .await
                .unwrap()
        );
        assert!(claim(&store, &timer, start + 62 * MINUTE).await.unwrap());
    }
}
