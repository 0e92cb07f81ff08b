//! Gauges whose value needs an await (a look at the bus or the store): sampled before the
//! metrics are read or pushed, never on a hot path.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, ObservableGauge};

/// One gauge's current points: attributes and value.
pub type Points = Vec<(Vec<KeyValue>, f64)>;

/// Looks the figures up; a failed look answers no points (the gauge then shows nothing
/// rather than a stale or invented value).
pub type GaugeProbe = Arc<dyn Fn() -> BoxFuture<'static, Points> + Send + Sync>;

pub struct Probes {
    meter: Meter,
    entries: Mutex<Vec<Entry>>,
}

struct Entry {
    probe: GaugeProbe,
    last: Arc<Mutex<Points>>,
    // Kept so that the callback lives as long as the service.
    _gauge: ObservableGauge<f64>,
}

impl Probes {
    pub(super) fn new(meter: &Meter) -> Self {
        Self {
            meter: meter.clone(),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// Registers the gauge `name`, valued by `probe` at each sampling.
    pub fn gauge(
        &self,
        name: &'static str,
        unit: &'static str,
        description: &'static str,
        probe: GaugeProbe,
    ) {
        let last: Arc<Mutex<Points>> = Arc::default();
        let read = last.clone();
        let gauge = self
            .meter
            .f64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                if let Ok(points) = read.lock() {
                    for (attributes, value) in points.iter() {
                        observer.observe(*value, attributes);
                    }
                }
            })
            .build();
        if let Ok(mut entries) = self.entries.lock() {
            entries.push(Entry {
                probe,
                last,
                _gauge: gauge,
            });
        }
    }

    /// Runs every probe (one after another: they share the store and the bus with the
    /// service's own work) and keeps their points for the next collection.
    pub async fn sample(&self) {
        let probes: Vec<(GaugeProbe, Arc<Mutex<Points>>)> = match self.entries.lock() {
            Ok(entries) => entries
                .iter()
                .map(|entry| (entry.probe.clone(), entry.last.clone()))
                .collect(),
            Err(_) => return,
        };
        for (probe, last) in probes {
            let points = probe().await;
            if let Ok(mut last) = last.lock() {
                *last = points;
            }
        }
    }
}
