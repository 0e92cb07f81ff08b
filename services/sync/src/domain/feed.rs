//! Reading a product feed row by row: CSV with a header row, or JSON Lines, from any
//! `Read` (a file of any size streams through), resumable from a [`Checkpoint`].
//!
//! A row becomes a catalog bulk item (`{sku, name, description, category, price: {amount,
//! currency}, onHand}`) or a [`RowError`] naming its line and field; the catalog checks the
//! rest and its refusals are mapped back to feed columns ([`feed_field`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The fields a row may set, as the catalog names them.
pub const FIELDS: &[&str] = &[
    "sku",
    "name",
    "description",
    "category",
    "price",
    "currency",
    "onHand",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    Csv,
    JsonLines,
}

impl FeedFormat {
    /// From an upload's `Content-Type` (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
        match essence.as_str() {
            "text/csv" | "application/csv" => Some(Self::Csv),
            "application/x-ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Some(Self::JsonLines),
            _ => None,
        }
    }

    /// From a dropped file's extension.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::JsonLines),
            _ => None,
        }
    }
}

/// Where reading stands: the byte offset and line of the next row, and the CSV header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub offset: u64,
    pub line: u64,
    /// The field each CSV column sets (`None`: a column the import ignores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<Option<String>>>,
}

/// A row that cannot be imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    pub line: u64,
    pub field: String,
    pub reason: String,
}

/// One row read: a catalog item, or why not.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub line: u64,
    pub sku: Option<String>,
    pub item: Result<Value, RowError>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The file is not a feed at all; the import fails with this reason.
    #[error("{0}")]
    NotAFeed(String),
    #[error("reading the feed failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The feed column a catalog field name stands for in answers (`price.amount` is `price`).
pub fn feed_field(catalog_field: &str) -> &str {
    match catalog_field {
        "price.amount" => "price",
        "price.currency" => "currency",
        other => other,
    }
}

/// Which field a column sets: through the configured map, else by name (any case).
fn field_of(column: &str, map: &BTreeMap<String, String>) -> Option<String> {
    let column = column.trim();
    if let Some(field) = map.get(column) {
        return Some(field.clone());
    }
    FIELDS
        .iter()
        .find(|field| field.eq_ignore_ascii_case(column))
        .map(|field| (*field).to_owned())
}

/// The catalog item a row's values make, or the first reason it cannot be one.
fn item_from(line: u64, values: BTreeMap<String, Value>) -> Row {
    let text = |name: &str| -> Option<Value> {
        values
            .get(name)
            .filter(|v| !v.is_null() && v.as_str().is_none_or(|s| !s.trim().is_empty()))
            .map(|v| match v {
                Value::String(s) => Value::String(s.trim().to_owned()),
                Value::Number(n) => Value::String(n.to_string()),
                other => other.clone(),
            })
    };
    let sku = text("sku").and_then(|v| v.as_str().map(str::to_owned));
    let refuse = |field: &str, reason: &str| Row {
        line,
        sku: sku.clone(),
        item: Err(RowError {
            line,
            field: field.to_owned(),
            reason: reason.to_owned(),
        }),
    };
    if sku.is_none() {
        return refuse("sku", "is required");
    }
    let mut item = Map::new();
    for field in ["sku", "name", "description", "category"] {
        if let Some(value) = text(field) {
            item.insert(field.to_owned(), value);
        }
    }
    let mut price = Map::new();
    if let Some(amount) = text("price") {
        price.insert("amount".to_owned(), amount);
    }
    if let Some(currency) = text("currency") {
        price.insert("currency".to_owned(), currency);
    }
    item.insert("price".to_owned(), Value::Object(price));
    if let Some(on_hand) = text("onHand") {
        let whole = on_hand
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| on_hand.as_i64());
        match whole {
            Some(count) => {
                item.insert("onHand".to_owned(), Value::from(count));
            }
            None => return refuse("onHand", "must be a whole number"),
        }
    }
    Row {
        line,
        sku,
        item: Ok(Value::Object(item)),
    }
}

/// A reader that notes where its newlines are, so that a CSV record's line can be told from
/// its byte offset (the `csv` crate's own line numbers skip blank lines and count `\r\n`
/// oddly).
struct NewlineTracker<R> {
    inner: R,
    read: u64,
    /// Offsets of `\n` bytes not yet passed, each with whether a `\r` came just before.
    newlines: std::collections::VecDeque<(u64, bool)>,
    last_byte: u8,
    /// Newlines before the offsets asked about so far.
    counted: u64,
}

