//! The Cedar entities and context a request is evaluated against.
//!
//! Built directly as Cedar values with `cedar-policy-core` rather than through
//! `cedar_policy::Entity::new` / `Context::from_pairs` / `Entities::from_entities`:
//! those re-evaluate every attribute as an expression (an `ip(..)` alone costs
//! microseconds, because the function name is re-parsed) and recompute the
//! transitive closure of the hierarchy on every call (hundreds of microseconds
//! for 100 tools). Our hierarchy is one level deep — users under groups and
//! domains, tools/prompts/resources under their tunnel, and the parents have
//! no parents — so the parent sets already are the transitive closure and the
//! store is built with `TCComputation::AssumeAlreadyComputed`. The
//! `built_entities_and_context_conform_to_the_schema` test checks the result
//! against the schema.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use cedar_policy::{Context, Entities, EntityId, EntityTypeName, EntityUid};
use cedar_policy_core::ast::{self, Name, PartialValue, Value, ValueKind};
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;

use crate::args::FlatArgs;
use crate::model::{Principal, RequestContext, ToolFlags};

/// An entity ready to go into a store; cloning is an `Arc` bump.
pub(crate) type Node = Arc<ast::Entity>;

/// Entity type names of the schema, parsed once.
pub(crate) struct Types {
    pub(crate) user: EntityTypeName,
    pub(crate) group: EntityTypeName,
    pub(crate) domain: EntityTypeName,
    pub(crate) service: EntityTypeName,
    pub(crate) tunnel: EntityTypeName,
    pub(crate) tool: EntityTypeName,
    pub(crate) prompt: EntityTypeName,
    pub(crate) resource: EntityTypeName,
    arg_numbers: EntityTypeName,
    arg_strings: EntityTypeName,
    arg_bools: EntityTypeName,
    arg_lists: EntityTypeName,
}

pub(crate) static TYPES: LazyLock<Types> = LazyLock::new(|| {
    // Invariant: every name below is a constant, valid Cedar type name.
    let ty = |name: &str| EntityTypeName::from_str(name).expect("valid type name");
    Types {
        user: ty("Mcp::User"),
        group: ty("Mcp::Group"),
        domain: ty("Mcp::Domain"),
        service: ty("Mcp::ServiceAccount"),
        tunnel: ty("Mcp::Tunnel"),
        tool: ty("Mcp::Tool"),
        prompt: ty("Mcp::Prompt"),
        resource: ty("Mcp::Resource"),
        arg_numbers: ty("Mcp::ArgNumbers"),
        arg_strings: ty("Mcp::ArgStrings"),
        arg_bools: ty("Mcp::ArgBools"),
        arg_lists: ty("Mcp::ArgLists"),
    }
});

/// The uids of the argument entities (one per value type, fixed id).
struct ArgUids {
    numbers: EntityUid,
    strings: EntityUid,
    bools: EntityUid,
    lists: EntityUid,
}

static ARG_UIDS: LazyLock<ArgUids> = LazyLock::new(|| ArgUids {
    numbers: uid(&TYPES.arg_numbers, "args"),
    strings: uid(&TYPES.arg_strings, "args"),
    bools: uid(&TYPES.arg_bools, "args"),
    lists: uid(&TYPES.arg_lists, "args"),
});

/// Cedar's `ip` constructor, looked up once.
static IP_CONSTRUCTOR: LazyLock<Option<&'static ast::ExtensionFunction>> = LazyLock::new(|| {
    let name = Name::parse_unqualified_name("ip").ok()?;
    Extensions::all_available().func(&name).ok()
});

pub(crate) fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

/// How a principal is keyed in the per-principal policy index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum PrincipalKey {
    User(String),
    Service(String),
}

impl PrincipalKey {
    pub(crate) fn of(principal: &Principal) -> PrincipalKey {
        match principal {
            Principal::User { email, .. } => PrincipalKey::User(email.to_lowercase()),
            Principal::ServiceAccount { name } => PrincipalKey::Service(name.clone()),
        }
    }

