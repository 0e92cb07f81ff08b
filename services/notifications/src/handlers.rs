//! Every event notifications takes: stored as a message for each webhook subscription that
//! wants it, and, for orders that name a contact address, mailed.

use std::sync::Arc;

use async_trait::async_trait;
use common::bus::CloudEvent;
use common::bus::worker::HandlerError;
use common::events::{
    EndpointDisabled, EventType, OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected,
    ProductChanged, ProductDeleted, StockChanged, StockReleased, StockReservationFailed,
    StockReserved,
};
use common::runtime::{Dispatcher, Handles};

use crate::deliveries::Deliveries;
use crate::mail::{MailError, Mailer};

pub struct Fanout {
    pub deliveries: Deliveries,
    pub mailer: Arc<Mailer>,
}

impl Fanout {
    async fn webhooks(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        self.deliveries
            .enqueue(event)
            .await
            .map(drop)
            .map_err(|e| HandlerError::Transient(e.to_string()))
    }

    async fn mail(&self, event: &CloudEvent, contact: Option<&str>) -> Result<(), HandlerError> {
        let Some(recipient) = contact else {
            return Ok(());
        };
        match self
            .mailer
            .send_once(&event.id, &event.event_type, recipient, &event.data)
            .await
        {
            Ok(()) => Ok(()),
            Err(error @ (MailError::Build(_) | MailError::Template { .. })) => {
                Err(HandlerError::Permanent(error.to_string()))
            }
            Err(error) => Err(HandlerError::Transient(error.to_string())),
        }
    }
}

macro_rules! fans_out {
    ($($event:ty),+ $(,)?) => {
        $(
            #[async_trait]
            impl Handles<$event> for Fanout {
                async fn handle(
                    &self,
                    event: &CloudEvent,
                    _data: <$event as EventType>::Data,
                ) -> Result<(), HandlerError> {
                    self.webhooks(event).await
                }
            }
        )+
    };
}

fans_out!(
    OrderPlaced,
    StockReserved,
    StockReservationFailed,
    StockReleased,
    ProductChanged,
    ProductDeleted,
    StockChanged,
    EndpointDisabled,
);

macro_rules! fans_out_and_mails {
    ($($event:ty),+ $(,)?) => {
        $(
            #[async_trait]
            impl Handles<$event> for Fanout {
                async fn handle(
                    &self,
                    event: &CloudEvent,
                    data: <$event as EventType>::Data,
                ) -> Result<(), HandlerError> {
                    self.webhooks(event).await?;
                    self.mail(event, data.contact_email.as_deref()).await
                }
            }
        )+
    };
}

// The bus lets these in for the mail even when no webhook wants them: `wanted::MAILED`.
fans_out_and_mails!(OrderConfirmed, OrderRejected, OrderCancelled);

/// The dispatchers of notifications' three subscriptions.
pub fn dispatchers(fanout: Arc<Fanout>) -> (Dispatcher, Dispatcher, Dispatcher) {
    let orders = Dispatcher::new()
        .on::<OrderPlaced, _>(fanout.clone())
        .on::<OrderConfirmed, _>(fanout.clone())
        .on::<OrderRejected, _>(fanout.clone())
        .on::<OrderCancelled, _>(fanout.clone());
    let catalog = Dispatcher::new()
        .on::<StockReserved, _>(fanout.clone())
        .on::<StockReservationFailed, _>(fanout.clone())
        .on::<StockReleased, _>(fanout.clone())
        .on::<ProductChanged, _>(fanout.clone())
        .on::<ProductDeleted, _>(fanout.clone())
        .on::<StockChanged, _>(fanout.clone());
    let own = Dispatcher::new().on::<EndpointDisabled, _>(fanout);
    (orders, catalog, own)
}
