//! Resource URIs: `sqlite://schema` for the whole DDL and `sqlite://table/{name}` per table.

use std::fmt::Write as _;

use rmcp::model::{Resource, ResourceTemplate};

use crate::results::TableSummary;

/// URI of the whole-schema resource.
pub const SCHEMA_URI: &str = "sqlite://schema";
/// Prefix of the per-table resources; the table name follows, percent-encoded.
pub const TABLE_URI_PREFIX: &str = "sqlite://table/";

/// What a resource URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResourceUri {
    /// The full schema DDL.
    Schema,
    /// One table or view.
    Table(String),
}

impl ResourceUri {
    /// Parses a URI from a client; `None` for anything this server does not serve.
    pub(crate) fn parse(uri: &str) -> Option<Self> {
        if uri == SCHEMA_URI {
            return Some(Self::Schema);
        }
        let encoded = uri.strip_prefix(TABLE_URI_PREFIX)?;
        let name = percent_decode(encoded)?;
        (!name.is_empty()).then_some(Self::Table(name))
    }
}

/// The URI of the resource for table `name`.
pub fn table_uri(name: &str) -> String {
    format!("{TABLE_URI_PREFIX}{}", percent_encode(name))
}

/// The resource list: the schema, then one entry per table or view.
pub(crate) fn resource_list(tables: &[TableSummary]) -> Vec<Resource> {
    let mut resources = vec![
        Resource::new(SCHEMA_URI, "schema")
            .with_title("Database schema")
            .with_description(
                "Every CREATE statement of the database (tables, indexes, views, triggers).",
            )
            .with_mime_type("application/sql"),
    ];
    resources.extend(tables.iter().map(|table| {
        Resource::new(table_uri(&table.name), table.name.clone())
            .with_title(format!("{} {}", table.kind, table.name))
            .with_description(format!(
                "The {} {}: columns, keys, indexes, triggers and CREATE statement, as JSON.",
                table.kind, table.name
            ))
            .with_mime_type("application/json")
    }));
    resources
}

/// The template clients can fill in for any table.
pub(crate) fn table_template() -> ResourceTemplate {
    ResourceTemplate::new(format!("{TABLE_URI_PREFIX}{{name}}"), "table")
        .with_title("Table structure")
        .with_description("One table's or view's structure as JSON; {name} is percent-encoded.")
        .with_mime_type("application/json")
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_uris_round_trip_odd_names() {
        for name in ["orders", "order items", "we/ird%name", "ünïcode", "a\"b"] {
            let uri = table_uri(name);
            assert!(
                !uri[TABLE_URI_PREFIX.len()..].contains(['/', ' ', '"']),
                "{uri}"
            );
            assert_eq!(
                ResourceUri::parse(&uri),
                Some(ResourceUri::Table(name.to_owned()))
            );
        }
    }

    #[test]
    fn unknown_and_malformed_uris_are_rejected() {
        assert_eq!(ResourceUri::parse(SCHEMA_URI), Some(ResourceUri::Schema));
        assert_eq!(ResourceUri::parse("sqlite://table/"), None);
        assert_eq!(ResourceUri::parse("sqlite://table/%zz"), None);
        assert_eq!(ResourceUri::parse("sqlite://table/%"), None);
        assert_eq!(ResourceUri::parse("file:///etc/passwd"), None);
    }
}
