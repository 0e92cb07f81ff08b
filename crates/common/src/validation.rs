//! Field-by-field validation of JSON request bodies that reports every failing field at
//! once (unknown fields, wrong types, lengths, ranges), rather than serde's first error.
//!
//! Values are kept as raw JSON text, so a number's digits reach the domain untouched (no
//! float ever holds a price).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde_json::value::RawValue;

use crate::error::{ApiError, FieldError};

/// A JSON object with its values still as raw text. A key that appears twice, here or in
/// any object nested in a value, is refused: a proxy that keeps the first and a service
/// that kept the last would read two different requests.
#[derive(Debug, Default, Clone)]
pub struct JsonObject(BTreeMap<String, Box<RawValue>>);

/// The start of the error a duplicate key gives (see `http::json_config`).
pub const DUPLICATE_KEY: &str = "duplicate key";

impl std::ops::Deref for JsonObject {
    type Target = BTreeMap<String, Box<RawValue>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for JsonObject {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'de> serde::Deserialize<'de> for JsonObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> serde::de::Visitor<'de> for ObjectVisitor {
            type Value = JsonObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonObject, A::Error> {
                let mut object = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: Box<RawValue> = map.next_value()?;
                    serde_json::from_str::<UniqueKeys>(value.get())
                        .map_err(|e| serde::de::Error::custom(strip_position(&e)))?;
                    if object.insert(key.clone(), value).is_some() {
                        return Err(serde::de::Error::custom(format!("{DUPLICATE_KEY} `{key}`")));
                    }
                }
                Ok(JsonObject(object))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// serde_json's message without its " at line L column C" (it names the nested text).
fn strip_position(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// Any JSON value in which no object repeats a key.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> serde::de::Visitor<'de> for ValueVisitor {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<UniqueKeys, A::Error> {
                while seq.next_element::<UniqueKeys>()?.is_some() {}
                Ok(UniqueKeys)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut keys = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<UniqueKeys>()?;
                    if !keys.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("{DUPLICATE_KEY} `{key}`")));
                    }
                }
                Ok(UniqueKeys)
            }
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

pub struct Fields {
    object: JsonObject,
    prefix: String,
    known: Vec<&'static str>,
    errors: Vec<FieldError>,
}

impl Fields {
    pub fn new(object: JsonObject) -> Self {
        Self::nested(object, "")
    }

    /// Fields of an object found inside another, reported as `prefix.field`.
    pub fn nested_at(object: JsonObject, prefix: &str) -> Self {
        Self::nested(object, prefix)
    }

    /// Takes the field errors of a nested validation into this one.
    pub fn absorb(&mut self, error: ApiError) {
        self.errors.extend(error.errors);
    }

