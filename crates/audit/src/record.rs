//! One audit record, its canonical JSON, and the digest of call arguments.

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The outcome of authorization for one request.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The request was forwarded.
    Allow,
    /// The request was refused.
    Deny,
}

impl Decision {
    /// "allow" or "deny", as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// What happened to one request: who asked, what for, what was decided and
/// what came back.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditRecord {
    /// When the request arrived (Unix milliseconds).
    pub ts_ms: i64,
    /// Relay request id, e.g. "9f3a…-42" (the agent and the logs carry it too).
    pub request_id: String,
    /// Email or service-account name; `None` = anonymous.
    pub principal: Option<String>,
    /// OAuth client id, when the caller used one.
    pub client_id: Option<String>,
    /// Client address.
    pub source: Option<String>,
    /// Tunnel name.
    pub tunnel: String,
    /// JSON-RPC method ("tools/call"), or the HTTP method when the request
    /// was not JSON-RPC ("GET").
    pub method: String,
    /// Tool, prompt or resource the call targets.
    pub tool: Option<String>,
    /// [`args_digest`] of the arguments.
    pub args_digest: Option<String>,
    /// The arguments themselves, only when enabled ([`crate::ArgsPolicy::Full`]),
    /// after redaction.
    pub args: Option<Value>,
    /// Allow or deny.
    pub decision: Decision,
    /// Ids of the policies behind the decision.
    pub policies: Vec<String>,
    /// One human line for denials and errors.
    pub reason: Option<String>,
    /// HTTP status returned to the client.
    pub status: Option<u16>,
    /// JSON-RPC error code, if the answer was an error.
    pub rpc_error: Option<i64>,
    /// Time from arrival to answer, microseconds.
    pub latency_us: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
}

impl AuditRecord {
    /// The record as canonical JSON (object keys sorted, no whitespace): the
    /// exact bytes that are stored and MACed.
    pub fn to_canonical_json(&self) -> Result<String, serde_json::Error> {
        Ok(canonical_json(&serde_json::to_value(self)?))
    }
}

/// SHA-256 (lower-case hex) of the canonical JSON of `args`: the same
/// arguments give the same digest whatever their key order, so relay and
/// agent logs can be matched.
///
/// The digest is of the arguments as sent (before redaction), as both sides
/// see them. It is unkeyed: someone who knows every other argument could
/// confirm a guess of a low-entropy secret among them.
pub fn args_digest(args: &Value) -> String {
    hex::encode(digest::digest(
        &digest::SHA256,
        canonical_json(args).as_bytes(),
    ))
}

/// Canonical JSON: object keys sorted (by UTF-8 bytes) at every depth, no
/// insignificant whitespace, serde_json's escaping and number formatting.
///
/// Sorting is done here rather than relied upon from `serde_json::Map`,
/// because another crate in the build may enable `preserve_order`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        // Null, booleans and numbers have one serde_json rendering.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    // Serializing a str into JSON cannot fail; the fallback keeps this total.
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}

/// At most this many policy ids are kept when a record must be cut to size.
const MAX_POLICIES_WHEN_CUT: usize = 16;

/// Canonical JSON of `rec` within `max` bytes (`max` ≥ 4 KiB), and the record
/// actually encoded when it had to be cut.
///
/// Oversized arguments go first (replaced by a note; `args_digest` still
/// identifies them); if that is not enough, every free-text field is cut to
/// `max / 32` bytes and the policy list to 16 ids, which always fits.
pub(crate) fn fit_record(
    rec: &AuditRecord,
    max: usize,
) -> Result<(String, Option<AuditRecord>), serde_json::Error> {
    let json = rec.to_canonical_json()?;
    if json.len() <= max {
        return Ok((json, None));
    }
    let full_len = json.len();
    let mut cut = rec.clone();
    if let Some(args) = cut.args.take() {
        if cut.args_digest.is_none() {
            cut.args_digest = Some(args_digest(&args));
        }
        cut.args = Some(serde_json::json!({
            "omitted": format!(
                "arguments left out: the record was {full_len} bytes, the limit is {max}; args_digest identifies them"
            )
        }));
        let json = cut.to_canonical_json()?;
        if json.len() <= max {
            return Ok((json, Some(cut)));
        }
    }
    let cap = max / 32;
    for field in [&mut cut.request_id, &mut cut.tunnel, &mut cut.method] {
        truncate(field, cap);
    }
    for field in [
        &mut cut.principal,
        &mut cut.client_id,
        &mut cut.source,
        &mut cut.tool,
        &mut cut.args_digest,
        &mut cut.reason,
    ]
    .into_iter()
    .flatten()
    {
        truncate(field, cap);
    }
    if cut.policies.len() > MAX_POLICIES_WHEN_CUT {
        let more = cut.policies.len() - (MAX_POLICIES_WHEN_CUT - 1);
        cut.policies.truncate(MAX_POLICIES_WHEN_CUT - 1);
        cut.policies.push(format!("… and {more} more"));
    }
    cut.policies.iter_mut().for_each(|p| truncate(p, cap));
    Ok((cut.to_canonical_json()?, Some(cut)))
}

