//! The events notifications asks the bus for: those its webhook endpoints want (any status:
//! a paused or disabled endpoint still keeps its messages) and, with e-mail on, the order
//! events it mails about. Its three bus subscriptions take nothing else
//! ([`common::bus::type_rules`]), so an event nobody here wants costs no receive, no store
//! read and no settlement.

use std::time::Duration;

use common::bus::type_rules::{self, Asked};
use common::bus::{BusError, SharedBus};
use common::clock::now_ms;
use common::events::{EventType, OrderCancelled, OrderConfirmed, OrderRejected};
use common::runtime::SubscriptionSpec;
use tokio::sync::watch;

use crate::domain::filter::wants;
use crate::domain::subscription::Subscription;
use crate::startup::DESCRIPTOR;

/// The events mailed about (to an order's `contactEmail`).
pub const MAILED: &[&str] = &[
    OrderConfirmed::TYPE,
    OrderRejected::TYPE,
    OrderCancelled::TYPE,
];

/// How often the rules are made to match the endpoints again: twice a rule period, so that
/// a deleted endpoint's rule goes within three periods.
const EVERY: Duration = Duration::from_secs(type_rules::PERIOD.as_secs() / 2);

#[derive(Clone)]
pub struct WantedEvents {
    bus: SharedBus,
    mail: bool,
}

/// What [`WantedEvents::ask`] asked for, to be confirmed once the change is committed.
pub struct Asking {
    asked: Vec<(&'static SubscriptionSpec, Vec<String>, Asked)>,
}

/// The types of each bus subscription that `filters` (an endpoint's `eventTypes`) take.
fn per_subscription(filters: &[String]) -> Vec<(&'static SubscriptionSpec, Vec<String>)> {
    DESCRIPTOR
        .subscriptions
        .iter()
        .map(|spec| {
            let types = spec
                .event_types
                .iter()
                .filter(|t| wants(filters, t))
                .map(|t| (*t).to_owned())
                .collect();
            (spec, types)
        })
        .collect()
}

impl WantedEvents {
    pub fn new(bus: SharedBus, mail: bool) -> Self {
        Self { bus, mail }
    }

    /// Lets in what an endpoint with `filters` wants: before its change is committed.
    pub async fn ask(&self, filters: &[String]) -> Result<Asking, BusError> {
        let mut asked = Vec::new();
        for (spec, types) in per_subscription(filters) {
            if types.is_empty() {
                continue;
            }
            let ask = type_rules::ask(self.bus.as_ref(), spec.topic, spec.name, &types).await?;
            asked.push((spec, types, ask));
        }
        Ok(Asking { asked })
    }

    /// After the change was committed (see [`type_rules::asked`]). A failure is only
    /// logged: the change is made, and the next [`Self::reconcile`] adds what is missing.
    pub async fn asked(&self, asking: Asking) {
        for (spec, types, asked) in asking.asked {
            if let Err(error) =
                type_rules::asked(asked, self.bus.as_ref(), spec.topic, spec.name, &types).await
            {
                tracing::warn!(%error, subscription = spec.name, "the bus could not be asked again for an endpoint's events");
            }
        }
    }

    /// Makes each bus subscription's rules match `endpoints` (every one, read from the
    /// store at `read_at_ms`, just before) and the mail.
    pub async fn reconcile(
        &self,
        endpoints: &[Subscription],
        read_at_ms: i64,
    ) -> Result<(), BusError> {
        let mailed: Vec<String> = MAILED.iter().map(|t| (*t).to_owned()).collect();
        let wishes = endpoints
            .iter()
            .map(|endpoint| endpoint.event_types.as_slice())
            .chain(self.mail.then_some(mailed.as_slice()));
        let mut wanted: Vec<Vec<Vec<String>>> = vec![Vec::new(); DESCRIPTOR.subscriptions.len()];
        for filters in wishes {
            for (index, (_, types)) in per_subscription(filters).into_iter().enumerate() {
                wanted[index].push(types);
            }
        }
        for (spec, wanted) in DESCRIPTOR.subscriptions.iter().zip(wanted) {
            let plan = type_rules::reconcile(
                self.bus.as_ref(),
                spec.topic,
                spec.name,
                &wanted,
                read_at_ms,
            )
            .await?;
            if plan != type_rules::Plan::default() {
                tracing::info!(subscription = spec.name, added = ?plan.add, removed = ?plan.remove, "bus rules changed to what endpoints want");
            }
        }
        Ok(())
    }
}

/// Reconciles every five minutes until `stop` (the start reconciled once already).
pub async fn run(
    wanted: WantedEvents,
    subscriptions: crate::subscriptions::Subscriptions,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        if let Err(error) = reconcile_now(&wanted, &subscriptions).await {
            tracing::warn!(%error, "the bus rules could not be matched to the endpoints");
        }
    }
}

/// One pass: every endpoint read from the store, then the rules matched to them.
pub async fn reconcile_now(
    wanted: &WantedEvents,
    subscriptions: &crate::subscriptions::Subscriptions,
) -> Result<(), String> {
    let read_at = now_ms();
    let endpoints = subscriptions
        .from_store()
        .await
        .map_err(|e| e.to_string())?;
    wanted
        .reconcile(&endpoints, read_at)
        .await
        .map_err(|e| e.to_string())
}

/// The pass, as a custom handler's timer runs it.
pub struct ReconcileTick {
    pub wanted: WantedEvents,
    pub subscriptions: crate::subscriptions::Subscriptions,
}

#[async_trait::async_trait]
impl common::runtime::functions::Tick for ReconcileTick {
    async fn tick(&self) -> Result<(), String> {
        reconcile_now(&self.wanted, &self.subscriptions).await
    }
}
