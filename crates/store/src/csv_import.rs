//! `frontdoor customers import file.csv`: CSV → customers, with an error per bad row.
//!
//! Header (any order, case-insensitive): `phone` (required), `name`, `tier`, `vip`,
//! `language`, `notes`. Phones are normalised with the default region. Good rows are written
//! in one transaction; bad rows are reported with their line number and skipped.

use std::collections::HashMap;
use std::io::Read;

use serde::Serialize;

use crate::{Customer, CustomerStore, Region, StoreError, normalize};

/// A rejected CSV row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    /// What is wrong.
    pub message: String,
}

/// Result of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Rows written.
    pub imported: usize,
    /// Rows rejected.
    pub errors: Vec<RowError>,
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "n" => Some(false),
        "1" | "true" | "yes" | "y" | "vip" => Some(true),
        _ => None,
    }
}

/// Import customers from CSV. Fails as a whole only when the CSV cannot be read or lacks a
/// `phone` column; row problems are in the report.
pub fn import_csv<R: Read>(
    store: &dyn CustomerStore,
    reader: R,
    region: Region,
) -> Result<ImportReport, StoreError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let headers: HashMap<String, usize> = rdr
        .headers()?
        .iter()
        .enumerate()
        .map(|(i, h)| (h.trim().to_ascii_lowercase(), i))
        .collect();
    let Some(&phone_col) = headers.get("phone") else {
        return Err(StoreError::MissingColumn { column: "phone" });
    };
    let width = headers.len();
    let col = |name: &str| headers.get(name).copied();
    let (name_col, tier_col, vip_col, lang_col, notes_col) = (
        col("name"),
        col("tier"),
        col("vip"),
        col("language"),
        col("notes"),
    );

    let mut report = ImportReport::default();
    let mut good: Vec<Customer> = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for result in rdr.records() {
        let rec = match result {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                report.errors.push(RowError {
                    line,
                    message: format!("unreadable row: {e}"),
                });
                continue;
            }
        };
        let line = rec.position().map_or(0, csv::Position::line);
        if rec.len() != width {
            report.errors.push(RowError {
                line,
                message: format!("expected {width} fields, found {}", rec.len()),
            });
            continue;
        }
        let get = |c: Option<usize>| c.and_then(|i| rec.get(i)).unwrap_or("").to_owned();
        let raw_phone = get(Some(phone_col));
        let number = match normalize(&raw_phone, region) {
            Ok(n) => n,
            Err(e) => {
                report.errors.push(RowError {
                    line,
                    message: format!("invalid phone {raw_phone:?}: {e}"),
                });
                continue;
            }
        };
        let vip_raw = get(vip_col);
        let Some(vip) = parse_bool(&vip_raw) else {
            report.errors.push(RowError {
                line,
                message: format!("vip must be yes/no/true/false/1/0, found {vip_raw:?}"),
            });
            continue;
        };
        let language = get(lang_col);
        if !(language.is_empty()
            || (2..=8).contains(&language.len())
                && language
                    .chars()
                    .all(|c| c.is_ascii_alphabetic() || c == '-'))
        {
            report.errors.push(RowError {
                line,
                message: format!("language must be a code like en or zh, found {language:?}"),
            });
            continue;
        }
        if let Some(first) = seen.get(number.as_str()) {
            report.errors.push(RowError {
                line,
                message: format!("duplicate of line {first} ({number})"),
            });
            continue;
        }
        seen.insert(number.as_str().to_owned(), line);
        let tier = get(tier_col);
        good.push(Customer {
            number,
            name: get(name_col),
            tier: (!tier.is_empty()).then_some(tier),
            vip,
            language: (!language.is_empty()).then(|| language.to_ascii_lowercase()),
            notes: get(notes_col),
        });
    }
    store.upsert_customers(&good)?;
    report.imported = good.len();
    Ok(report)
}
