//! Filtering `tools/list` without one full Cedar authorization per tool.
//!
//! Each indexed policy set keeps, next to the Cedar set, the conditions of the
//! policies that can apply to `tools/call` (the others are false for every
//! tool, so they are skipped), and a static analysis of how those conditions
//! look at the tool (`resource`):
//!
//! - through its flags (`resource.readOnly`, `.destructive`, `.idempotent`,
//!   `.openWorld`, `.annotated`) or what is the same for every tool of the
//!   tunnel (`resource.tunnel`, `resource is T`, `resource has a`,
//!   `resource in Mcp::Tunnel::"t"`);
//! - through its name compared with string literals (`resource.name == "x"`,
//!   `["x", "y"].contains(resource.name)`) or its uid compared with entity
//!   literals (`resource == Mcp::Tool::"t/x"`, `resource in [...]`): each
//!   such comparison is an *atom*, true for the names it lists.
//!
//! When every condition of every set involved reads the tool only in these
//! ways, two tools with the same flags and the same atoms have the same
//! decision, so [`crate::Engine::allowed_tools`] evaluates one tool per class.
//! Any other use of `resource` (`resource.name like "x*"`, `resource.name`
//! compared with a non-literal, `resource` as a value, ...) or of a
//! `Mcp::Tool` entity literal elsewhere makes the set *opaque*, and the tools
//! are then evaluated one by one, each against a store holding only itself,
//! exactly as [`crate::Engine::decide`] does.
//!
//! Evaluation uses Cedar's own evaluator on the precomputed conditions (the
//! same `Evaluator::interpret` Cedar's authorizer runs), combined as Cedar
//! does: a policy whose evaluation errors is skipped, any satisfied forbid
//! denies, else any satisfied permit allows.

use std::collections::HashMap;
use std::sync::LazyLock;

use cedar_policy::{Entities, PolicySet};
use cedar_policy_core::ast::{
    self, BinaryOp, Effect, Expr, ExprKind, Literal, SlotEnv, Value, ValueKind, Var,
};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

use crate::action::Action;
use crate::entities::TYPES;

/// Tool attributes that are flags (part of a tool's class) or the same for
/// every tool of the tunnel.
const CLASS_ATTRS: [&str; 6] = [
    "readOnly",
    "destructive",
    "idempotent",
    "openWorld",
    "annotated",
    "tunnel",
];

static EMPTY_SLOTS: LazyLock<SlotEnv> = LazyLock::new(SlotEnv::new);

/// A Cedar policy set with what listing tools needs to know about it.
pub(crate) struct Indexed {
    pub(crate) set: PolicySet,
    pub(crate) tools: ToolPolicies,
}

impl Indexed {
    pub(crate) fn new(set: PolicySet) -> Indexed {
        let tools = ToolPolicies::of(&set);
        Indexed { set, tools }
    }
}

/// The policies of a set that can apply to `tools/call`.
pub(crate) struct ToolPolicies {
    /// Effect and full condition (scope included) of each such policy.
    conditions: Vec<(Effect, Expr)>,
    /// How the conditions read the tool; `None` when some policy reads it in
    /// a way the analysis does not cover.
    view: Option<ToolView>,
}

/// Atom signatures: names (or tool entity ids) that some atom is true for,
/// mapped to an id of the set of atoms true for them (0 is "none").
#[derive(Default)]
pub(crate) struct ToolView {
    by_name: HashMap<String, u32>,
    by_uid: HashMap<String, u32>,
}

impl ToolPolicies {
    fn of(set: &PolicySet) -> ToolPolicies {
        let tools_call: &ast::EntityUID = Action::ToolsCall.uid().as_ref();
        let mut conditions = Vec::new();
        let mut atoms = Atoms::default();
        let mut transparent = true;
        for policy in set.as_ref().policies() {
            let applies = match policy.action_constraint() {
                ast::ActionConstraint::Any => true,
                ast::ActionConstraint::Eq(uid) => **uid == *tools_call,
                ast::ActionConstraint::In(uids) => uids.iter().any(|u| **u == *tools_call),
                #[allow(unreachable_patterns)]
                _ => true,
            };
            if !applies {
                continue;
            }
            // Templates are not used; a linked policy's slots would make the
            // condition depend on more than its text, so stay per tool.
            if !policy.env().is_empty() {
                transparent = false;
            }
            // Cedar's condition (`principal && action && resource && body`)
            // without the action scope, true for `tools/call` (actions have
            // no parents, so `in` is equality) and free of errors: the same
            // value, without building the action set on every evaluation.
            let condition = Expr::and(
                policy.principal_constraint().as_expr(),
                Expr::and(
                    policy.resource_constraint().as_expr(),
                    policy
                        .non_scope_constraints()
                        .cloned()
                        .unwrap_or_else(|| Expr::val(true)),
                ),
            );
            let ok = scan(&condition, &mut atoms);
            transparent = transparent && ok;
            conditions.push((policy.effect(), condition));
        }
        ToolPolicies {
            conditions,
            view: transparent.then(|| atoms.view()),
        }
    }

