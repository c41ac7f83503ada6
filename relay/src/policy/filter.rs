//! Filtering list responses (`tools/list`, `prompts/list`, `resources/list`)
//! to what the caller may use — JSON and SSE responses alike.
//!
//! A JSON response is read whole (bounded) and rewritten. An SSE response is
//! rewritten event by event as it streams: each complete event whose data is
//! a JSON-RPC result with the list is re-serialized without the entries the
//! caller may not use; every other event passes through byte for byte. Both
//! fail closed: a body or event over the limit ends the response with an
//! error rather than passing an unfiltered list.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::message::ListKind;

/// Largest JSON list response (or single SSE event) the relay filters (16 MiB).
pub const MAX_FILTERED_BODY: usize = 16 * 1024 * 1024;

/// Says, for each name (tool/prompt name or resource URI), whether the caller
/// may see it.
pub type Keep = Arc<dyn Fn(&[&str]) -> Vec<bool> + Send + Sync>;

/// Why a list response could not be filtered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Over [`MAX_FILTERED_BODY`].
    #[error("the upstream's list response is over the relay's {MAX_FILTERED_BODY}-byte limit")]
    TooLarge,
}

/// Filters one JSON-RPC message (a response) in place; returns whether it changed.
pub fn filter_message(msg: &mut Value, kind: ListKind, keep: &Keep) -> bool {
    let (field, key) = match kind {
        ListKind::Tools => ("tools", "name"),
        ListKind::Prompts => ("prompts", "name"),
        ListKind::Resources => ("resources", "uri"),
    };
    let Some(items) = msg
        .get_mut("result")
        .and_then(|r| r.get_mut(field))
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let names: Vec<&str> = items
        .iter()
        .map(|i| i.get(key).and_then(Value::as_str).unwrap_or(""))
        .collect();
    let verdict = keep(&names);
    if verdict.iter().all(|k| *k) {
        return false;
    }
    let mut i = 0;
    items.retain(|_| {
        // An entry without a name is never shown (verdict false for "").
        let k = verdict.get(i).copied().unwrap_or(false);
        i += 1;
        k
    });
    true
}

/// Filters a whole JSON body (one message, or a batch array). Bodies that
/// are not JSON pass unchanged (the client gets what the upstream sent).
pub fn filter_json(body: Bytes, kind: ListKind, keep: &Keep) -> Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let changed = match &mut v {
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |c, m| filter_message(m, kind, keep) | c),
        m => filter_message(m, kind, keep),
    };
    if changed {
        // Serializing a Value cannot fail.
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    } else {
        body
    }
}

/// Rewrites an SSE stream event by event.
#[derive(Debug)]
pub struct SseFilter {
    buf: BytesMut,
    kind: ListKind,
}

impl SseFilter {
    /// A filter for list responses of `kind`.
    pub fn new(kind: ListKind) -> Self {
        Self {
            buf: BytesMut::new(),
            kind,
        }
    }

    /// Takes the next chunk; returns the complete events so far, filtered.
    pub fn push(&mut self, chunk: &[u8], keep: &Keep) -> Result<Bytes, FilterError> {
        self.buf.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.buf) {
            let event = self.buf.split_to(end);
            out.extend_from_slice(&filter_event(&event, self.kind, keep));
        }
        if self.buf.len() > MAX_FILTERED_BODY {
            return Err(FilterError::TooLarge);
        }
        Ok(out.freeze())
    }

    /// The stream ended: whatever is left (an unterminated last event).
    pub fn finish(&mut self, keep: &Keep) -> Bytes {
        let rest = self.buf.split();
        if rest.is_empty() {
            return Bytes::new();
        }
        filter_event(&rest, self.kind, keep)
    }
}

/// Where the first complete event (through its blank line) ends.
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn filter_event(event: &[u8], kind: ListKind, keep: &Keep) -> Bytes {
    let Ok(text) = std::str::from_utf8(event) else {
        return Bytes::copy_from_slice(event);
    };
    let mut data = String::new();
    let mut others = Vec::new();
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        } else if !line.is_empty() {
            others.push(line);
        }
    }
    if data.is_empty() {
        return Bytes::copy_from_slice(event);
    }
    let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
        return Bytes::copy_from_slice(event);
    };
    if !filter_message(&mut v, kind, keep) {
        return Bytes::copy_from_slice(event);
    }
    let mut out = String::with_capacity(event.len());
    for l in others {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str("data: ");
    out.push_str(&v.to_string());
    out.push_str("\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(allowed: &'static [&'static str]) -> Keep {
        Arc::new(move |names: &[&str]| names.iter().map(|n| allowed.contains(n)).collect())
    }

    fn tools_result(id: i64) -> Value {
        serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"tools":[
            {"name":"list_tables"},{"name":"read_query"},{"name":"write_query"},{"title":"nameless"}
        ],"nextCursor":"c2"}})
    }

    fn names(v: &Value) -> Vec<String> {
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn json_lists_keep_only_what_the_caller_may_use() {
        let keep = only(&["read_query", "list_tables"]);
        let body = Bytes::from(tools_result(1).to_string());
        let out: Value =
            serde_json::from_slice(&filter_json(body, ListKind::Tools, &keep)).unwrap();
        assert_eq!(names(&out), ["list_tables", "read_query"]);
        assert_eq!(out["result"]["nextCursor"], "c2", "the rest is untouched");
        // Nothing to remove: the very same bytes.
        let all = only(&["list_tables", "read_query", "write_query", ""]);
        let body = Bytes::from(tools_result(1).to_string());
        assert_eq!(filter_json(body.clone(), ListKind::Tools, &all), body);
    }

    #[test]
    fn sse_events_are_filtered_across_chunk_boundaries() {
        let keep = only(&["read_query"]);
        let stream = format!(
            "event: message\nid: 1\ndata: {}\n\n: keepalive\n\ndata: {}\r\n\r\n",
            tools_result(1),
            serde_json::json!({"jsonrpc":"2.0","method":"notifications/progress","params":{}})
        );
        let mut f = SseFilter::new(ListKind::Tools);
        let mut out = Vec::new();
        for chunk in stream.as_bytes().chunks(7) {
            out.extend_from_slice(&f.push(chunk, &keep).unwrap());
        }
        out.extend_from_slice(&f.finish(&keep));
        let text = String::from_utf8(out).unwrap();
        let mut events = text.split("\n\n").filter(|e| !e.is_empty());
        let first = events.next().unwrap();
        assert!(
            first.starts_with("event: message\nid: 1\ndata: "),
            "{first}"
        );
        let v: Value = serde_json::from_str(first.split("data: ").nth(1).unwrap()).unwrap();
        assert_eq!(names(&v), ["read_query"]);
        assert!(text.contains(": keepalive\n\n"), "comments pass through");
        assert!(text.contains("notifications/progress"), "other events pass");
        assert!(!text.contains("write_query"));
    }

    #[test]
    fn an_oversized_event_fails_closed() {
        let keep = only(&[]);
        let mut f = SseFilter::new(ListKind::Tools);
        let big = vec![b'x'; MAX_FILTERED_BODY + 1];
        assert_eq!(f.push(&big, &keep), Err(FilterError::TooLarge));
    }
}
