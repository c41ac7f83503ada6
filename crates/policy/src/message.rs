//! What the relay reads of an MCP request body: each JSON-RPC message's
//! kind, method, id, target (tool, prompt or resource) and arguments.
//!
//! Parsed once at the edge into [`Message`]s; the decision code never looks
//! at raw JSON again. Anything that is not a JSON-RPC message is refused here
//! with the JSON-RPC error the spec names (parse error / invalid request).

use serde::Deserialize;
use serde_json::Value;

/// Protocol versions that still allow JSON-RPC batches (removed in 2025-06-18).
const BATCH_VERSIONS: &[&str] = &["2024-11-05", "2025-03-26"];

/// Messages in one batch, at most.
pub const MAX_BATCH: usize = 64;

/// One JSON-RPC message, as policy needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The request id (`None` for notifications and responses).
    pub id: Option<Value>,
    /// The method (`"response"` for a response to a server request,
    /// `"notifications"` for any client notification).
    pub method: String,
    /// The method as sent (`notifications/initialized`), for the audit log.
    pub wire_method: String,
    /// The tool (`tools/call`), prompt (`prompts/get`) or resource URI
    /// (`resources/read`, subscriptions) it targets.
    pub target: Option<String>,
    /// The tool's or prompt's arguments.
    pub args: Option<Value>,
}

impl Message {
    /// Whether this is a `tools/call`.
    pub fn is_tool_call(&self) -> bool {
        self.method == "tools/call"
    }

    /// The list method whose result the relay filters, if this is one.
    pub fn list_kind(&self) -> Option<ListKind> {
        match self.method.as_str() {
            "tools/list" => Some(ListKind::Tools),
            "prompts/list" => Some(ListKind::Prompts),
            "resources/list" => Some(ListKind::Resources),
            _ => None,
        }
    }
}

/// A list response the relay filters per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `result.tools[].name`
    Tools,
    /// `result.prompts[].name`
    Prompts,
    /// `result.resources[].uri`
    Resources,
}

/// Why a body is not an acceptable JSON-RPC payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Not JSON at all.
    #[error("the body is not JSON: {0}")]
    Parse(String),
    /// JSON, but not a JSON-RPC 2.0 message.
    #[error("not a JSON-RPC 2.0 message: {0}")]
    Invalid(String),
    /// A batch where the negotiated protocol version has none.
    #[error(
        "JSON-RPC batches are not part of MCP protocol version {0}; send one message per request"
    )]
    BatchNotAllowed(String),
    /// Over [`MAX_BATCH`].
    #[error("a batch of {0} messages is over the relay's limit of {MAX_BATCH}")]
    BatchTooLarge(usize),
}

impl MessageError {
    /// The JSON-RPC error code (-32700 parse error, -32600 invalid request).
    pub fn rpc_code(&self) -> i64 {
        match self {
            Self::Parse(_) => -32700,
            _ => -32600,
        }
    }
}

/// Parses a POST body: one message or (where the protocol version has them)
/// a batch. `protocol_version` is the `MCP-Protocol-Version` header; absent
/// means 2025-03-26 (the spec's default for servers).
pub fn parse_body(
    body: &[u8],
    protocol_version: Option<&str>,
) -> Result<Vec<Message>, MessageError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| MessageError::Parse(e.to_string()))?;
    match value {
        Value::Array(items) => {
            let version = protocol_version.unwrap_or("2025-03-26");
            if !BATCH_VERSIONS.contains(&version) {
                return Err(MessageError::BatchNotAllowed(version.to_owned()));
            }
            if items.is_empty() {
                return Err(MessageError::Invalid("an empty batch".into()));
            }
            if items.len() > MAX_BATCH {
                return Err(MessageError::BatchTooLarge(items.len()));
            }
            items.into_iter().map(parse_one).collect()
        }
        v => Ok(vec![parse_one(v)?]),
    }
}

