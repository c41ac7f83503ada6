//! The relay's audit trail: one record per request on the MCP path — every
//! decision (allow and deny) and, for forwarded requests, the outcome
//! (status, latency, bytes), written when the response ends.

use std::sync::Arc;
use std::time::Instant;

use mcp_tunnel_audit::{ArgsPolicy, AuditLog, AuditRecord, Decision};

use crate::app::App;
use crate::config::{AuditArguments, AuditConfig};
use crate::policy::enforce::{Allowed, Who};

/// Where the relay keeps its audit log: `audit.db` in the state dir, with
/// its chain key, checkpoint key and checkpoint file beside it.
pub fn paths(state_dir: &std::path::Path) -> mcp_tunnel_audit::AuditPaths {
    mcp_tunnel_audit::AuditPaths::in_dir(state_dir, "audit")
}

/// Opens the relay's audit log.
pub fn open(state_dir: &std::path::Path) -> anyhow::Result<AuditLog> {
    AuditLog::open(paths(state_dir), mcp_tunnel_audit::AuditOptions::default())
        .map_err(|e| anyhow::anyhow!("opening the audit log: {e}"))
}

/// How arguments are recorded, from the config.
pub fn args_policy(c: &AuditConfig) -> ArgsPolicy {
    match c.arguments {
        AuditArguments::Digest => mcp_tunnel_audit::ArgsPolicy::Off,
        AuditArguments::Full => {
            let mut names: Vec<String> = mcp_tunnel_audit::DEFAULT_REDACTED_KEYS
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            names.extend(c.redact.iter().cloned());
            mcp_tunnel_audit::ArgsPolicy::Full {
                redact: mcp_tunnel_audit::Redactor::new(names),
            }
        }
    }
}

/// The newest audit records of `tunnels` (after `after_seq`, oldest first),
/// as JSON objects with their `seq`.
pub fn records_for(
    app: &App,
    tunnels: Vec<String>,
    after_seq: Option<u64>,
    limit: u32,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let Some(log) = &app.audit else {
        return Ok(Vec::new());
    };
    let filter = mcp_tunnel_audit::Filter {
        tunnels: Some(tunnels),
        since_seq: after_seq,
        limit: Some(limit as usize),
        // The first page is the newest records; follow-ups go forward.
        newest_first: after_seq.is_none(),
        ..Default::default()
    };
    let mut rows = log.query(&filter).map_err(|e| anyhow::anyhow!("{e}"))?;
    rows.sort_by_key(|(seq, _)| *seq);
    Ok(rows
        .into_iter()
        .filter_map(|(seq, r)| {
            let mut v = serde_json::to_value(r).ok()?;
            v["seq"] = seq.into();
            Some(v)
        })
        .collect())
}

/// A request's audit record, completed when its response ends.
#[derive(Debug)]
pub struct Pending {
    app: Arc<App>,
    record: Option<AuditRecord>,
    started: Instant,
}

impl Pending {
    /// Starts the record of a request by `who` on `tunnel`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        app: &Arc<App>,
        who: &Who,
        request_id: String,
        tunnel: &str,
        what: &Allowed,
        decision: Decision,
        bytes_in: u64,
        started: Instant,
    ) -> Self {
        let ts_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
            - started.elapsed().as_millis() as i64;
        let (args_digest, args) = match &what.args {
            Some(a) => {
                let (d, full) = app.audit_args.capture(a);
                (Some(d), full)
            }
            None => (None, None),
        };
        let record = AuditRecord {
            ts_ms,
            request_id,
            principal: Some(who.name.clone()),
            client_id: Some(who.context.client_id.clone()),
            source: who.context.source_ip.map(|i| i.to_string()),
            tunnel: tunnel.to_owned(),
            method: what.method.clone(),
            tool: what.target.clone(),
            args_digest,
            args,
            decision,
            policies: what.policies.clone(),
            reason: None,
            status: None,
            rpc_error: None,
            latency_us: 0,
            bytes_in,
            bytes_out: 0,
        };
        Self {
            app: app.clone(),
            record: Some(record),
            started,
        }
    }

    /// Notes why (denials, errors).
    pub fn reason(&mut self, reason: String, rpc_error: Option<i64>) {
        if let Some(r) = &mut self.record {
            r.reason = Some(reason);
            r.rpc_error = rpc_error;
        }
    }

    /// Notes the response status.
    pub fn status(&mut self, status: u16) {
        if let Some(r) = &mut self.record {
            r.status = Some(status);
        }
    }

    /// Writes the record with `bytes_out` sent.
    pub fn finish(mut self, bytes_out: u64) {
        self.write(bytes_out);
    }

    fn write(&mut self, bytes_out: u64) {
        let Some(mut r) = self.record.take() else {
            return;
        };
        r.latency_us = self.started.elapsed().as_micros() as u64;
        r.bytes_out = bytes_out;
        if let Some(log) = &self.app.audit {
            log.append(r);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A response dropped before its end (client gone) is still recorded.
        self.write(0);
    }
}
