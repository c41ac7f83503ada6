//! The outcome of a decision and its explanation.

use std::sync::Arc;

use crate::source::PolicyInfo;

/// Why a request was allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// At least one permit matched and no forbid did.
    Permitted,
    /// A forbid matched (forbid wins over any permit).
    Forbidden,
    /// Nothing permits it (default deny).
    NotPermitted,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the message may pass.
    pub allowed: bool,
    /// Permitted, forbidden or not permitted.
    pub kind: DecisionKind,
    /// Ids of the policies that determined the decision: the matching
    /// forbids if forbidden, the matching permits if permitted.
    pub policies: Vec<String>,
    /// Evaluation errors (a policy with an error is skipped, as in Cedar).
    pub errors: Vec<String>,
    pub(crate) determining: Vec<Arc<PolicyInfo>>,
    pub(crate) subject: Subject,
}

/// What the request was, kept for [`Decision::reason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    pub(crate) action: &'static str,
    /// `tool x`, `prompt x`, `resource x`, or `tunnel t`.
    pub(crate) target: String,
    pub(crate) principal: String,
    /// Set when the decision was made before any policy was evaluated
    /// (unknown tunnel, missing tool name, ...).
    pub(crate) refusal: Option<String>,
    /// Set for housekeeping messages allowed through tunnel access.
    pub(crate) via: Option<&'static str>,
}

impl Decision {
    pub(crate) fn refuse(subject: Subject, why: String) -> Decision {
        Decision {
            allowed: false,
            kind: DecisionKind::NotPermitted,
            policies: Vec::new(),
            errors: Vec::new(),
            determining: Vec::new(),
            subject: Subject {
                refusal: Some(why),
                ..subject
            },
        }
    }

    /// One human line, e.g. `forbidden by policy admin.cedar:3 (no-destructive)`
    /// or `no policy permits tools/call on tool write_query for bob@x.com`.
    pub fn reason(&self) -> String {
        let s = &self.subject;
        if let Some(why) = &s.refusal {
            return format!("{} denied for {}: {why}", s.action, s.principal);
        }
        let places = || {
            self.determining
                .iter()
                .map(|p| p.location())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let plural = if self.determining.len() > 1 {
            "policies"
        } else {
            "policy"
        };
        match self.kind {
            DecisionKind::Forbidden => format!("forbidden by {plural} {}", places()),
            DecisionKind::Permitted => match s.via {
                Some(action) => format!(
                    "{} allowed as housekeeping: {action} permitted by {plural} {}",
                    s.action,
                    places()
                ),
                None => format!("permitted by {plural} {}", places()),
            },
            DecisionKind::NotPermitted => format!(
                "no policy permits {} on {} for {}",
                s.action, s.target, s.principal
            ),
        }
    }

    /// The policies that determined the decision, with source and text.
    pub fn determining(&self) -> &[Arc<PolicyInfo>] {
        &self.determining
    }
}

/// A decision with everything needed to understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision itself.
    pub decision: Decision,
    /// The Cedar action the method mapped to.
    pub action: &'static str,
    /// The determining policies: id, source file, line and text.
    pub policies: Vec<PolicyInfo>,
    /// Evaluation errors, one per erroring policy.
    pub errors: Vec<String>,
    /// How many policies could apply to this principal on this tunnel (the
    /// indexed set that was evaluated).
    pub evaluated: usize,
}