fn parse_one(v: Value) -> Result<Message, MessageError> {
    #[derive(Deserialize)]
    struct Raw {
        jsonrpc: Option<String>,
        id: Option<Value>,
        method: Option<String>,
        params: Option<Value>,
        result: Option<Value>,
        error: Option<Value>,
    }
    let raw: Raw = serde_json::from_value(v).map_err(|e| MessageError::Invalid(e.to_string()))?;
    if raw.jsonrpc.as_deref() != Some("2.0") {
        return Err(MessageError::Invalid("\"jsonrpc\" must be \"2.0\"".into()));
    }
    if let Some(id) = &raw.id
        && !(id.is_string() || id.is_i64() || id.is_u64())
    {
        return Err(MessageError::Invalid(
            "\"id\" must be a string or an integer".into(),
        ));
    }
    let Some(method) = raw.method else {
        if raw.result.is_some() || raw.error.is_some() {
            return Ok(Message {
                id: raw.id,
                method: "response".into(),
                wire_method: "response".into(),
                target: None,
                args: None,
            });
        }
        return Err(MessageError::Invalid(
            "neither a request (\"method\") nor a response (\"result\"/\"error\")".into(),
        ));
    };
    if method.starts_with("notifications/") {
        return Ok(Message {
            id: None,
            method: "notifications".into(),
            wire_method: method,
            target: None,
            args: None,
        });
    }
    if raw.id.is_none() {
        // A notification that is not under notifications/: still no answer
        // is expected; policy sees its real method.
        return Ok(Message {
            id: None,
            wire_method: method.clone(),
            method,
            target: None,
            args: None,
        });
    }
    let params = raw.params.unwrap_or(Value::Null);
    let str_at = |k: &str| params.get(k).and_then(Value::as_str).map(str::to_owned);
    let (target, args) = match method.as_str() {
        "tools/call" | "prompts/get" => {
            let Some(name) = str_at("name") else {
                return Err(MessageError::Invalid(format!(
                    "{method} needs params.name (a string)"
                )));
            };
            let args = params.get("arguments").cloned();
            if args
                .as_ref()
                .is_some_and(|a| !a.is_object() && !a.is_null())
            {
                return Err(MessageError::Invalid(format!(
                    "{method} params.arguments must be an object"
                )));
            }
            (Some(name), args)
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => (str_at("uri"), None),
        "completion/complete" => {
            let r = params.get("ref");
            let target = r
                .and_then(|r| r.get("name").or_else(|| r.get("uri")))
                .and_then(Value::as_str)
                .map(str::to_owned);
            (target, params.get("argument").cloned())
        }
        _ => (None, None),
    };
    Ok(Message {
        id: raw.id,
        wire_method: method.clone(),
        method,
        target,
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Message {
        let mut v = parse_body(body.as_bytes(), Some("2025-06-18")).unwrap();
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    #[test]
    fn reads_calls_lists_notifications_and_responses() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_query","arguments":{"sql":"select 1"}}}"#,
        );
        assert!(m.is_tool_call());
        assert_eq!(m.target.as_deref(), Some("read_query"));
        assert_eq!(m.args, Some(serde_json::json!({"sql": "select 1"})));
        assert_eq!(m.id, Some(serde_json::json!(7)));
        let m = one(r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#);
        assert_eq!(m.list_kind(), Some(ListKind::Tools));
        let m = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(m.method, "notifications");
        assert_eq!(m.wire_method, "notifications/initialized");
        let m = one(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#);
        assert_eq!(m.method, "response");
        let m = one(
            r#"{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"sqlite://schema"}}"#,
        );
        assert_eq!(m.target.as_deref(), Some("sqlite://schema"));
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        for (body, code) in [
            ("not json", -32700),
            (r#"{"id":1,"method":"ping"}"#, -32600),
            (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, -32600),
            (r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#, -32600),
            (r#"{"jsonrpc":"2.0","id":1}"#, -32600),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
                -32600,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[1]}}"#,
                -32600,
            ),
            ("[]", -32600),
            ("5", -32600),
        ] {
            let e = parse_body(body.as_bytes(), Some("2025-03-26")).unwrap_err();
            assert_eq!(e.rpc_code(), code, "{body}: {e}");
        }
    }

    #[test]
    fn batches_only_where_the_protocol_version_has_them() {
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#;
        assert_eq!(parse_body(batch.as_bytes(), None).unwrap().len(), 2);
        assert_eq!(
            parse_body(batch.as_bytes(), Some("2025-03-26"))
                .unwrap()
                .len(),
            2
        );
        for v in ["2025-06-18", "2025-11-25", "2026-07-28"] {
            assert!(matches!(
                parse_body(batch.as_bytes(), Some(v)),
                Err(MessageError::BatchNotAllowed(_))
            ));
        }
        let big = format!(
            "[{}]",
            vec![r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#; MAX_BATCH + 1].join(",")
        );
        assert!(matches!(
            parse_body(big.as_bytes(), None),
            Err(MessageError::BatchTooLarge(_))
        ));
    }
}