    /// The key a policy scope `principal == <uid>` names, if it is ours.
    pub(crate) fn from_uid(uid: &EntityUid) -> Option<PrincipalKey> {
        let id = uid.id().unescaped().to_owned();
        if uid.type_name() == &TYPES.user {
            Some(PrincipalKey::User(id))
        } else if uid.type_name() == &TYPES.service {
            Some(PrincipalKey::Service(id))
        } else {
            None
        }
    }

    /// How the principal reads in messages.
    pub(crate) fn display(&self) -> String {
        match self {
            PrincipalKey::User(email) => email.clone(),
            PrincipalKey::Service(name) => format!("service account {name}"),
        }
    }
}

/// The principal as Cedar sees it.
pub(crate) struct PrincipalNode {
    pub(crate) uid: EntityUid,
    pub(crate) node: Node,
    /// The principal itself and its ancestors (groups, domain): the keys of
    /// `principal in ...` policies that can apply.
    pub(crate) memberships: Vec<EntityUid>,
}

/// The principal's entity: a user with its groups and domain as parents, or a
/// service account.
pub(crate) fn principal_node(principal: &Principal, key: &PrincipalKey) -> PrincipalNode {
    match (principal, key) {
        (Principal::User { groups, .. }, PrincipalKey::User(email)) => {
            let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
            let me = uid(&TYPES.user, email);
            let mut memberships = Vec::with_capacity(groups.len() + 2);
            memberships.push(me.clone());
            memberships.extend(groups.iter().map(|g| uid(&TYPES.group, g)));
            if !domain.is_empty() {
                memberships.push(uid(&TYPES.domain, domain));
            }
            let groups = Value::set(groups.iter().map(|g| string(g)), None);
            let node = node(
                &me,
                [
                    ("email", string(email)),
                    ("domain", string(domain)),
                    ("groups", groups),
                ],
                &memberships[1..],
                Vec::new(),
            );
            PrincipalNode {
                uid: me,
                node,
                memberships,
            }
        }
        (Principal::ServiceAccount { name }, _) | (_, PrincipalKey::Service(name)) => {
            let me = uid(&TYPES.service, name);
            PrincipalNode {
                node: node(&me, [("name", string(name))], &[], Vec::new()),
                memberships: vec![me.clone()],
                uid: me,
            }
        }
    }
}

/// A tunnel's entity.
pub(crate) fn tunnel_node(name: &str, owner: &str) -> Node {
    node(
        &uid(&TYPES.tunnel, name),
        [("name", string(name)), ("owner", string(owner))],
        &[],
        Vec::new(),
    )
}

/// The id of a tool, prompt or resource entity: `<tunnel>/<name>`.
pub(crate) fn member_id(tunnel: &str, name: &str) -> String {
    format!("{tunnel}/{name}")
}

/// A tool's entity, child of its tunnel.
pub(crate) fn tool_node(tunnel: &str, name: &str, flags: ToolFlags) -> Node {
    node(
        &uid(&TYPES.tool, &member_id(tunnel, name)),
        [
            ("name", string(name)),
            ("tunnel", string(tunnel)),
            ("readOnly", Value::from(flags.read_only)),
            ("destructive", Value::from(flags.destructive)),
            ("idempotent", Value::from(flags.idempotent)),
            ("openWorld", Value::from(flags.open_world)),
            ("annotated", Value::from(flags.annotated)),
        ],
        &[uid(&TYPES.tunnel, tunnel)],
        Vec::new(),
    )
}

/// A prompt's (`name`) or resource's (`uri`) entity, child of its tunnel.
pub(crate) fn member_node(
    ty: &EntityTypeName,
    name_attr: &'static str,
    tunnel: &str,
    name: &str,
) -> Node {
    node(
        &uid(ty, &member_id(tunnel, name)),
        [(name_attr, string(name)), ("tunnel", string(tunnel))],
        &[uid(&TYPES.tunnel, tunnel)],
        Vec::new(),
    )
}

/// The tag-bearing entities holding argument values. Empty maps are left out:
/// `hasTag` on an absent entity is false, so policies behave the same.
pub(crate) fn arg_nodes(args: &FlatArgs) -> Vec<Node> {
    let uids = &*ARG_UIDS;
    let mut out = Vec::new();
    let mut add = |uid: &EntityUid, tags: Vec<(String, Value)>| {
        if !tags.is_empty() {
            out.push(node(uid, [], &[], tags));
        }
    };
    add(&uids.numbers, tags(&args.numbers, |v| Value::from(*v)));
    add(&uids.strings, tags(&args.strings, |v| string(v)));
    add(&uids.bools, tags(&args.bools, |v| Value::from(*v)));
    add(
        &uids.lists,
        tags(&args.lists, |v| {
            Value::set(v.iter().map(|s| string(s)), None)
        }),
    );
    out
}