/// Cuts `s` to at most `max` bytes (at a character boundary), marking the cut.
fn truncate(s: &mut String, max: usize) {
    const MARK: &str = "…[cut]";
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn digest_ignores_key_order_at_every_depth() {
        let a = json!({"sql": "select 1", "opts": {"limit": 5, "db": "main"}, "list": [{"b": 1, "a": 2}]});
        let b = json!({"list": [{"a": 2, "b": 1}], "opts": {"db": "main", "limit": 5}, "sql": "select 1"});
        assert_eq!(args_digest(&a), args_digest(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"list":[{"a":2,"b":1}],"opts":{"db":"main","limit":5},"sql":"select 1"}"#
        );
        assert_ne!(args_digest(&a), args_digest(&json!({"sql": "select 2"})));
        assert_eq!(args_digest(&a).len(), 64);
    }

    fn big_record() -> AuditRecord {
        AuditRecord {
            ts_ms: 1,
            request_id: "r".repeat(10_000),
            principal: Some("p".repeat(10_000)),
            client_id: None,
            source: None,
            tunnel: "t".repeat(10_000),
            method: "tools/call".into(),
            tool: Some("é".repeat(10_000)),
            args_digest: None,
            args: Some(json!({"blob": "x".repeat(100_000)})),
            decision: Decision::Deny,
            policies: (0..100)
                .map(|i| format!("policy-{i}-{}", "y".repeat(1000)))
                .collect(),
            reason: Some("z".repeat(10_000)),
            status: None,
            rpc_error: None,
            latency_us: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    #[test]
    fn oversized_records_are_cut_to_the_limit() {
        let mut rec = big_record();
        let args = rec.args.clone().unwrap();
        let (json, cut) = fit_record(&rec, 64 * 1024).unwrap();
        assert!(json.len() <= 64 * 1024, "{}", json.len());
        let cut = cut.unwrap();
        assert_eq!(cut.args_digest, Some(args_digest(&args)));
        assert!(
            cut.args.unwrap()["omitted"]
                .as_str()
                .unwrap()
                .contains("limit is 65536")
        );
        assert_eq!(cut.policies.len(), 16);

        // Only the arguments are too big: nothing else is touched.
        rec = AuditRecord {
            args: Some(json!({"blob": "x".repeat(100_000)})),
            ..small()
        };
        let (json, cut) = fit_record(&rec, 4096).unwrap();
        assert!(json.len() <= 4096);
        let cut = cut.unwrap();
        assert_eq!(
            AuditRecord {
                args: None,
                args_digest: None,
                ..cut
            },
            AuditRecord {
                args: None,
                ..small()
            }
        );

        let (_, untouched) = fit_record(&small(), 4096).unwrap();
        assert!(untouched.is_none());
        for max in [4096, 10_000, 100_000] {
            assert!(fit_record(&big_record(), max).unwrap().0.len() <= max);
        }
    }

    fn small() -> AuditRecord {
        AuditRecord { args: None, ..serde_json::from_value(json!({
            "ts_ms": 1, "request_id": "r", "principal": null, "client_id": null, "source": null,
            "tunnel": "t", "method": "GET", "tool": null, "args_digest": null, "args": null,
            "decision": "allow", "policies": [], "reason": null, "status": 200, "rpc_error": null,
            "latency_us": 1, "bytes_in": 0, "bytes_out": 0
        })).unwrap() }
    }

    #[test]
    fn decision_is_lowercase_and_records_round_trip() {
        assert_eq!(serde_json::to_string(&Decision::Deny).unwrap(), "\"deny\"");
        let rec = AuditRecord {
            ts_ms: 1,
            request_id: "r-1".into(),
            principal: None,
            client_id: None,
            source: None,
            tunnel: "shop".into(),
            method: "GET".into(),
            tool: None,
            args_digest: None,
            args: Some(json!({"z": 1, "a": "\u{1}é"})),
            decision: Decision::Allow,
            policies: vec![],
            reason: None,
            status: Some(200),
            rpc_error: None,
            latency_us: 5,
            bytes_in: 0,
            bytes_out: 2,
        };
        let text = rec.to_canonical_json().unwrap();
        let back: AuditRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.to_canonical_json().unwrap(), text);
    }
}
