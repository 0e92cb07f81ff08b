//! Typed dispatch: a subscription's messages are decoded once by their event type and
//! handed to the handler registered for that type, with the event's data already typed.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;

use crate::bus::worker::{HandlerError, MessageHandler};
use crate::bus::{CloudEvent, Message};
use crate::events::EventType;

/// Handles events of type `E`.
#[async_trait]
pub trait Handles<E: EventType>: Send + Sync + 'static {
    async fn handle(&self, event: &CloudEvent, data: E::Data) -> Result<(), HandlerError>;
}

#[async_trait]
trait Route: Send + Sync {
    async fn route(&self, event: &CloudEvent) -> Result<(), HandlerError>;
}

struct TypedRoute<E, H> {
    handler: Arc<H>,
    event: PhantomData<fn() -> E>,
}

#[async_trait]
impl<E: EventType, H: Handles<E>> Route for TypedRoute<E, H> {
    async fn route(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        let data = E::data(event).map_err(HandlerError::Permanent)?;
        self.handler.handle(event, data).await
    }
}

/// The handlers of one subscription, by event type.
#[derive(Default, Clone)]
pub struct Dispatcher {
    routes: BTreeMap<&'static str, Arc<dyn Route>>,
}

impl Dispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes events of type `E` to `handler`.
    pub fn on<E: EventType, H: Handles<E>>(mut self, handler: Arc<H>) -> Self {
        self.routes.insert(
            E::TYPE,
            Arc::new(TypedRoute::<E, H> {
                handler,
                event: PhantomData,
            }),
        );
        self
    }

    /// The event types routed, sorted.
    pub fn event_types(&self) -> Vec<&'static str> {
        self.routes.keys().copied().collect()
    }

    /// Handles one event by its type.
    pub async fn dispatch(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        match self.routes.get(event.event_type.as_str()) {
            Some(route) => route.route(event).await,
            // The subscription's filter keeps other types away; one that slips through (a
            // filter changed while messages were queued) is not this service's business.
            None => {
                tracing::debug!(event_type = %event.event_type, "no handler for this event type; completed");
                Ok(())
            }
        }
    }
}

#[async_trait]
impl MessageHandler for Dispatcher {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        self.dispatch(&message.event).await
    }
}
