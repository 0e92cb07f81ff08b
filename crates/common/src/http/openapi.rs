use utoipa::Modify;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// Declares the `bearer` (JWT) security scheme that every service's routes name.
pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

use serde_json::{Map, Value, json};

use crate::error::{ErrorCode, PROBLEM_CONTENT_TYPE};

/// Makes a service's OpenAPI document say what the shared HTTP layer answers on every
/// route, so that the document tells the whole truth: errors are `application/problem+json`
/// (never `application/json`), and the statuses the middleware and the extractors produce
/// (authentication, rate limits, timeouts, bodies, storage) are listed for each operation.
pub fn complete(mut document: Value) -> Value {
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return document;
    };
    for (path, item) in paths.iter_mut() {
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in operations.iter_mut() {
            let has_body = operation.get("requestBody").is_some();
            let has_query = operation
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|parameters| parameters.iter().any(|p| p["in"] == "query"));
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                if status.starts_with('4') || status.starts_with('5') {
                    as_problem(response, &problem);
                }
            }
            let mut codes = vec![
                ErrorCode::MalformedRequest,
                ErrorCode::Unauthenticated,
                ErrorCode::Forbidden,
                ErrorCode::RequestTimeout,
                ErrorCode::HeadersTooLarge,
                ErrorCode::RateLimited,
                ErrorCode::Internal,
                ErrorCode::Unavailable,
            ];
            if has_body {
                codes.extend([
                    ErrorCode::PayloadTooLarge,
                    ErrorCode::UnsupportedMediaType,
                    ErrorCode::ValidationFailed,
                ]);
            }
            if has_query && !has_body {
                codes.push(ErrorCode::ValidationFailed);
            }
            if path.contains('{') {
                codes.push(ErrorCode::NotFound);
            }
            if matches!(method.as_str(), "post" | "put" | "delete" | "patch") {
                codes.extend([ErrorCode::Conflict, ErrorCode::InsufficientStorage]);
            }
            if matches!(method.as_str(), "put" | "delete") {
                codes.push(ErrorCode::PreconditionFailed);
            }
            if method == "put" {
                codes.push(ErrorCode::PreconditionRequired);
            }
            for code in codes {
                responses
                    .entry(code.status().as_u16().to_string())
                    .or_insert_with(|| {
                        json!({
                            "description": code.title(),
                            "content": {PROBLEM_CONTENT_TYPE: {"schema": problem}},
                        })
                    });
            }
        }
    }
    document
}

/// A response documented as JSON that is in truth a problem.
fn as_problem(response: &mut Value, problem: &Value) {
    let Some(content) = response.get_mut("content").and_then(Value::as_object_mut) else {
        if let Some(fields) = response.as_object_mut() {
            let mut content = Map::new();
            content.insert(PROBLEM_CONTENT_TYPE.to_owned(), json!({"schema": problem}));
            fields.insert("content".to_owned(), Value::Object(content));
        }
        return;
    };
    if let Some(json) = content.remove("application/json") {
        content.insert(PROBLEM_CONTENT_TYPE.to_owned(), json);
    }
}
