//! What of a call's arguments reaches the log: a digest always, the arguments
//! themselves only when enabled, and then with secrets blanked.

use serde_json::Value;

use crate::record::args_digest;

/// Key names whose values [`Redactor::default`] blanks.
pub const DEFAULT_REDACTED_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "private_key",
];

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Blanks the values of secret-looking keys at any depth of a JSON value.
///
/// A key matches a configured name case-insensitively, with `-` read as `_`,
/// either whole (`Password`, `api-key`) or as its last `_` part
/// (`access_token`, `client_secret`, `db_password`): over-redacting an
/// argument costs a little insight, under-redacting leaks a secret for as long
/// as the log is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redactor {
    /// Normalized (lower case, `_` for `-`) names.
    names: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(DEFAULT_REDACTED_KEYS.iter().copied())
    }
}

impl Redactor {
    /// A redactor for exactly these key names.
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Redactor {
            names: names
                .into_iter()
                .map(|n| normalize(n.as_ref()))
                .filter(|n| !n.is_empty())
                .collect(),
        }
    }

    /// The configured names, normalized.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether values under `key` are blanked.
    pub fn is_secret_key(&self, key: &str) -> bool {
        let key = normalize(key);
        self.names.iter().any(|name| {
            key == *name
                || key
                    .strip_suffix(name.as_str())
                    .is_some_and(|head| head.ends_with('_'))
        })
    }

    /// A copy of `value` with secret values replaced by [`REDACTED`].
    pub fn redact(&self, value: &Value) -> Value {
        let mut copy = value.clone();
        self.redact_in_place(&mut copy);
        copy
    }

    /// Replaces secret values in `value` by [`REDACTED`].
    pub fn redact_in_place(&self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    if self.is_secret_key(key) {
                        *item = Value::String(REDACTED.to_owned());
                    } else {
                        self.redact_in_place(item);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.redact_in_place(i)),
            _ => {}
        }
    }
}

/// Whether the full arguments of a call are recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ArgsPolicy {
    /// Only [`args_digest`] is recorded (the default).
    #[default]
    Off,
    /// The arguments are recorded after redaction.
    Full {
        /// Which values are blanked.
        redact: Redactor,
    },
}

impl ArgsPolicy {
    /// The `(args_digest, args)` pair of an [`crate::AuditRecord`] for these arguments.
    pub fn capture(&self, args: &Value) -> (String, Option<Value>) {
        let digest = args_digest(args);
        match self {
            ArgsPolicy::Off => (digest, None),
            ArgsPolicy::Full { redact } => (digest, Some(redact.redact(args))),
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('-', "_")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn blanks_secrets_at_any_depth_case_insensitively() {
        let args = json!({
            "query": "select 1",
            "Password": "hunter2",
            "auth": {"API-KEY": "k", "nested": [{"access_token": "t", "max_tokens": 5}]},
            "headers": {"Authorization": {"scheme": "Bearer", "value": "x"}, "Cookie": ["a", "b"]},
            "secretary": "not a secret",
        });
        let out = Redactor::default().redact(&args);
        assert_eq!(
            out,
            json!({
                "query": "select 1",
                "Password": REDACTED,
                "auth": {"API-KEY": REDACTED, "nested": [{"access_token": REDACTED, "max_tokens": 5}]},
                "headers": {"Authorization": REDACTED, "Cookie": REDACTED},
                "secretary": "not a secret",
            })
        );
    }

    #[test]
    fn configurable_names_and_policies() {
        let r = Redactor::new(["ssn"]);
        assert_eq!(
            r.redact(&json!({"SSN": 1, "password": 2})),
            json!({"SSN": REDACTED, "password": 2})
        );

        let args = json!({"b": 1, "token": "t"});
        let (digest, stored) = ArgsPolicy::Off.capture(&args);
        assert_eq!(digest, args_digest(&json!({"token": "t", "b": 1})));
        assert_eq!(stored, None);
        let full = ArgsPolicy::Full {
            redact: Redactor::default(),
        };
        assert_eq!(
            full.capture(&args).1,
            Some(json!({"b": 1, "token": REDACTED}))
        );
    }
}
