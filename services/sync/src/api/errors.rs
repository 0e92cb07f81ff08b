use common::ApiError;

use crate::imports::ImportError;

/// The one place import errors become problems.
impl From<ImportError> for ApiError {
    fn from(error: ImportError) -> Self {
        match error {
            ImportError::NotFound(id) => ApiError::not_found(format!("import {id}")),
            ImportError::Files(error) => error.into(),
            ImportError::Store(error) => error.into(),
        }
    }
}
