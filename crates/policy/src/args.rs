//! Tool and prompt arguments, flattened into typed values for entity tags.
//!
//! Arbitrary JSON cannot be typed by a closed Cedar record, so arguments are
//! split by value type into tag maps (`context.args.numbers`, `.strings`,
//! `.bools`, `.lists`), each declared with one tag type in the schema. The
//! validator then checks `context.args.numbers.getTag("limit") <= 100` like
//! any other typed expression.

use serde_json::Value;

/// Objects deeper than this (top-level keys are depth 1) are left out.
pub const MAX_ARG_DEPTH: usize = 4;
/// At most this many keys (at all depths) are read per message.
pub const MAX_ARG_KEYS: usize = 256;

/// Argument values by Cedar type, keys flattened with dots.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct FlatArgs {
    pub(crate) names: Vec<String>,
    pub(crate) numbers: Vec<(String, i64)>,
    pub(crate) strings: Vec<(String, String)>,
    pub(crate) bools: Vec<(String, bool)>,
    pub(crate) lists: Vec<(String, Vec<String>)>,
}

impl FlatArgs {
    /// Flattens `params.arguments`; anything but an object yields no arguments.
    pub(crate) fn from_json(args: Option<&Value>) -> FlatArgs {
        let mut flat = FlatArgs::default();
        if let Some(Value::Object(map)) = args {
            flat.add_object(map, "", 1);
        }
        flat
    }

    fn add_object(&mut self, map: &serde_json::Map<String, Value>, prefix: &str, depth: usize) {
        for (key, value) in map {
            if self.names.len() >= MAX_ARG_KEYS {
                return;
            }
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            self.names.push(name.clone());
            match value {
                Value::Number(n) => {
                    if let Some(i) = integer(n) {
                        self.numbers.push((name, i));
                    }
                }
                Value::String(s) => self.strings.push((name, s.clone())),
                Value::Bool(b) => self.bools.push((name, *b)),
                Value::Array(items) => {
                    let strings: Option<Vec<String>> = items
                        .iter()
                        .map(|item| item.as_str().map(str::to_owned))
                        .collect();
                    if let Some(strings) = strings {
                        self.lists.push((name, strings));
                    }
                }
                Value::Object(inner) => {
                    if depth < MAX_ARG_DEPTH {
                        self.add_object(inner, &name, depth + 1);
                    }
                }
                Value::Null => {}
            }
        }
    }
}

/// A JSON number as a Cedar Long, if it is an integer in range (`5` or `5.0`).
fn integer(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
        // Integral and in range, so the cast is exact.
        Some(f as i64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_flatten_by_type() {
        let args = json!({
            "limit": 100,
            "ratio": 2.5,
            "whole": 3.0,
            "sql": "select 1",
            "dry_run": true,
            "tables": ["a", "b"],
            "mixed": ["a", 1],
            "nothing": null,
            "filter": {"table": "users", "max": {"rows": 7}},
        });
        let mut flat = FlatArgs::from_json(Some(&args));
        // serde_json may keep insertion order (feature `preserve_order`).
        flat.numbers.sort();
        flat.strings.sort();
        assert_eq!(
            flat.numbers,
            [
                ("filter.max.rows".to_owned(), 7),
                ("limit".to_owned(), 100),
                ("whole".to_owned(), 3)
            ]
        );
        assert_eq!(
            flat.strings,
            [
                ("filter.table".to_owned(), "users".to_owned()),
                ("sql".to_owned(), "select 1".to_owned())
            ]
        );
        assert_eq!(flat.bools, [("dry_run".to_owned(), true)]);
        assert_eq!(
            flat.lists,
            [("tables".to_owned(), vec!["a".to_owned(), "b".to_owned()])]
        );
        for name in ["ratio", "mixed", "nothing", "filter", "filter.max"] {
            assert!(flat.names.iter().any(|n| n == name), "{name}");
        }
    }

    #[test]
    fn depth_and_count_are_limited() {
        let deep = json!({"a": {"b": {"c": {"d": {"e": 1}}}}});
        let flat = FlatArgs::from_json(Some(&deep));
        assert!(flat.names.contains(&"a.b.c.d".to_owned()));
        assert!(!flat.names.contains(&"a.b.c.d.e".to_owned()));
        let many: serde_json::Map<String, Value> =
            (0..1000).map(|i| (format!("k{i}"), json!(i))).collect();
        let flat = FlatArgs::from_json(Some(&Value::Object(many)));
        assert_eq!(flat.names.len(), MAX_ARG_KEYS);
        assert_eq!(
            FlatArgs::from_json(Some(&json!([1, 2]))),
            FlatArgs::default()
        );
        assert_eq!(FlatArgs::from_json(None), FlatArgs::default());
    }
}
