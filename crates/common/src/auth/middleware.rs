use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};

use super::{AuthFailure, Authenticator};

/// Validates the bearer token, if any, and records the outcome for the [`super::Principal`]
/// extractor. Never rejects by itself: health and OpenAPI routes need no token.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let token = req.headers().get(header::AUTHORIZATION).map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|text| {
                let (scheme, token) = text.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_owned())
            })
            .ok_or(())
    });
    if let Some(token) = token {
        let authenticator = req.app_data::<web::Data<Authenticator>>().cloned();
        match (token, authenticator) {
            (Ok(token), Some(authenticator)) => match authenticator.validate(&token).await {
                Ok(principal) => {
                    tracing::Span::current().record("client", principal.subject.as_str());
                    req.extensions_mut().insert(principal);
                }
                Err(error @ super::AuthError::KeysUnavailable) => {
                    req.extensions_mut()
                        .insert(AuthFailure::Unverifiable(format!(
                            "the token cannot be checked now: {error}; retry"
                        )));
                }
                Err(error) => {
                    req.extensions_mut()
                        .insert(AuthFailure::Refused(error.to_string()));
                }
            },
            (Err(()), _) => {
                req.extensions_mut().insert(AuthFailure::Refused(
                    "the Authorization header must be `Bearer <token>`".into(),
                ));
            }
            (Ok(_), None) => {
                req.extensions_mut().insert(AuthFailure::Unverifiable(
                    "this service has no authenticator configured".into(),
                ));
            }
        }
    }
    next.call(req).await
}
