//! How products look on the wire in each API version, and how drafts are read from bodies.

use common::ApiError;
use common::validation::{Fields, JsonObject};
use serde::Serialize;
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, Object, ObjectBuilder, OneOfBuilder, Schema, Type,
};

use crate::domain::money::{Money, codes_by_decimals, max_whole_digits, parse_currency};
use crate::domain::{Product, ProductDraft, Sku};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn prefix(self) -> &'static str {
        match self {
            Version::V1 => "/v1/products",
            Version::V2 => "/v2/products",
        }
    }
}

/// A product in v1: `price` is a JSON number in the currency's units.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductV1 {
    sku: String,
    name: String,
    description: String,
    category: String,
    /// Written with exactly the currency's decimals, e.g. `12.50`.
    #[schema(value_type = f64, example = 12.50)]
    price: Box<RawValue>,
    #[schema(example = "EUR")]
    currency: String,
    created_at: String,
    updated_at: String,
}

/// Money as exact decimal text and ISO 4217 currency.
#[derive(Serialize, ToSchema)]
pub struct MoneyV2 {
    #[schema(example = "12.50")]
    amount: String,
    #[schema(example = "EUR")]
    currency: String,
}

/// A product in v2.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductV2 {
    sku: String,
    name: String,
    description: String,
    category: String,
    price: MoneyV2,
    created_at: String,
    updated_at: String,
}

/// The body of `POST /v1/products`; unknown fields are refused.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = ProductInputV1)]
#[serde(deny_unknown_fields)]
pub struct ProductInputV1 {
    /// 1-64 of `A-Z a-z 0-9 . _ -`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    )]
    sku: String,
    /// 1-200 characters (surrounding spaces are trimmed).
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    name: String,
    /// 0-4000 characters.
    #[schema(max_length = 4000)]
    description: Option<String>,
    /// 1-100 characters (surrounding spaces are trimmed).
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    category: String,
    /// A plain decimal with at most the currency's decimals (none for JPY, two for EUR);
    /// v2 states this per currency.
    #[schema(example = 12.50, minimum = 0, maximum = 99_999_999_999_f64)]
    price: f64,
    /// An ISO 4217 code with minor units.
    #[schema(schema_with = currency_code_schema)]
    currency: String,
}

/// The body of `POST /v2/products`; unknown fields are refused.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = ProductInputV2)]
#[serde(deny_unknown_fields)]
pub struct ProductInputV2 {
    /// 1-64 of `A-Z a-z 0-9 . _ -`.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    )]
    sku: String,
    /// 1-200 characters (surrounding spaces are trimmed).
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    name: String,
    /// 0-4000 characters.
    #[schema(max_length = 4000)]
    description: Option<String>,
    /// 1-100 characters (surrounding spaces are trimmed).
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    category: String,
    price: MoneyInputV2,
}

/// The body of `PUT /v1/products/{sku}`: a v1 product without its SKU, which the path gives
/// (a `sku` field is still accepted when it equals the path).
pub struct ProductReplacementV1;

/// The body of `PUT /v2/products/{sku}`: a v2 product without its SKU, which the path gives
/// (a `sku` field is still accepted when it equals the path).
pub struct ProductReplacementV2;

/// A creation body's schema without its `sku` property.
fn without_sku<T: utoipa::PartialSchema>() -> RefOr<Schema> {
    let mut schema = T::schema();
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.properties.remove("sku");
        object.required.retain(|name| name != "sku");
        object.description = None;
    }
    schema
}

impl utoipa::PartialSchema for ProductReplacementV1 {
    fn schema() -> RefOr<Schema> {
        without_sku::<ProductInputV1>()
    }
}

impl ToSchema for ProductReplacementV1 {}

impl utoipa::PartialSchema for ProductReplacementV2 {
    fn schema() -> RefOr<Schema> {
        without_sku::<ProductInputV2>()
    }
}

impl ToSchema for ProductReplacementV2 {}

/// A price as sent: exact decimal text in an ISO 4217 currency. Its schema is written by
/// hand: which amounts are valid depends on the currency's decimals.
pub struct MoneyInputV2;

impl utoipa::PartialSchema for MoneyInputV2 {
    /// One branch per number of decimals, each with its currencies and its amount pattern,
    /// so that every document-valid price is accepted.
    fn schema() -> RefOr<Schema> {
        let mut branches = OneOfBuilder::new().description(Some(
            "A plain decimal (no sign, spaces or exponent) with at most the currency's \
             decimals, in an ISO 4217 currency that has minor units.",
        ));
        for (decimals, codes) in codes_by_decimals() {
            let whole = max_whole_digits(decimals);
            let pattern = match decimals {
                0 => format!("^[0-9]{{1,{whole}}}(\\.0+)?$"),
                _ => format!("^[0-9]{{1,{whole}}}(\\.[0-9]{{1,{decimals}}}0*)?$"),
            };
            let amount = ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern))
                .min_length(Some(1))
                .max_length(Some(32))
                .examples(["12.50"]);
            let currency = ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(codes))
                .examples(["EUR"]);
            branches = branches.item(
                ObjectBuilder::new()
                    .property("amount", amount)
                    .property("currency", currency)
                    .required("amount")
                    .required("currency")
                    .additional_properties(Some(AdditionalProperties::FreeForm(false))),
            );
        }
        branches.into()
    }
}

