//! Table or JSON: every command builds one serializable report and prints it either way.

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// A table that fits a 100-column terminal (long cells wrap); all-empty headers make a key/value table
/// without a header row.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(100);
    if header.iter().any(|h| !h.is_empty()) {
        t.set_header(header.to_vec());
    }
    for row in rows {
        t.add_row(row);
    }
    t.to_string()
}

/// Prints `report` as pretty JSON, or as what `render` makes of it.
pub fn print<T: Serialize>(format: Format, report: &T, render: impl FnOnce(&T) -> String) {
    match format {
        Format::Json => match serde_json::to_string_pretty(report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("goldenctl: cannot write JSON: {e}"),
        },
        Format::Table => println!("{}", render(report)),
    }
}