impl<R: Read> Read for NewlineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (index, byte) in buf[..n].iter().enumerate() {
            if *byte == b'\n' {
                let after_cr = self.last_byte == b'\r';
                self.newlines
                    .push_back((self.read + index as u64, after_cr));
            }
            self.last_byte = *byte;
        }
        self.read += n as u64;
        Ok(n)
    }
}

impl<R> NewlineTracker<R> {
    /// How many newlines precede byte `offset`; offsets must not decrease between calls.
    fn lines_before(&mut self, offset: u64) -> u64 {
        while self.newlines.front().is_some_and(|(at, _)| *at < offset) {
            self.newlines.pop_front();
            self.counted += 1;
        }
        self.counted
    }

    /// True when byte `offset` (not yet passed by [`Self::lines_before`]) is the `\n` of a
    /// `\r\n`.
    fn crlf_tail_at(&self, offset: u64) -> bool {
        self.newlines
            .iter()
            .take_while(|(at, _)| *at <= offset)
            .any(|(at, after_cr)| *at == offset && *after_cr)
    }
}

/// Rows of a feed, read from `offset` on.
pub struct FeedRows<R: Read> {
    inner: Inner<R>,
    /// Where the reader started, in the file.
    base_offset: u64,
    /// The line of the first row read from the base.
    base_line: u64,
}

enum Inner<R: Read> {
    Csv {
        reader: csv::Reader<NewlineTracker<R>>,
        columns: Vec<Option<String>>,
        record: csv::ByteRecord,
        /// The line after the last record read.
        next_line: u64,
    },
    Lines {
        reader: BufReader<R>,
        /// Bytes and lines read since the base.
        consumed: u64,
        lines: u64,
        buffer: Vec<u8>,
        first: bool,
    },
}

