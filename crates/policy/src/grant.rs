//! Grants (`mcp-agent share`) and the Cedar policy each one becomes.

use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::action::Action;

/// Who a grant is for. Written as `bob@x.com`, `@x.com` or `group:eng`
/// (also its serde form).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum GrantSubject {
    /// One user, by email (stored in lower case).
    Email(String),
    /// Every user whose email is in this domain (stored in lower case).
    Domain(String),
    /// Every user in this identity-provider group.
    Group(String),
}

/// A grant subject that is none of the three accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid grant subject {0:?}: expected an email (bob@x.com), a domain (@x.com) or a group (group:eng)"
)]
pub struct InvalidSubject(pub String);

impl FromStr for GrantSubject {
    type Err = InvalidSubject;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || InvalidSubject(s.to_owned());
        if let Some(group) = s.strip_prefix("group:") {
            if group.is_empty() {
                return Err(bad());
            }
            return Ok(GrantSubject::Group(group.to_owned()));
        }
        if let Some(domain) = s.strip_prefix('@') {
            if domain.is_empty() || domain.contains('@') {
                return Err(bad());
            }
            return Ok(GrantSubject::Domain(domain.to_lowercase()));
        }
        match s.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                Ok(GrantSubject::Email(s.to_lowercase()))
            }
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for GrantSubject {
    type Error = InvalidSubject;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<GrantSubject> for String {
    fn from(subject: GrantSubject) -> String {
        subject.to_string()
    }
}

impl fmt::Display for GrantSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantSubject::Email(email) => f.write_str(email),
            GrantSubject::Domain(domain) => write!(f, "@{domain}"),
            GrantSubject::Group(group) => write!(f, "group:{group}"),
        }
    }
}

/// Access to one tunnel shared by its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Stable id; the policy id becomes `grant:<id>`.
    pub id: String,
    /// The tunnel shared.
    pub tunnel: String,
    /// Who it is shared with.
    pub subject: GrantSubject,
    /// Tools that may be called; `None` means every tool and also
    /// `resources/read`, `resources/(un)subscribe`, `prompts/get` and
    /// `completion/complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Only tools annotated read-only may be called (never unannotated ones).
    #[serde(default)]
    pub read_only: bool,
    /// Unix seconds after which the grant no longer applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// The Cedar text a grant becomes: one `permit` with id `grant:<id>`.
///
/// The subject may `connect` and list (tools, resources, resource templates,
/// prompts); it may call the listed tools (or all tools, and read resources,
/// get prompts and complete, when `tools` is `None`); `read_only` limits calls
/// to tools with `readOnly && !destructive`; `expires_at` adds
/// `context.time < expires_at`.
pub fn grant_policies(grant: &Grant) -> String {
    let principal = match &grant.subject {
        GrantSubject::Email(email) => {
            format!(
                "principal == Mcp::User::{}",
                cedar_string(&email.to_lowercase())
            )
        }
        GrantSubject::Domain(domain) => {
            format!(
                "principal in Mcp::Domain::{}",
                cedar_string(&domain.to_lowercase())
            )
        }
        GrantSubject::Group(group) => format!("principal in Mcp::Group::{}", cedar_string(group)),
    };
    let mut actions = vec![
        Action::Connect,
        Action::ToolsList,
        Action::ResourcesList,
        Action::ResourcesTemplatesList,
        Action::PromptsList,
    ];
    let calls_tools = grant.tools.as_ref().is_none_or(|tools| !tools.is_empty());
    if calls_tools {
        actions.push(Action::ToolsCall);
    }
    if grant.tools.is_none() {
        actions.extend([
            Action::ResourcesRead,
            Action::ResourcesSubscribe,
            Action::ResourcesUnsubscribe,
            Action::PromptsGet,
            Action::CompletionComplete,
        ]);
    }
    let actions: Vec<String> = actions.iter().map(|a| a.cedar()).collect();

    let mut conditions = Vec::new();
    if let Some(expires_at) = grant.expires_at {
        conditions.push(format!("context.time < {expires_at}"));
    }
    let mut tool_conditions = Vec::new();
    if let Some(tools) = grant.tools.as_ref().filter(|t| !t.is_empty()) {
        let names: Vec<String> = tools.iter().map(|t| cedar_string(t)).collect();
        tool_conditions.push(format!("[{}].contains(resource.name)", names.join(", ")));
    }
    if grant.read_only && calls_tools {
        tool_conditions.push("resource.readOnly && !resource.destructive".to_owned());
    }
    if !tool_conditions.is_empty() {
        // `resource is Mcp::Tool` is false for the other actions' resources,
        // so the tool attributes are only read (and type-checked) for tools.
        conditions.push(format!(
            "(!(resource is Mcp::Tool) || ({}))",
            tool_conditions.join(" && ")
        ));
    }

    let mut text = String::new();
    let _ = writeln!(
        text,
        "@id({})",
        cedar_string(&format!("grant:{}", grant.id))
    );
    let _ = writeln!(text, "permit (");
    let _ = writeln!(text, "  {principal},");
    let _ = writeln!(text, "  action in [{}],", actions.join(", "));
    let _ = writeln!(
        text,
        "  resource in Mcp::Tunnel::{}",
        cedar_string(&grant.tunnel)
    );
    if conditions.is_empty() {
        text.push_str(");\n");
    } else {
        let _ = writeln!(text, ") when {{\n  {}\n}};", conditions.join(" &&\n  "));
    }
    text
}

/// A Cedar string literal for `s`, quotes and escapes included.
pub(crate) fn cedar_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_and_print() {
        let table = [
            ("Bob@X.com", Some(GrantSubject::Email("bob@x.com".into()))),
            (
                "@Example.COM",
                Some(GrantSubject::Domain("example.com".into())),
            ),
            ("group:eng", Some(GrantSubject::Group("eng".into()))),
            ("group:", None),
            ("@", None),
            ("bob", None),
            ("bob@", None),
            ("@a@b", None),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<GrantSubject>().ok(), want, "{text}");
        }
        let json = serde_json::to_string(&GrantSubject::Group("eng".into())).expect("json");
        assert_eq!(json, r#""group:eng""#);
        let back: GrantSubject = serde_json::from_str(r#""@x.com""#).expect("json");
        assert_eq!(back, GrantSubject::Domain("x.com".into()));
        assert!(serde_json::from_str::<GrantSubject>(r#""nobody""#).is_err());
    }

    #[test]
    fn grant_text_reads_well() {
        let grant = Grant {
            id: "g1".into(),
            tunnel: "laptop".into(),
            subject: GrantSubject::Email("bob@x.com".into()),
            tools: Some(vec!["query".into(), "say \"hi\"".into()]),
            read_only: true,
            expires_at: Some(1_700_000_000),
        };
        let text = grant_policies(&grant);
        assert!(text.starts_with(
            "@id(\"grant:g1\")\npermit (\n  principal == Mcp::User::\"bob@x.com\",\n"
        ));
        assert!(text.contains("context.time < 1700000000"));
        assert!(text.contains(r#"["query", "say \"hi\""].contains(resource.name)"#));
        assert!(text.contains("resource.readOnly && !resource.destructive"));
        assert!(!text.contains("prompts/get"));
        crate::validate(&crate::PolicySource::new("grant", text)).expect("valid");
    }
}