    fn nested(object: JsonObject, prefix: &str) -> Self {
        Self {
            object,
            prefix: prefix.to_owned(),
            known: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// Adds an error found by a domain rule.
    pub fn reject(&mut self, name: &str, message: impl Into<String>) {
        let path = self.path(name);
        self.errors.push(FieldError::new(path, message));
    }

    fn take(&mut self, name: &'static str, required: bool) -> Option<Box<RawValue>> {
        self.known.push(name);
        let raw = self.object.remove(name).filter(|raw| raw.get() != "null");
        if raw.is_none() && required {
            self.reject(name, "is required");
        }
        raw
    }

    /// A string of `chars` characters taken exactly as sent: surrounding white space is an
    /// error, not trimmed (codes and amounts, where a space means a different value).
    pub fn exact_string(
        &mut self,
        name: &'static str,
        required: bool,
        chars: RangeInclusive<usize>,
    ) -> Option<String> {
        let text = self.string_as_sent(name, required)?;
        if text.trim() != text {
            self.reject(name, "must not start or end with white space");
            return None;
        }
        self.within(name, text, chars)
    }

    fn string_as_sent(&mut self, name: &'static str, required: bool) -> Option<String> {
        let raw = self.take(name, required)?;
        match serde_json::from_str::<String>(raw.get()) {
            Ok(text) => Some(text),
            Err(_) => {
                self.reject(name, "must be a string");
                None
            }
        }
    }

    fn within(
        &mut self,
        name: &'static str,
        text: String,
        chars: RangeInclusive<usize>,
    ) -> Option<String> {
        if chars.contains(&text.chars().count()) {
            Some(text)
        } else {
            self.reject(
                name,
                format!(
                    "must be {} to {} characters long",
                    chars.start(),
                    chars.end()
                ),
            );
            None
        }
    }

    /// A string of `chars` characters (counted as Unicode scalar values), trimmed of
    /// surrounding white space.
    pub fn string(
        &mut self,
        name: &'static str,
        required: bool,
        chars: RangeInclusive<usize>,
    ) -> Option<String> {
        let text = self.string_as_sent(name, required)?;
        self.within(name, text.trim().to_owned(), chars)
    }

    /// An integer within `range`.
    pub fn integer(
        &mut self,
        name: &'static str,
        required: bool,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let raw = self.take(name, required)?;
        match whole_number(raw.get()) {
            Ok(value) if range.contains(&value) => Some(value),
            Ok(_) => {
                self.reject(
                    name,
                    format!("must be between {} and {}", range.start(), range.end()),
                );
                None
            }
            Err(_) => {
                self.reject(name, "must be a whole number");
                None
            }
        }
    }

    /// `true` or `false`.
    pub fn boolean(&mut self, name: &'static str, required: bool) -> Option<bool> {
        let raw = self.take(name, required)?;
        match raw.get() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.reject(name, "must be true or false");
                None
            }
        }
    }

    /// An e-mail address (RFC 5322 `addr-spec`, as mail servers take it), up to 254
    /// characters.
    pub fn email(&mut self, name: &'static str, required: bool) -> Option<String> {
        let text = self.exact_string(name, required, 3..=254)?;
        match text.parse::<email_address::EmailAddress>() {
            Ok(address) if !address.domain().is_empty() && !text.contains(['<', '>', ' ']) => {
                Some(text)
            }
            _ => {
                self.reject(name, "must be an e-mail address such as name@example.com");
                None
            }
        }
    }

    /// The literal text of a JSON number, as sent.
    pub fn number_text(&mut self, name: &'static str, required: bool) -> Option<String> {
        let raw = self.take(name, required)?;
        let text = raw.get();
        if serde_json::from_str::<serde_json::Number>(text).is_ok() {
            Some(text.to_owned())
        } else {
            self.reject(name, "must be a number");
            None
        }
    }

    /// A list of `count` strings.
    pub fn string_list(
        &mut self,
        name: &'static str,
        required: bool,
        count: RangeInclusive<usize>,
    ) -> Option<Vec<String>> {
        self.list_of(name, required, count, "must be a list of strings")
    }

    /// A list of `count` objects, each still to be validated.
    pub fn object_list(
        &mut self,
        name: &'static str,
        required: bool,
        count: RangeInclusive<usize>,
    ) -> Option<Vec<JsonObject>> {
        self.list_of(name, required, count, "must be a list of objects")
    }

    fn list_of<T: serde::de::DeserializeOwned>(
        &mut self,
        name: &'static str,
        required: bool,
        count: RangeInclusive<usize>,
        wrong_type: &'static str,
    ) -> Option<Vec<T>> {
        let raw = self.take(name, required)?;
        match serde_json::from_str::<Vec<T>>(raw.get()) {
            Ok(list) if count.contains(&list.len()) => Some(list),
            Ok(_) => {
                self.reject(
                    name,
                    format!("must hold {} to {} items", count.start(), count.end()),
                );
                None
            }
            Err(_) => {
                self.reject(name, wrong_type);
                None
            }
        }
    }

