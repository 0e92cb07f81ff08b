//! Bearer-token authentication and per-route scopes.
//!
//! The [`authenticate`] middleware validates a bearer token when one is sent and leaves the
//! outcome in the request; handlers take a [`Principal`] (401 when the token is missing or
//! bad) and call [`Principal::require`] for their scope (403 when it is missing).

mod dev_secret;
mod jwks;
mod middleware;
mod tokens;
mod verified;

pub use dev_secret::{DevSecretError, load_or_create_dev_secret};
pub use jwks::JwksClient;
pub use middleware::authenticate;
pub use tokens::{AuthError, Authenticator, Claims, mint_dev_token};

use std::collections::BTreeSet;
use std::future::{Ready, ready};

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload};

use crate::error::{ApiError, ErrorCode};

/// Who is calling, as proven by a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub scopes: BTreeSet<String>,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    /// Whether the token grants `scope`: holding it, or holding `platform.operator`, which
    /// grants every service's reading (`*.read`) and administration (`*.admin`) scopes, so
    /// that one operator token serves the console; never a business write (`*.write`).
    pub fn grants(&self, scope: &str) -> bool {
        self.has_scope(scope)
            || (self.has_scope(crate::http::OPERATOR_SCOPE)
                && (scope.ends_with(".read") || scope.ends_with(".admin")))
    }

    /// 403 unless the token grants `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.grants(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("this operation needs the scope `{scope}`"),
            ))
        }
    }
}

/// Why a request carries no [`Principal`]; kept in the request by the middleware.
#[derive(Debug, Clone)]
pub(crate) enum AuthFailure {
    /// The token was refused (401).
    Refused(String),
    /// The token could not be checked: the identity provider is unreachable (503).
    Unverifiable(String),
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let extensions = req.extensions();
        let outcome = if let Some(principal) = extensions.get::<Principal>() {
            Ok(principal.clone())
        } else if let Some(failure) = extensions.get::<AuthFailure>() {
            Err(match failure {
                AuthFailure::Refused(reason) => {
                    ApiError::new(ErrorCode::Unauthenticated, reason.clone())
                }
                AuthFailure::Unverifiable(reason) => {
                    ApiError::new(ErrorCode::Unavailable, reason.clone()).with_retry_after(5)
                }
            })
        } else {
            Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "send an Authorization: Bearer <token> header",
            ))
        };
        ready(outcome)
    }
}
