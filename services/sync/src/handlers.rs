//! Order and product events, queued for the connectors that asked for them.

use async_trait::async_trait;
use common::bus::CloudEvent;
use common::bus::worker::HandlerError;
use common::events::{
    EventType, OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected, ProductChanged,
    ProductDeleted, StockChanged,
};
use common::runtime::Handles;

use crate::connectors::Connectors;

pub struct Replication {
    pub connectors: Connectors,
}

impl Replication {
    async fn queue(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        self.connectors
            .enqueue(event)
            .await
            .map(|_| ())
            .map_err(|e| HandlerError::Transient(e.to_string()))
    }
}

macro_rules! replicates {
    ($($event:ty),+ $(,)?) => {
        $(
            #[async_trait]
            impl Handles<$event> for Replication {
                async fn handle(
                    &self,
                    event: &CloudEvent,
                    _data: <$event as EventType>::Data,
                ) -> Result<(), HandlerError> {
                    self.queue(event).await
                }
            }
        )+
    };
}

replicates!(
    OrderPlaced,
    OrderConfirmed,
    OrderRejected,
    OrderCancelled,
    ProductChanged,
    ProductDeleted,
    StockChanged,
);
