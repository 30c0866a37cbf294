//! How the CLI prints things: kubectl-style tables, etcdctl-style key/value
//! lines, JSON views of KV messages, sizes and hexadecimal ids.
//!
//! JSON views of keys and values: a key or value that is valid UTF-8 is a
//! string field (`"key": "hello"`); any other bytes are base64 (standard
//! alphabet, padded) under a `_base64` name (`"key_base64": "AP8="`). A
//! reader checks for `key` first, then `key_base64`.

use std::io::{self, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::ValueEnum;
use rafter_proto::kv::{KeyValue, RangeResponse, ResponseHeader};
use serde_json::{Map, Value, json};

/// `-o` of commands that print keys and values (etcdctl's `-w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvFormat {
    /// Key and value lines, like etcdctl.
    Simple,
    /// One JSON document (watch: one JSON object per line).
    Json,
}

/// `-o` of commands that print tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableFormat {
    /// A table with the essential columns.
    Table,
    /// The table with more columns.
    Wide,
    /// A JSON array.
    Json,
}

/// A borderless table like kubectl's: upper-case headers, left-aligned
/// columns separated by three spaces, `<none>` for empty cells.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers (upper-cased on print).
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.as_ref().to_uppercase()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing trailing cells print as `<none>`.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let cell = |row: &[String], i: usize| -> String {
            match row.get(i) {
                Some(c) if !c.is_empty() => c.clone(),
                _ => "<none>".to_string(),
            }
        };
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(cell(row, i).chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<String>| {
            let mut text = String::new();
            for (i, c) in cells.iter().enumerate() {
                text.push_str(c);
                if i + 1 < columns {
                    let pad = widths[i] - c.chars().count() + 3;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(self.headers.clone());
        for row in &self.rows {
            line((0..columns).map(|i| cell(row, i)).collect());
        }
        out
    }

    /// Prints the table to stdout.
    pub fn print(&self) -> io::Result<()> {
        io::stdout().lock().write_all(self.render().as_bytes())
    }
}

/// A byte count the way etcdctl (go-humanize) prints it: SI units,
/// `0 B`, `999 B`, `1.2 kB`, `12 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let exp = ((n as f64).log10() / 3.0).floor() as usize;
    let exp = exp.min(UNITS.len() - 1);
    let value = n as f64 / 1000f64.powi(exp as i32);
    let rounded = (value * 10.0).round() / 10.0;
    if rounded < 10.0 {
        format!("{rounded:.1} {}", UNITS[exp])
    } else {
        format!("{rounded:.0} {}", UNITS[exp])
    }
}

/// A lease id as etcdctl prints it: lower-case hexadecimal, no `0x`.
pub fn lease_hex(id: i64) -> String {
    format!("{:x}", id as u64)
}

/// A member id in hexadecimal.
pub fn id_hex(id: u64) -> String {
    format!("{id:x}")
}

/// Parses a lease id given in hexadecimal, with or without `0x`.
pub fn parse_lease_id(text: &str) -> anyhow::Result<i64> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let id = u64::from_str_radix(digits, 16).map_err(|_| {
        anyhow::anyhow!(
            "invalid lease ID {text:?}: expected hexadecimal as printed by `rafter kv lease grant`, e.g. 694d77aa9e38260f"
        )
    })?;
    Ok(id as i64)
}

/// Adds `name: "<utf-8>"` or `name_base64: "<base64>"` to `map`.
pub fn put_bytes(map: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => map.insert(name.to_string(), Value::String(s.to_string())),
        Err(_) => map.insert(
            format!("{name}_base64"),
            Value::String(BASE64.encode(bytes)),
        ),
    };
}

/// The JSON view of a response header.
pub fn header_json(header: Option<&ResponseHeader>) -> Value {
    let h = header.cloned().unwrap_or_default();
    json!({
        "cluster_id": h.cluster_id,
        "member_id": h.member_id,
        "revision": h.revision,
        "raft_term": h.raft_term,
    })
}

/// The JSON view of a key-value (see the module docs for key/value naming).
pub fn kv_json(kv: &KeyValue) -> Value {
    let mut m = Map::new();
    put_bytes(&mut m, "key", &kv.key);
    put_bytes(&mut m, "value", &kv.value);
    m.insert("create_revision".into(), kv.create_revision.into());
    m.insert("mod_revision".into(), kv.mod_revision.into());
    m.insert("version".into(), kv.version.into());
    m.insert("lease".into(), kv.lease.into());
    Value::Object(m)
}

/// The JSON view of a Range answer.
pub fn range_json(resp: &RangeResponse) -> Value {
    json!({
        "header": header_json(resp.header.as_ref()),
        "kvs": resp.kvs.iter().map(kv_json).collect::<Vec<_>>(),
        "count": resp.count,
        "more": resp.more,
    })
}

/// Writes a key-value as etcdctl does: the key on one line, the value on
/// the next (bytes as they are), or only the key.
pub fn write_kv(out: &mut impl Write, kv: &KeyValue, keys_only: bool) -> io::Result<()> {
    out.write_all(&kv.key)?;
    out.write_all(b"\n")?;
    if !keys_only {
        out.write_all(&kv.value)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes the simple view of a Range answer: every key-value, or with
/// `count_only` just the count.
pub fn write_range(
    out: &mut impl Write,
    resp: &RangeResponse,
    keys_only: bool,
    count_only: bool,
) -> io::Result<()> {
    if count_only {
        return writeln!(out, "{}", resp.count);
    }
    for kv in &resp.kvs {
        write_kv(out, kv, keys_only)?;
    }
    Ok(())
}

/// Prints a JSON value on one line to stdout.
pub fn print_json(value: &Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_columns_and_fills_empty_cells() {
        let mut t = Table::new(&["name", "address", "leader"]);
        t.row(vec!["m1".into(), "127.0.0.1:7001".into(), "true".into()]);
        t.row(vec!["master-2".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME       ADDRESS          LEADER\n\
             m1         127.0.0.1:7001   true\n\
             master-2   <none>           <none>\n"
        );
    }

    #[test]
    fn bytes_print_like_etcdctl() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234), "1.2 kB");
        assert_eq!(human_bytes(1_234_567), "1.2 MB");
        assert_eq!(human_bytes(12_345_678), "12 MB");
        assert_eq!(human_bytes(20_480), "20 kB");
    }

    #[test]
    fn lease_ids_round_trip_through_hex() {
        let id = 0x694d_77aa_9e38_260f_i64;
        assert_eq!(lease_hex(id), "694d77aa9e38260f");
        assert_eq!(parse_lease_id("694d77aa9e38260f").unwrap(), id);
        assert_eq!(parse_lease_id("0x694D77AA9E38260F").unwrap(), id);
        assert!(parse_lease_id("xyz").is_err());
    }

    #[test]
    fn binary_values_are_base64_in_json() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: vec![0, 0xff],
            ..Default::default()
        };
        let v = kv_json(&kv);
        assert_eq!(v["key"], "k");
        assert_eq!(v["value_base64"], "AP8=");
        assert!(v.get("value").is_none());
    }
}