impl<R: Read> FeedRows<R> {
    /// Starts reading `reader`, which holds the file from `checkpoint.offset` on (the whole
    /// file without a checkpoint). `columns` maps feed columns to fields.
    pub fn start(
        format: FeedFormat,
        reader: R,
        columns: &BTreeMap<String, String>,
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Self, FeedError> {
        let (base_offset, base_line) = checkpoint.map_or((0, 1), |c| (c.offset, c.line));
        let inner = match format {
            FeedFormat::Csv => {
                let resumed = checkpoint.and_then(|c| c.columns.clone());
                let tracked = NewlineTracker {
                    inner: reader,
                    read: 0,
                    newlines: std::collections::VecDeque::new(),
                    last_byte: 0,
                    counted: 0,
                };
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(resumed.is_none())
                    .flexible(true)
                    .from_reader(tracked);
                let columns = match resumed {
                    Some(columns) => columns,
                    None => {
                        let header = reader.byte_headers().map_err(csv_error)?.clone();
                        let mut mapped = Vec::new();
                        for name in header.iter() {
                            let name = std::str::from_utf8(name).map_err(|_| {
                                FeedError::NotAFeed("the header row is not UTF-8 text".into())
                            })?;
                            mapped.push(field_of(name, columns));
                        }
                        if !mapped.iter().any(|f| f.as_deref() == Some("sku")) {
                            return Err(FeedError::NotAFeed(
                                "not a CSV feed: the header row (line 1) has no sku column".into(),
                            ));
                        }
                        mapped
                    }
                };
                Inner::Csv {
                    reader,
                    columns,
                    record: csv::ByteRecord::new(),
                    next_line: base_line,
                }
            }
            FeedFormat::JsonLines => Inner::Lines {
                reader: BufReader::with_capacity(64 * 1024, reader),
                consumed: 0,
                lines: 0,
                buffer: Vec::new(),
                first: checkpoint.is_none(),
            },
        };
        Ok(Self {
            inner,
            base_offset,
            base_line,
        })
    }

    /// Where reading stands: the next row's offset and line.
    pub fn checkpoint(&mut self) -> Checkpoint {
        match &mut self.inner {
            Inner::Csv {
                reader,
                columns,
                next_line,
                ..
            } => {
                let mut byte = reader.position().byte();
                // After `\r\n` the reader stops on the `\n`: resume past it, or it would
                // read as one more (blank) line.
                if byte > 0 && reader.get_ref().crlf_tail_at(byte) {
                    byte += 1;
                }
                Checkpoint {
                    offset: self.base_offset + byte,
                    line: *next_line,
                    columns: Some(columns.clone()),
                }
            }
            Inner::Lines {
                consumed, lines, ..
            } => Checkpoint {
                offset: self.base_offset + *consumed,
                line: self.base_line + *lines,
                columns: None,
            },
        }
    }

    /// The next row, `None` at the end.
    pub fn next_row(&mut self) -> Option<Result<Row, FeedError>> {
        let base_line = self.base_line;
        match &mut self.inner {
            Inner::Csv {
                reader,
                columns,
                record,
                next_line,
            } => loop {
                match reader.read_byte_record(record) {
                    Ok(false) => return None,
                    Err(error) => return Some(Err(csv_error(error))),
                    Ok(true) => {}
                }
                if record
                    .iter()
                    .all(|field| field.iter().all(u8::is_ascii_whitespace))
                {
                    continue;
                }
                // The record ends just before the reader's position, on its last line; it
                // began as many lines earlier as its quoted fields hold newlines.
                let end = reader.position().byte();
                let last_line = base_line + reader.get_mut().lines_before(end.saturating_sub(1));
                let inner_newlines = record
                    .iter()
                    .map(|field| field.iter().filter(|b| **b == b'\n').count() as u64)
                    .sum::<u64>();
                let line = last_line.saturating_sub(inner_newlines);
                *next_line = last_line + 1;
                let mut values = BTreeMap::new();
                for (index, raw) in record.iter().enumerate() {
                    let Some(Some(field)) = columns.get(index) else {
                        continue;
                    };
                    match std::str::from_utf8(raw) {
                        Ok(text) => {
                            values.insert(field.clone(), Value::String(text.to_owned()));
                        }
                        Err(_) => {
                            return Some(Ok(Row {
                                line,
                                sku: None,
                                item: Err(RowError {
                                    line,
                                    field: field.clone(),
                                    reason: "is not UTF-8 text".into(),
                                }),
                            }));
                        }
                    }
                }
                return Some(Ok(item_from(line, values)));
            },
            Inner::Lines {
                reader,
                consumed,
                lines,
                buffer,
                first,
            } => loop {
                buffer.clear();
                let read = match reader.read_until(b'\n', buffer) {
                    Ok(0) => return None,
                    Ok(read) => read,
                    Err(error) => return Some(Err(error.into())),
                };
                *consumed += read as u64;
                let line = base_line + *lines;
                *lines += 1;
                let text = String::from_utf8_lossy(buffer);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                let parsed = serde_json::from_str::<Map<String, Value>>(text);
                let was_first = std::mem::replace(first, false);
                let object = match parsed {
                    Ok(object) => object,
                    Err(_) if was_first => {
                        return Some(Err(FeedError::NotAFeed(format!(
                            "not a JSON Lines feed: line {line} is not a JSON object"
                        ))));
                    }
                    Err(error) => {
                        return Some(Ok(Row {
                            line,
                            sku: None,
                            item: Err(RowError {
                                line,
                                field: String::new(),
                                reason: format!("is not a JSON object ({error})"),
                            }),
                        }));
                    }
                };
                let values = object
                    .into_iter()
                    .filter(|(key, _)| FIELDS.contains(&key.as_str()))
                    .collect();
                return Some(Ok(item_from(line, values)));
            },
        }
    }
}

fn csv_error(error: csv::Error) -> FeedError {
    match error.into_kind() {
        csv::ErrorKind::Io(error) => FeedError::Io(error),
        other => FeedError::NotAFeed(format!("not a CSV feed: {other:?}")),
    }
}

/// How many rows the whole feed has (a fast pass that builds no items).
pub fn count_rows<R: Read>(
    format: FeedFormat,
    reader: R,
    columns: &BTreeMap<String, String>,
) -> Result<u64, FeedError> {
    let mut rows = FeedRows::start(format, reader, columns, None)?;
    let mut count = 0;
    while let Some(row) = rows.next_row() {
        match row {
            Ok(_) => count += 1,
            Err(FeedError::NotAFeed(reason)) if count == 0 => {
                return Err(FeedError::NotAFeed(reason));
            }
            Err(FeedError::NotAFeed(_)) => count += 1,
            Err(error) => return Err(error),
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(format: FeedFormat, text: &str) -> Result<Vec<Row>, FeedError> {
        let mut rows = FeedRows::start(format, text.as_bytes(), &BTreeMap::new(), None)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next_row() {
            out.push(row?);
        }
        Ok(out)
    }

    #[test]
    fn lines_count_blank_lines_and_crlf_also_when_resumed() {
        let text = "sku,name\r\nA,a\r\n\r\nB,b\r\nC,c";
        let rows = all(FeedFormat::Csv, text).unwrap();
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 4, 5]);
        let mut reader =
            FeedRows::start(FeedFormat::Csv, text.as_bytes(), &BTreeMap::new(), None).unwrap();
        reader.next_row();
        let checkpoint = reader.checkpoint();
        let mut resumed = FeedRows::start(
            FeedFormat::Csv,
            &text.as_bytes()[checkpoint.offset as usize..],
            &BTreeMap::new(),
            Some(&checkpoint),
        )
        .unwrap();
        let lines: Vec<u64> = std::iter::from_fn(|| resumed.next_row())
            .map(|row| row.unwrap().line)
            .collect();
        assert_eq!(lines, [4, 5]);
    }

    const CSV: &str = "sku,name,description,category,price,currency,onHand,extra\n\
        A-1,One,\"a, quoted\nline\",tools,12.50,EUR,5,x\n\
        \n\
        ,Nameless,,tools,1.00,EUR,,\n\
        A-3,Three,,tools,2.00,EUR,many,\n";

    #[test]
    fn csv_rows_become_items_with_their_lines() {
        let rows = all(FeedFormat::Csv, CSV).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].line, 2);
        assert_eq!(
            rows[0].item.as_ref().unwrap(),
            &serde_json::json!({"sku": "A-1", "name": "One", "description": "a, quoted\nline",
                "category": "tools", "price": {"amount": "12.50", "currency": "EUR"}, "onHand": 5})
        );
        // Line 4 is blank; the quoted field spans lines 2 and 3.
        let nameless = rows[1].item.as_ref().unwrap_err();
        assert_eq!((nameless.line, nameless.field.as_str()), (5, "sku"));
        let bad_count = rows[2].item.as_ref().unwrap_err();
        assert_eq!((bad_count.line, bad_count.field.as_str()), (6, "onHand"));
    }

    #[test]
    fn reading_resumes_from_a_checkpoint_with_the_same_rows_and_lines() {
        let mut rows =
            FeedRows::start(FeedFormat::Csv, CSV.as_bytes(), &BTreeMap::new(), None).unwrap();
        let first = rows.next_row().unwrap().unwrap();
        let checkpoint = rows.checkpoint();
        let rest_whole: Vec<Row> = std::iter::from_fn(|| rows.next_row())
            .map(Result::unwrap)
            .collect();
        let tail = &CSV.as_bytes()[checkpoint.offset as usize..];
        let mut resumed =
            FeedRows::start(FeedFormat::Csv, tail, &BTreeMap::new(), Some(&checkpoint)).unwrap();
        let rest_resumed: Vec<Row> = std::iter::from_fn(|| resumed.next_row())
            .map(Result::unwrap)
            .collect();
        assert_eq!(first.line, 2);
        assert_eq!(rest_whole, rest_resumed);
    }

    #[test]
    fn json_lines_resume_too() {
        let text = "{\"sku\":\"J-1\",\"name\":\"a\",\"price\":1.5,\"currency\":\"EUR\",\"onHand\":3}\n\
            not json\n\
            \n\
            {\"sku\":\"J-2\",\"price\":\"2.00\"}\n";
        let rows = all(FeedFormat::JsonLines, text).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0].item.as_ref().unwrap()["price"],
            serde_json::json!({"amount": "1.5", "currency": "EUR"})
        );
        assert_eq!(rows[1].item.as_ref().unwrap_err().line, 2);
        assert_eq!(rows[2].line, 4);
        let mut reader = FeedRows::start(
            FeedFormat::JsonLines,
            text.as_bytes(),
            &BTreeMap::new(),
            None,
        )
        .unwrap();
        reader.next_row();
        reader.next_row();
        let checkpoint = reader.checkpoint();
        let mut resumed = FeedRows::start(
            FeedFormat::JsonLines,
            &text.as_bytes()[checkpoint.offset as usize..],
            &BTreeMap::new(),
            Some(&checkpoint),
        )
        .unwrap();
        assert_eq!(resumed.next_row().unwrap().unwrap().line, 4);
    }

    #[test]
    fn what_is_not_a_feed_says_why() {
        let error = all(FeedFormat::Csv, "\u{89}PNG\r\n\u{1a}\nbinary").unwrap_err();
        assert!(error.to_string().contains("no sku column"), "{error}");
        let error = all(FeedFormat::JsonLines, "sku,name\nA,b\n").unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
    }

    #[test]
    fn columns_map_through_the_configuration() {
        let map = BTreeMap::from([
            ("Artikelnummer".to_owned(), "sku".to_owned()),
            ("Bestand".to_owned(), "onHand".to_owned()),
        ]);
        let text = "Artikelnummer;x\n";
        assert!(FeedRows::start(FeedFormat::Csv, text.as_bytes(), &map, None).is_err());
        let text = "Artikelnummer,Name,Bestand\nA-1,One,4\n";
        let mut rows = FeedRows::start(FeedFormat::Csv, text.as_bytes(), &map, None).unwrap();
        let row = rows.next_row().unwrap().unwrap();
        assert_eq!(row.item.unwrap()["onHand"], 4);
        assert_eq!(
            count_rows(FeedFormat::Csv, CSV.as_bytes(), &BTreeMap::new()).unwrap(),
            3
        );
    }
}
