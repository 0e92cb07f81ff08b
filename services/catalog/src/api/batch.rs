//! `POST /v2/products:batch`: up to [`MAX_BATCH_ITEMS`] products upserted by SKU, with their
//! stock counts, each item's outcome reported (a bad item never stops the others).

use std::collections::BTreeSet;

use actix_web::{HttpResponse, web};
use common::auth::Principal;
use common::error::Problem;
use common::validation::{Fields, JsonObject};
use common::{ApiError, FieldError};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

use super::WRITE_SCOPE;
use super::representation::{ProductInputV2, Version, read_draft};
use crate::bulk::{UpsertItem, UpsertOutcome};
use crate::catalog::Catalog;
use crate::domain::stock::MAX_ON_HAND;

/// Items one batch may hold.
pub const MAX_BATCH_ITEMS: usize = 1000;

/// The body of `POST /v2/products:batch`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct ProductBatchInput {
    /// 1 to 1,000 products, each a v2 product with an optional `onHand`; a SKU at most once.
    #[schema(min_items = 1, max_items = 1000)]
    items: Vec<ProductBatchItemInput>,
}

/// A v2 product, and the stock on hand (`onHand`) when the caller counts it.
pub struct ProductBatchItemInput;

impl utoipa::PartialSchema for ProductBatchItemInput {
    fn schema() -> RefOr<Schema> {
        let mut schema = <ProductInputV2 as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            let on_hand = ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(MAX_ON_HAND))
                .description(Some("0 to 1,000,000,000; not below what is reserved."));
            object
                .properties
                .insert("onHand".to_owned(), on_hand.into());
            object.description = None;
        }
        schema
    }
}

impl ToSchema for ProductBatchItemInput {}

/// What happened to one item.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    /// The item's position in the request, from 0.
    index: usize,
    /// The item's SKU, when it had a readable one.
    #[serde(skip_serializing_if = "Option::is_none")]
    sku: Option<String>,
    /// `created`, `updated`, `unchanged` or `failed`.
    status: &'static str,
    /// Why a failed item was not applied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError>,
}

/// Each item's outcome, in request order, and the counts.
#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    items: Vec<ItemResult>,
    created: usize,
    updated: usize,
    unchanged: usize,
    failed: usize,
}

/// One item read from the request: ready to apply, or refused with its reasons.
enum ReadItem {
    Valid(UpsertItem),
    Invalid {
        sku: Option<String>,
        errors: Vec<FieldError>,
    },
}

fn read_item(mut object: JsonObject, seen: &mut BTreeSet<String>) -> ReadItem {
    let sku = object
        .get("sku")
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    let mut stock = JsonObject::default();
    if let Some(raw) = object.remove("onHand") {
        stock.insert("onHand".to_owned(), raw);
    }
    let mut stock_fields = Fields::new(stock);
    let on_hand = stock_fields.integer("onHand", false, 0..=MAX_ON_HAND);
    let mut errors = Vec::new();
    if let Err(error) = stock_fields.finish(Some(())) {
        errors.extend(error.errors);
    }
    let draft = match read_draft(object, Version::V2, None) {
        Ok(draft) => Some(draft),
        Err(error) => {
            errors.extend(error.errors);
            None
        }
    };
    if let Some(sku) = &sku
        && !seen.insert(sku.clone())
    {
        errors.push(FieldError::new(
            "sku",
            "appears earlier in this batch; send each SKU once",
        ));
    }
    match draft {
        Some(draft) if errors.is_empty() => ReadItem::Valid(UpsertItem { draft, on_hand }),
        _ => ReadItem::Invalid { sku, errors },
    }
}

/// Upsert products in bulk. Each item is created, updated, left unchanged (it already says
/// the same) or refused with its reasons; sending the same batch again is safe.
#[utoipa::path(post, path = "/v2/products:batch", tag = "products", request_body = ProductBatchInput,
    responses((status = 200, description = "Every item's outcome", body = BatchResult),
        (status = 422, body = Problem)),
    security(("bearer" = ["catalog.write"])))]
pub async fn upsert(
    principal: Principal,
    catalog: web::Data<Catalog>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    principal.require(WRITE_SCOPE)?;
    let mut fields = Fields::new(body.into_inner());
    let objects = fields.object_list("items", true, 1..=MAX_BATCH_ITEMS);
    let objects = fields.finish(objects)?;
    let mut seen = BTreeSet::new();
    let read: Vec<ReadItem> = objects
        .into_iter()
        .map(|object| read_item(object, &mut seen))
        .collect();
    let valid: Vec<UpsertItem> = read
        .iter()
        .filter_map(|item| match item {
            ReadItem::Valid(item) => Some(item.clone()),
            ReadItem::Invalid { .. } => None,
        })
        .collect();
    let mut outcomes = catalog.upsert_products(valid).await?.into_iter();
    let mut result = BatchResult {
        items: Vec::with_capacity(read.len()),
        created: 0,
        updated: 0,
        unchanged: 0,
        failed: 0,
    };
    for (index, item) in read.into_iter().enumerate() {
        let (sku, outcome) = match item {
            ReadItem::Valid(item) => {
                let outcome = outcomes.next().ok_or_else(|| {
                    ApiError::internal("the batch answered fewer items than it was given")
                })?;
                let outcome =
                    outcome.map_err(|refused| vec![FieldError::new(refused.field, refused.reason)]);
                (Some(item.draft.sku.as_str().to_owned()), outcome)
            }
            ReadItem::Invalid { sku, errors } => (sku, Err(errors)),
        };
        let (status, errors) = match outcome {
            Ok(UpsertOutcome::Created) => {
                result.created += 1;
                ("created", Vec::new())
            }
            Ok(UpsertOutcome::Updated) => {
                result.updated += 1;
                ("updated", Vec::new())
            }
            Ok(UpsertOutcome::Unchanged) => {
                result.unchanged += 1;
                ("unchanged", Vec::new())
            }
            Err(errors) => {
                result.failed += 1;
                ("failed", errors)
            }
        };
        result.items.push(ItemResult {
            index,
            sku,
            status,
            errors,
        });
    }
    Ok(HttpResponse::Ok().json(result))
}
