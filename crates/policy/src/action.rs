//! MCP methods and the Cedar actions they map to.

use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

/// A Cedar action of the `Mcp` namespace: one per MCP method we know, plus the
/// synthetic `connect`, `notifications`, `response` and `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    Connect,
    Initialize,
    Ping,
    ServerDiscover,
    LoggingSetLevel,
    Notifications,
    Response,
    ToolsList,
    ToolsCall,
    ResourcesList,
    ResourcesTemplatesList,
    ResourcesRead,
    ResourcesSubscribe,
    ResourcesUnsubscribe,
    PromptsList,
    PromptsGet,
    CompletionComplete,
    TasksGet,
    TasksList,
    TasksResult,
    TasksCancel,
    Other,
}

/// What kind of entity an action's resource is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceKind {
    Tunnel,
    Tool,
    Prompt,
    Resource,
}

impl Action {
    pub(crate) const ALL: [Action; 22] = [
        Action::Connect,
        Action::Initialize,
        Action::Ping,
        Action::ServerDiscover,
        Action::LoggingSetLevel,
        Action::Notifications,
        Action::Response,
        Action::ToolsList,
        Action::ToolsCall,
        Action::ResourcesList,
        Action::ResourcesTemplatesList,
        Action::ResourcesRead,
        Action::ResourcesSubscribe,
        Action::ResourcesUnsubscribe,
        Action::PromptsList,
        Action::PromptsGet,
        Action::CompletionComplete,
        Action::TasksGet,
        Action::TasksList,
        Action::TasksResult,
        Action::TasksCancel,
        Action::Other,
    ];

    /// Actions that show a principal has access to a tunnel, in the order they
    /// are tried for housekeeping messages.
    pub(crate) const ACCESS: [Action; 5] = [
        Action::Connect,
        Action::ToolsList,
        Action::ResourcesList,
        Action::PromptsList,
        Action::ResourcesTemplatesList,
    ];

    /// The action for a JSON-RPC method name (or `"response"`).
    pub(crate) fn from_method(method: &str) -> Action {
        match method {
            "connect" => Action::Connect,
            "initialize" => Action::Initialize,
            "ping" => Action::Ping,
            "server/discover" => Action::ServerDiscover,
            "logging/setLevel" => Action::LoggingSetLevel,
            "response" => Action::Response,
            "tools/list" => Action::ToolsList,
            "tools/call" => Action::ToolsCall,
            "resources/list" => Action::ResourcesList,
            "resources/templates/list" => Action::ResourcesTemplatesList,
            "resources/read" => Action::ResourcesRead,
            "resources/subscribe" => Action::ResourcesSubscribe,
            "resources/unsubscribe" => Action::ResourcesUnsubscribe,
            "prompts/list" => Action::PromptsList,
            "prompts/get" => Action::PromptsGet,
            "completion/complete" => Action::CompletionComplete,
            "tasks/get" => Action::TasksGet,
            "tasks/list" => Action::TasksList,
            "tasks/result" => Action::TasksResult,
            "tasks/cancel" => Action::TasksCancel,
            m if m == "notifications" || m.starts_with("notifications/") => Action::Notifications,
            _ => Action::Other,
        }
    }

    /// The Cedar action id (exactly the MCP method name).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Initialize => "initialize",
            Action::Ping => "ping",
            Action::ServerDiscover => "server/discover",
            Action::LoggingSetLevel => "logging/setLevel",
            Action::Notifications => "notifications",
            Action::Response => "response",
            Action::ToolsList => "tools/list",
            Action::ToolsCall => "tools/call",
            Action::ResourcesList => "resources/list",
            Action::ResourcesTemplatesList => "resources/templates/list",
            Action::ResourcesRead => "resources/read",
            Action::ResourcesSubscribe => "resources/subscribe",
            Action::ResourcesUnsubscribe => "resources/unsubscribe",
            Action::PromptsList => "prompts/list",
            Action::PromptsGet => "prompts/get",
            Action::CompletionComplete => "completion/complete",
            Action::TasksGet => "tasks/get",
            Action::TasksList => "tasks/list",
            Action::TasksResult => "tasks/result",
            Action::TasksCancel => "tasks/cancel",
            Action::Other => "other",
        }
    }

    /// Housekeeping actions are allowed for anyone with access to the tunnel.
    pub(crate) fn is_housekeeping(self) -> bool {
        matches!(
            self,
            Action::Initialize
                | Action::Ping
                | Action::ServerDiscover
                | Action::LoggingSetLevel
                | Action::Notifications
                | Action::Response
                | Action::TasksGet
                | Action::TasksList
                | Action::TasksResult
                | Action::TasksCancel
        )
    }

    /// The entity type of this action's resource (as in the schema).
    pub(crate) fn resource_kind(self) -> ResourceKind {
        match self {
            Action::ToolsCall => ResourceKind::Tool,
            Action::PromptsGet => ResourceKind::Prompt,
            Action::ResourcesRead | Action::ResourcesSubscribe | Action::ResourcesUnsubscribe => {
                ResourceKind::Resource
            }
            _ => ResourceKind::Tunnel,
        }
    }

    /// The Cedar `Mcp::Action::"<id>"` uid, built once.
    pub(crate) fn uid(self) -> &'static EntityUid {
        &ACTION_UIDS[self as usize]
    }

    /// The Cedar text naming this action.
    pub(crate) fn cedar(self) -> String {
        format!("Mcp::Action::{:?}", self.as_str())
    }
}

static ACTION_UIDS: LazyLock<Vec<EntityUid>> = LazyLock::new(|| {
    // Invariant: "Mcp::Action" is a valid Cedar type name (a constant).
    let ty = EntityTypeName::from_str("Mcp::Action").expect("valid type name");
    Action::ALL
        .iter()
        .map(|a| EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(a.as_str())))
        .collect()
});

/// The Cedar action id for a JSON-RPC method: the method name itself for
/// methods in the schema, `"notifications"` for any `notifications/...`,
/// `"response"` for responses, `"other"` for everything else.
pub fn method_action(method: &str) -> &'static str {
    Action::from_method(method).as_str()
}

/// Whether a method is housekeeping (`initialize`, `ping`, `server/discover`,
/// `logging/setLevel`, notifications, responses, `tasks/*`): allowed for
/// anyone with access to the tunnel unless a forbid policy matches it.
pub fn is_housekeeping(method: &str) -> bool {
    Action::from_method(method).is_housekeeping()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_and_has_its_uid_in_order() {
        for (i, action) in Action::ALL.iter().enumerate() {
            assert_eq!(*action as usize, i);
            assert_eq!(Action::from_method(action.as_str()), *action);
            assert_eq!(action.uid().id().unescaped(), action.as_str());
        }
    }

    #[test]
    fn methods_map_to_actions() {
        let table = [
            ("tools/call", "tools/call"),
            ("notifications/cancelled", "notifications"),
            ("notifications/initialized", "notifications"),
            ("response", "response"),
            ("sampling/createMessage", "other"),
            ("tools/delete", "other"),
            ("", "other"),
        ];
        for (method, action) in table {
            assert_eq!(method_action(method), action, "{method}");
        }
        assert!(is_housekeeping("ping"));
        assert!(is_housekeeping("tasks/cancel"));
        assert!(is_housekeeping("notifications/progress"));
        assert!(!is_housekeeping("tools/list"));
        assert!(!is_housekeeping("connect"));
        assert!(!is_housekeeping("frobnicate"));
    }
}