impl ToSchema for MoneyInputV2 {}

/// A v1 `currency`: the ISO 4217 codes that have minor units.
fn currency_code_schema() -> Object {
    let codes: Vec<&str> = codes_by_decimals().into_values().flatten().collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(codes))
        .examples(["EUR"])
        .build()
}

fn timestamp(at: time::OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// A product in one version's shape, serialized as is (a v1 price must not pass through a
/// `serde_json::Value`, which would turn `12.50` into the float `12.5`).
#[derive(Serialize)]
#[serde(untagged)]
pub enum Rendered {
    V1(ProductV1),
    V2(ProductV2),
}

/// Renders a product in the version's shape.
pub fn render(product: &Product, version: Version) -> Result<Rendered, ApiError> {
    let price = product.price().ok_or_else(|| {
        ApiError::internal(format!(
            "stored product {} has currency {:?}",
            product.sku.as_str(),
            product.currency
        ))
    })?;
    let rendered = match version {
        Version::V1 => Rendered::V1(ProductV1 {
            sku: product.sku.as_str().to_owned(),
            name: product.name.clone(),
            description: product.description.clone(),
            category: product.category.clone(),
            price: RawValue::from_string(price.amount()).map_err(ApiError::internal)?,
            currency: product.currency.clone(),
            created_at: timestamp(product.created_at),
            updated_at: timestamp(product.updated_at),
        }),
        Version::V2 => Rendered::V2(ProductV2 {
            sku: product.sku.as_str().to_owned(),
            name: product.name.clone(),
            description: product.description.clone(),
            category: product.category.clone(),
            price: MoneyV2 {
                amount: price.amount(),
                currency: product.currency.clone(),
            },
            created_at: timestamp(product.created_at),
            updated_at: timestamp(product.updated_at),
        }),
    };
    Ok(rendered)
}

/// Reads a draft from a request body. `path_sku` is the SKU in the URL of a PUT.
pub fn read_draft(
    body: JsonObject,
    version: Version,
    path_sku: Option<&Sku>,
) -> Result<ProductDraft, ApiError> {
    let mut fields = Fields::new(body);
    let sku = fields.string("sku", path_sku.is_none(), 1..=64);
    let sku = match (sku, path_sku) {
        (Some(text), Some(path)) if text != path.as_str() => {
            fields.reject("sku", "must match the SKU in the path");
            None
        }
        (Some(text), _) => match Sku::parse(&text) {
            Ok(sku) => Some(sku),
            Err(message) => {
                fields.reject("sku", message);
                None
            }
        },
        (None, path) => path.cloned(),
    };
    let name = fields.string("name", true, 1..=200);
    let description = fields.string("description", false, 0..=4000);
    let category = fields.string("category", true, 1..=100);
    let price = match version {
        Version::V1 => {
            let amount = fields.number_text("price", true);
            let currency = fields.exact_string("currency", true, 3..=3);
            money(&mut fields, amount, currency, "price", "currency")
        }
        Version::V2 => fields.object("price", true, |price| {
            let amount = price.exact_string("amount", true, 1..=32);
            let currency = price.exact_string("currency", true, 3..=3);
            money(price, amount, currency, "amount", "currency")
        }),
    };
    let draft = match (sku, name, category, price) {
        (Some(sku), Some(name), Some(category), Some(price)) => Some(ProductDraft {
            sku,
            name,
            description: description.unwrap_or_default(),
            category,
            price,
        }),
        _ => None,
    };
    fields.finish(draft)
}

fn money(
    fields: &mut Fields,
    amount: Option<String>,
    currency: Option<String>,
    amount_field: &str,
    currency_field: &str,
) -> Option<Money> {
    let currency = currency.and_then(|code| match parse_currency(&code) {
        Ok(currency) => Some(currency),
        Err(error) => {
            fields.reject(currency_field, error.to_string());
            None
        }
    });
    let amount = amount?;
    match Money::parse(&amount, currency?) {
        Ok(money) => Some(money),
        Err(error) => {
            fields.reject(amount_field, error.to_string());
            None
        }
    }
}

/// SKUs in paths: one that cannot exist is simply not found.
pub fn path_sku(text: &str) -> Result<Sku, ApiError> {
    Sku::parse(text).map_err(|_| ApiError::not_found(format!("product {text}")))
}

pub use common::validation::page_limit;