    /// A nested object, validated by `validate`.
    pub fn object<T>(
        &mut self,
        name: &'static str,
        required: bool,
        validate: impl FnOnce(&mut Fields) -> Option<T>,
    ) -> Option<T> {
        let raw = self.take(name, required)?;
        match serde_json::from_str::<JsonObject>(raw.get()) {
            Ok(object) => {
                let path = self.path(name);
                let mut nested = Fields::nested(object, &path);
                let value = validate(&mut nested);
                nested.refuse_unknown();
                self.errors.append(&mut nested.errors);
                value
            }
            Err(_) => {
                self.reject(name, "must be an object");
                None
            }
        }
    }

    fn refuse_unknown(&mut self) {
        let unknown: Vec<String> = self
            .object
            .keys()
            .filter(|key| !self.known.contains(&key.as_str()))
            .cloned()
            .collect();
        for key in unknown {
            let path = self.path(&key);
            self.errors
                .push(FieldError::new(path, "is not a known field"));
        }
    }

    /// Ends validation: `value` when every field was fine, else a 422 listing them all.
    pub fn finish<T>(mut self, value: Option<T>) -> Result<T, ApiError> {
        self.refuse_unknown();
        match value {
            Some(value) if self.errors.is_empty() => Ok(value),
            _ if self.errors.is_empty() => Err(ApiError::validation(vec![FieldError::new(
                "",
                "is invalid",
            )])),
            _ => Err(ApiError::validation(self.errors)),
        }
    }
}

/// `limit` of a list request: 1 to 100, 20 when absent.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(20),
        Some(limit @ 1..=100) => Ok(limit),
        Some(_) => Err(ApiError::validation(vec![FieldError::new(
            "limit",
            "must be between 1 and 100",
        )])),
    }
}

/// A JSON number that is a whole number: `3`, and also `3.0`, which JSON Schema counts as
/// an integer too (a client's float serializer may write it so). `3.5` or exponents are not.
fn whole_number(text: &str) -> Result<i64, ()> {
    let whole = match text.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() && fraction.bytes().all(|b| b == b'0') => {
            whole
        }
        Some(_) => return Err(()),
        None => text,
    };
    serde_json::from_str::<i64>(whole).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: &str) -> JsonObject {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn every_failing_field_is_listed() {
        let mut fields = Fields::new(object(r#"{"name": 5, "count": "x", "extra": true}"#));
        let name = fields.string("name", true, 1..=10);
        let count = fields.integer("count", true, 0..=5);
        let missing = fields.string("missing", true, 1..=10);
        let error = fields.finish(name.zip(count).zip(missing)).unwrap_err();
        let names: Vec<_> = error.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, ["name", "count", "missing", "extra"]);
    }

    #[test]
    fn number_text_keeps_digits() {
        let mut fields = Fields::new(object(r#"{"price": 12.50}"#));
        assert_eq!(fields.number_text("price", true).as_deref(), Some("12.50"));
    }

    #[test]
    fn nested_paths_are_qualified() {
        let mut fields = Fields::new(object(r#"{"price": {"amount": 1, "bogus": 2}}"#));
        let amount = fields.object("price", true, |price| price.string("amount", true, 1..=20));
        let error = fields.finish(amount).unwrap_err();
        let names: Vec<_> = error.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(names, ["price.amount", "price.bogus"]);
    }

    #[test]
    fn integers_written_with_a_zero_fraction_are_whole_numbers() {
        let mut fields = Fields::new(object(
            r#"{"a": 410.0, "b": 7, "c": 1.5, "d": 1e3, "e": "3", "f": -2.00}"#,
        ));
        let values: Vec<_> = ["a", "b", "c", "d", "e", "f"]
            .into_iter()
            .map(|name| fields.integer(name, true, -10..=1000))
            .collect();
        assert_eq!(values, [Some(410), Some(7), None, None, None, Some(-2)]);
    }
}