/// The request context (see `Ctx` in the schema).
pub(crate) fn context(ctx: &RequestContext, arg_names: &[String]) -> Result<Context, String> {
    let ip = ctx.source_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let seconds_of_day = ctx.time.rem_euclid(86_400);
    // 1970-01-01 was a Thursday (ISO weekday 4).
    let weekday = (ctx.time.div_euclid(86_400) + 3).rem_euclid(7) + 1;
    let uids = &*ARG_UIDS;
    let args = Value::record(
        [
            (
                "names",
                Value::set(arg_names.iter().map(|n| string(n)), None),
            ),
            ("numbers", entity_value(&uids.numbers)),
            ("strings", entity_value(&uids.strings)),
            ("bools", entity_value(&uids.bools)),
            ("lists", entity_value(&uids.lists)),
        ],
        None,
    );
    let record = Value::record(
        [
            ("client_id", string(&ctx.client_id)),
            (
                "scopes",
                Value::set(ctx.scopes.iter().map(|s| string(s)), None),
            ),
            ("source_ip", ip_value(ip)?),
            ("time", Value::from(ctx.time)),
            ("hour", Value::from(seconds_of_day / 3600)),
            ("weekday", Value::from(weekday)),
            (
                "protocol_version",
                string(ctx.protocol_version.as_deref().unwrap_or("")),
            ),
            ("args", args),
        ],
        None,
    );
    match record.value_kind() {
        ValueKind::Record(map) => Ok(Context::from(ast::Context::Value(map.clone()))),
        _ => Err("context is not a record".to_owned()),
    }
}

/// A store of entities whose parent sets are already transitively closed
/// (see the module docs). Duplicate uids must not be passed.
pub(crate) fn store(nodes: Vec<Node>) -> Result<Entities, String> {
    CoreEntities::new()
        .add_entities(
            nodes,
            None::<&NoEntitiesSchema>,
            TCComputation::AssumeAlreadyComputed,
            Extensions::all_available(),
        )
        .map(Entities::from)
        .map_err(|e| format!("entities: {e}"))
}

fn node<const N: usize>(
    uid: &EntityUid,
    attrs: [(&str, Value); N],
    parents: &[EntityUid],
    tags: Vec<(String, Value)>,
) -> Node {
    Arc::new(ast::Entity::new_with_attr_partial_value(
        uid.clone().into(),
        attrs
            .into_iter()
            .map(|(k, v)| (k.into(), PartialValue::from(v))),
        HashSet::new(),
        parents.iter().map(|p| p.clone().into()).collect(),
        tags.into_iter()
            .map(|(k, v)| (k.into(), PartialValue::from(v))),
    ))
}

fn string(s: &str) -> Value {
    Value::from(s)
}

fn entity_value(uid: &EntityUid) -> Value {
    Value::from(ast::EntityUID::from(uid.clone()))
}

fn ip_value(ip: IpAddr) -> Result<Value, String> {
    let constructor = IP_CONSTRUCTOR.ok_or("Cedar's ip extension is not available")?;
    match constructor.call(&[Value::from(ip.to_string())]) {
        Ok(PartialValue::Value(value)) => Ok(value),
        Ok(PartialValue::Residual(_)) => Err(format!("ip({ip}) did not evaluate")),
        Err(e) => Err(format!("ip({ip}): {e}")),
    }
}

/// Tags from `(key, value)` pairs; a repeated key keeps its last value.
fn tags<T>(pairs: &[(String, T)], value: impl Fn(&T) -> Value) -> Vec<(String, Value)> {
    let mut seen = HashSet::with_capacity(pairs.len());
    let mut out: Vec<(String, Value)> = pairs
        .iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.as_str()))
        .map(|(k, v)| (k.clone(), value(v)))
        .collect();
    out.reverse();
    out
}
