use common::{ApiError, ErrorCode};

use crate::catalog::CatalogError;

/// The one place catalog errors become problems.
impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::NotFound(sku) => ApiError::not_found(format!("product {sku}")),
            CatalogError::AlreadyExists(sku) => {
                ApiError::new(ErrorCode::Conflict, format!("product {sku} already exists"))
            }
            CatalogError::StaleETag => ApiError::new(
                ErrorCode::PreconditionFailed,
                "the resource changed since the ETag in If-Match; read it again",
            ),
            CatalogError::Contended(sku) => ApiError::new(
                ErrorCode::Unavailable,
                format!("the stock of {sku} is being changed by others; retry"),
            )
            .with_retry_after(1),
            CatalogError::Stock(rule) => ApiError::new(ErrorCode::Conflict, rule.to_string()),
            error @ CatalogError::Reserved(_) => {
                ApiError::new(ErrorCode::Conflict, error.to_string())
            }
            CatalogError::Store(store) => store.into(),
        }
    }
}