    pub(crate) fn view(&self) -> Option<&ToolView> {
        self.view.as_ref()
    }
}

impl ToolView {
    /// The signature of a tool: which atoms it satisfies (0: none).
    pub(crate) fn signature(&self, name: &str, id: impl FnOnce() -> String) -> (u32, u32) {
        let by_name = self.by_name.get(name).copied().unwrap_or(0);
        let by_uid = if self.by_uid.is_empty() {
            0
        } else {
            self.by_uid.get(&id()).copied().unwrap_or(0)
        };
        (by_name, by_uid)
    }

    /// Whether any atom names a tool: else every tool's signature is (0, 0).
    pub(crate) fn names_tools(&self) -> bool {
        !self.by_name.is_empty() || !self.by_uid.is_empty()
    }
}

/// Atoms found while scanning: each is the list of names (or tool entity
/// ids) it is true for.
#[derive(Default)]
struct Atoms {
    names: Vec<Vec<String>>,
    uids: Vec<Vec<String>>,
}

impl Atoms {
    fn view(self) -> ToolView {
        ToolView {
            by_name: intern(self.names),
            by_uid: intern(self.uids),
        }
    }
}

/// Maps each key to an id of the set of atoms containing it; equal sets get
/// equal ids, starting at 1.
fn intern(atoms: Vec<Vec<String>>) -> HashMap<String, u32> {
    let mut membership: HashMap<String, Vec<u32>> = HashMap::new();
    for (i, atom) in atoms.into_iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        for key in atom {
            let list = membership.entry(key).or_default();
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
    }
    let mut ids: HashMap<Vec<u32>, u32> = HashMap::new();
    membership
        .into_iter()
        .map(|(key, set)| {
            let next = u32::try_from(ids.len() + 1).unwrap_or(u32::MAX);
            let id = *ids.entry(set).or_insert(next);
            (key, id)
        })
        .collect()
}

fn is_resource(e: &Expr) -> bool {
    matches!(e.expr_kind(), ExprKind::Var(Var::Resource))
}

fn is_resource_name(e: &Expr) -> bool {
    matches!(e.expr_kind(), ExprKind::GetAttr { expr, attr } if is_resource(expr) && attr == "name")
}

fn string_literal(e: &Expr) -> Option<&str> {
    match e.expr_kind() {
        ExprKind::Lit(Literal::String(s)) => Some(s),
        _ => None,
    }
}

fn is_tool_type(uid: &ast::EntityUID) -> bool {
    let tool: &ast::EntityType = TYPES.tool.as_ref();
    uid.entity_type() == tool
}

