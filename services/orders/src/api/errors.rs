use common::{ApiError, ErrorCode, FieldError};

use crate::catalog_client::CatalogError;
use crate::domain::OrderError;
use crate::orders::OrdersError;

/// The one place orders errors become problems.
impl From<OrdersError> for ApiError {
    fn from(error: OrdersError) -> Self {
        match error {
            OrdersError::NotFound(id) => ApiError::not_found(format!("order {id}")),
            OrdersError::UnknownProducts(unknown) => ApiError::validation(
                unknown
                    .into_iter()
                    .map(|(index, sku)| {
                        FieldError::new(
                            format!("lines.{index}.sku"),
                            format!("product {sku} does not exist"),
                        )
                    })
                    .collect(),
            ),
            OrdersError::Catalog(CatalogError::Unavailable(cause)) => {
                tracing::warn!(%cause, "catalog unavailable");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the catalog cannot be reached to price the order; retry later",
                )
                .with_retry_after(5)
            }
            OrdersError::Catalog(CatalogError::Failed(cause)) => {
                tracing::warn!(%cause, "catalog failed");
                ApiError::new(
                    ErrorCode::DependencyFailed,
                    "the catalog failed while pricing the order",
                )
            }
            OrdersError::Catalog(CatalogError::UnknownProduct(sku)) => {
                ApiError::validation(vec![FieldError::new(
                    "lines",
                    format!("product {sku} does not exist"),
                )])
            }
            OrdersError::Rule(rule @ OrderError::Transition { .. }) => {
                ApiError::new(ErrorCode::Conflict, rule.to_string())
            }
            OrdersError::Rule(rule) => {
                ApiError::validation(vec![FieldError::new("lines", rule.to_string())])
            }
            OrdersError::IdempotencyMismatch => ApiError::validation(vec![FieldError::new(
                "Idempotency-Key",
                "was used before with a different request; use a new key",
            )]),
            OrdersError::StaleETag => ApiError::new(
                ErrorCode::PreconditionFailed,
                "the order changed since the ETag in If-Match; read it again",
            ),
            OrdersError::Store(store) => store.into(),
        }
    }
}