/// Entity literals of an `in` right-hand side (`E` or `[E, ...]`).
fn uid_literals(e: &Expr) -> Option<Vec<&ast::EntityUID>> {
    match e.expr_kind() {
        ExprKind::Lit(Literal::EntityUID(uid)) => Some(vec![&**uid]),
        ExprKind::Set(items) => items
            .iter()
            .map(|item| match item.expr_kind() {
                ExprKind::Lit(Literal::EntityUID(uid)) => Some(&**uid),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Records in `atoms` the comparisons of `resource` with literals found in
/// `e`; false if `e` reads `resource` (or a tool entity literal) any other way.
fn scan(e: &Expr, atoms: &mut Atoms) -> bool {
    match e.expr_kind() {
        ExprKind::Var(Var::Resource) => false,
        ExprKind::Lit(Literal::EntityUID(uid)) => !is_tool_type(uid),
        ExprKind::Lit(_) | ExprKind::Var(_) => true,
        ExprKind::Slot(_) | ExprKind::Unknown(_) => false,
        ExprKind::GetAttr { expr, attr } if is_resource(expr) => {
            CLASS_ATTRS.contains(&attr.as_str())
        }
        ExprKind::HasAttr { expr, .. }
        | ExprKind::ExtHasAttr { expr, .. }
        | ExprKind::Is { expr, .. }
            if is_resource(expr) =>
        {
            true
        }
        ExprKind::BinaryApp {
            op: BinaryOp::Eq,
            arg1,
            arg2,
        } if is_resource_name(arg1) || is_resource_name(arg2) => {
            let other = if is_resource_name(arg1) { arg2 } else { arg1 };
            match string_literal(other) {
                Some(name) => {
                    atoms.names.push(vec![name.to_owned()]);
                    true
                }
                None => false,
            }
        }
        ExprKind::BinaryApp {
            op: BinaryOp::Eq,
            arg1,
            arg2,
        } if is_resource(arg1) || is_resource(arg2) => {
            let other = if is_resource(arg1) { arg2 } else { arg1 };
            match other.expr_kind() {
                ExprKind::Lit(Literal::EntityUID(uid)) => {
                    if is_tool_type(uid) {
                        atoms.uids.push(vec![uid.eid().as_ref().to_owned()]);
                    }
                    true
                }
                _ => false,
            }
        }
        // A tool's only ancestor is its tunnel, the same for every tool; so
        // `resource in E` differs between tools only for tool literals.
        ExprKind::BinaryApp {
            op: BinaryOp::In,
            arg1,
            arg2,
        } if is_resource(arg1) => match uid_literals(arg2) {
            Some(uids) => {
                let tools: Vec<String> = uids
                    .into_iter()
                    .filter(|uid| is_tool_type(uid))
                    .map(|uid| uid.eid().as_ref().to_owned())
                    .collect();
                if !tools.is_empty() {
                    atoms.uids.push(tools);
                }
                true
            }
            None => false,
        },
        ExprKind::BinaryApp {
            op: BinaryOp::Contains,
            arg1,
            arg2,
        } if is_resource_name(arg2) => match arg1.expr_kind() {
            ExprKind::Set(items) => {
                let names: Option<Vec<String>> = items
                    .iter()
                    .map(|item| string_literal(item).map(str::to_owned))
                    .collect();
                match names {
                    Some(names) => {
                        atoms.names.push(names);
                        true
                    }
                    None => false,
                }
            }
            _ => false,
        },
        ExprKind::If {
            test_expr,
            then_expr,
            else_expr,
        } => scan(test_expr, atoms) && scan(then_expr, atoms) && scan(else_expr, atoms),
        ExprKind::And { left, right } | ExprKind::Or { left, right } => {
            scan(left, atoms) && scan(right, atoms)
        }
        ExprKind::UnaryApp { arg, .. } => scan(arg, atoms),
        ExprKind::BinaryApp { arg1, arg2, .. } => scan(arg1, atoms) && scan(arg2, atoms),
        ExprKind::ExtensionFunctionApp { args, .. } => args.iter().all(|a| scan(a, atoms)),
        ExprKind::GetAttr { expr, .. }
        | ExprKind::HasAttr { expr, .. }
        | ExprKind::ExtHasAttr { expr, .. }
        | ExprKind::Like { expr, .. }
        | ExprKind::Is { expr, .. } => scan(expr, atoms),
        ExprKind::Set(items) => items.iter().all(|i| scan(i, atoms)),
        ExprKind::Record(fields) => fields.values().all(|f| scan(f, atoms)),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Whether `tools/call` is allowed by the union of `sets` for this request,
/// evaluating only the policies that can apply to `tools/call`. Same result
/// as Cedar's authorizer over the sets' union.
pub(crate) fn tool_allowed(
    sets: &[&Indexed],
    request: &cedar_policy::Request,
    store: &Entities,
) -> bool {
    let eval = Evaluator::new(
        request.as_ref().clone(),
        store.as_ref(),
        Extensions::all_available(),
    );
    let mut permitted = false;
    for set in sets {
        for (effect, condition) in &set.tools.conditions {
            if *effect == Effect::Permit && permitted {
                continue;
            }
            let satisfied = matches!(
                eval.interpret(condition, &EMPTY_SLOTS),
                Ok(value) if is_true(&value)
            );
            if satisfied {
                match effect {
                    Effect::Forbid => return false,
                    Effect::Permit => permitted = true,
                }
            }
        }
    }
    permitted
}

fn is_true(value: &Value) -> bool {
    matches!(value.value_kind(), ValueKind::Lit(Literal::Bool(true)))
}
