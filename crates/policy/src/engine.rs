//! The engine: indexed policy sets per tunnel and principal, and decisions.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, LazyLock};

use cedar_policy::{
    Authorizer, Entities, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, ResourceConstraint,
};

use crate::action::{Action, ResourceKind};
use crate::args::FlatArgs;
use crate::decision::{Decision, DecisionKind, Explanation, Subject};
use crate::entities::{self, Node, PrincipalKey, PrincipalNode, TYPES};
use crate::error::{PolicyError, Problem};
use crate::grant::{cedar_string, grant_policies};
use crate::listing::{self, Indexed};
use crate::model::{Principal, Request, RequestContext, ToolFlags, TunnelSpec};
use crate::source::{Origin, ParsedPolicy, PolicyInfo, PolicySource, parse_sources};

static AUTHORIZER: LazyLock<Authorizer> = LazyLock::new(Authorizer::new);

/// Id of the built-in permit that lets a tunnel's owner do everything on it.
pub const OWNER_POLICY_ID: &str = "builtin:owner";

/// The policy a tunnel with no owning person gets on a `--dev` relay (served
/// with an agent token): every signed-in caller may use it. Relay and agent
/// add it the same way.
pub fn dev_open_policy(tunnel: &str) -> PolicySource {
    PolicySource::new(
        "builtin:dev-token-tunnel",
        format!(
            "@id(\"builtin:dev-open\")\npermit (principal, action, resource in Mcp::Tunnel::{});\n",
            cedar_string(tunnel)
        ),
    )
}

/// Authorization decisions for every tunnel of a relay (or the one tunnel of
/// an agent). Immutable: [`Engine::with_tunnel`] and friends return a new
/// engine that shares everything unchanged, so cloning is two `Arc` bumps and
/// the relay can swap engines atomically.
#[derive(Clone)]
pub struct Engine {
    admin: Arc<AdminPolicies>,
    tunnels: Arc<HashMap<Arc<str>, Arc<TunnelEntry>>>,
}

/// The relay admin's policies, indexed by scope.
struct AdminPolicies {
    sources: Vec<PolicySource>,
    /// Scoped to no tunnel and no principal: part of every tunnel's base set.
    common: Vec<Policy>,
    /// Scoped to no tunnel, principal `in` a group, domain or user: part of
    /// every tunnel's set for that ancestor.
    common_members: Vec<(EntityUid, Policy)>,
    /// Scoped to one principal (`principal == ...`) but no tunnel: evaluated
    /// as an extra set, only for that principal.
    by_principal: HashMap<PrincipalKey, Indexed>,
    /// Scoped to one tunnel (`resource == / in Mcp::Tunnel::"x"`): merged into
    /// that tunnel's sets.
    by_tunnel: HashMap<String, Vec<ParsedPolicy>>,
    /// Info for the policies not scoped to a tunnel.
    infos: HashMap<PolicyId, Arc<PolicyInfo>>,
}

/// One tunnel's prebuilt sets and entities.
struct TunnelEntry {
    spec: TunnelSpec,
    tunnel_uid: EntityUid,
    tunnel_node: Node,
    /// Tool entities by tool name, with annotations resolved.
    tools: HashMap<String, (ToolFlags, Node)>,
    /// Admin and tunnel policies whose principal scope is open (`principal`,
    /// `principal is T`).
    base: Indexed,
    /// `base` plus the policies naming that principal (`principal == ...`).
    by_principal: HashMap<PrincipalKey, Indexed>,
    /// Policies for members of a group, domain or user (`principal in X`),
    /// by X; evaluated only for principals that are in X.
    by_member: HashMap<EntityUid, Indexed>,
    /// Info for the tunnel's own policies (admin tunnel-scoped, owner, grants).
    infos: HashMap<PolicyId, Arc<PolicyInfo>>,
}

impl Engine {
    /// An engine with the relay admin's policies (strictly validated) and no
    /// tunnels. Admin policies whose resource scope names a tunnel apply to
    /// that tunnel only; the others apply to every tunnel.
    pub fn new(admin: &[PolicySource]) -> Result<Engine, PolicyError> {
        let parsed = parse_sources(admin, Origin::Admin).map_err(PolicyError::Invalid)?;
        let mut common = Vec::new();
        let mut common_members = Vec::new();
        let mut by_principal: HashMap<PrincipalKey, PolicySet> = HashMap::new();
        let mut by_tunnel: HashMap<String, Vec<ParsedPolicy>> = HashMap::new();
        let mut infos = HashMap::new();
        for p in parsed {
            if let Some(tunnel) = tunnel_scope(&p.policy) {
                by_tunnel.entry(tunnel).or_default().push(p);
                continue;
            }
            infos.insert(p.policy.id().clone(), p.info.clone());
            match principal_scope(&p.policy) {
                Scope::Principal(key) => {
                    add(by_principal.entry(key).or_default(), &p.policy, "(admin)")?;
                }
                Scope::Member(uid) => common_members.push((uid, p.policy)),
                Scope::Any => common.push(p.policy),
            }
        }
        let by_principal = by_principal
            .into_iter()
            .map(|(key, set)| (key, Indexed::new(set)))
            .collect();
        Ok(Engine {
            admin: Arc::new(AdminPolicies {
                sources: admin.to_vec(),
                common,
                common_members,
                by_principal,
                by_tunnel,
                infos,
            }),
            tunnels: Arc::new(HashMap::new()),
        })
    }

    /// A copy of this engine with new admin policies; every tunnel is rebuilt
    /// from its spec.
    pub fn with_admin(&self, admin: &[PolicySource]) -> Result<Engine, PolicyError> {
        let mut engine = Engine::new(admin)?;
        let mut tunnels = HashMap::with_capacity(self.tunnels.len());
        for (name, entry) in self.tunnels.iter() {
            tunnels.insert(
                name.clone(),
                Arc::new(engine.build_tunnel(entry.spec.clone())?),
            );
        }
        engine.tunnels = Arc::new(tunnels);
        Ok(engine)
    }

    /// A copy of this engine with `spec` inserted or replaced. Validates the
    /// owner's policies (they apply to this tunnel only), turns grants into
    /// policies and prebuilds the tunnel's indexed sets; other tunnels are
    /// shared, not rebuilt.
    pub fn with_tunnel(&self, spec: TunnelSpec) -> Result<Engine, PolicyError> {
        let mut next = self.clone();
        next.set_tunnel(spec)?;
        Ok(next)
    }

    /// [`Self::with_tunnel`] in place: the tunnel map is copied only while
    /// another engine shares it, so rebuilding many tunnels of one engine
    /// copies it once, not once per tunnel. On error nothing changes.
    pub fn set_tunnel(&mut self, spec: TunnelSpec) -> Result<(), PolicyError> {
        let entry = self.build_tunnel(spec)?;
        Arc::make_mut(&mut self.tunnels)
            .insert(Arc::from(entry.spec.name.as_str()), Arc::new(entry));
        Ok(())
    }

    /// A copy of this engine without the named tunnel (requests to it are
    /// then denied).
    pub fn without_tunnel(&self, name: &str) -> Engine {
        if !self.tunnels.contains_key(name) {
            return self.clone();
        }
        let mut tunnels = (*self.tunnels).clone();
        tunnels.remove(name);
        Engine {
            admin: self.admin.clone(),
            tunnels: Arc::new(tunnels),
        }
    }

    /// The spec a tunnel was added with (owner, grants, tools, owner policies).
    pub fn tunnel(&self, name: &str) -> Option<&TunnelSpec> {
        self.tunnels.get(name).map(|entry| &entry.spec)
    }

    /// Names of the registered tunnels, in no particular order.
    pub fn tunnel_names(&self) -> impl Iterator<Item = &str> {
        self.tunnels.keys().map(|name| &**name)
    }

    /// The admin policy files the engine was built with.
    pub fn admin_sources(&self) -> &[PolicySource] {
        &self.admin.sources
    }

    /// Decides one message. Forbid wins; default deny except for the owner;
    /// housekeeping messages pass for anyone with access to the tunnel
    /// unless a forbid matches them.
    pub fn decide(&self, req: &Request) -> Decision {
        self.run(req).0
    }

    /// Decides every message of one HTTP request (a batch, or one message)
    /// for `principal` on `tunnel`: the ids of the policies that allowed
    /// them all, or the first refused message's index and its decision.
    pub fn decide_messages(
        &self,
        principal: &Principal,
        tunnel: &str,
        messages: &[crate::message::Message],
        context: &RequestContext,
    ) -> Result<Vec<String>, Box<(usize, Decision)>> {
        let mut policies = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let d = self.decide(&Request {
                principal,
                tunnel,
                method: &m.method,
                target: m.target.as_deref(),
                args: m.args.as_ref(),
                context,
            });
            if !d.allowed {
                return Err(Box::new((i, d)));
            }
            policies.extend(d.policies);
        }
        policies.sort();
        policies.dedup();
        Ok(policies)
    }

    /// [`Engine::decide`] plus the determining policies' text and source
    /// positions, the evaluation errors and how many policies were evaluated.
    pub fn explain(&self, req: &Request) -> Explanation {
        let (decision, evaluated) = self.run(req);
        Explanation {
            action: Action::from_method(req.method).as_str(),
            policies: decision.determining.iter().map(|p| (**p).clone()).collect(),
            errors: decision.errors.clone(),
            evaluated,
            decision,
        }
    }

    /// For each tool name, whether `tools/call` on it would be allowed (without
    /// arguments): for filtering `tools/list`. Equivalent to calling
    /// [`Engine::decide`] per tool, but evaluates one tool per class of tools
    /// the policies cannot tell apart (same flags, named by the same
    /// `resource.name` / `resource ==` literals; see `listing.rs`), and only
    /// the policies that can apply to `tools/call`. When a policy reads the
    /// tool otherwise, every tool is evaluated on its own.
    pub fn allowed_tools(
        &self,
        principal: &Principal,
        tunnel: &str,
        ctx: &RequestContext,
        tools: &[&str],
    ) -> Vec<bool> {
        let denied = || vec![false; tools.len()];
        let Some(entry) = self.tunnels.get(tunnel) else {
            return denied();
        };
        let key = PrincipalKey::of(principal);
        let principal = entities::principal_node(principal, &key);
        let sets = self.sets_for(entry, &key, &principal);
        let Ok(context) = entities::context(ctx, &[]) else {
            return denied();
        };
        let allowed = |name: &str, store: &Entities| {
            let uid = entities::uid(&TYPES.tool, &entities::member_id(tunnel, name));
            cedar_policy::Request::new(
                principal.uid.clone(),
                Action::ToolsCall.uid().clone(),
                uid,
                context.clone(),
                None,
            )
            .is_ok_and(|request| listing::tool_allowed(&sets, &request, store))
        };
        let store = |tools: Vec<Node>| {
            let mut nodes = Vec::with_capacity(tools.len() + 2);
            nodes.push(principal.node.clone());
            nodes.push(entry.tunnel_node.clone());
            nodes.extend(tools);
            entities::store(nodes)
        };

        let views: Option<Vec<_>> = sets.iter().map(|s| s.tools.view()).collect();
        let Some(views) = views else {
            // Some policy reads the tool in a way the analysis does not
            // cover: one evaluation per tool, each against a store holding
            // only that tool, as `decide` builds it.
            return tools
                .iter()
                .map(|name| store(vec![member_tool(entry, name)]).is_ok_and(|s| allowed(name, &s)))
                .collect();
        };
        // Tools with the same flags and the same atoms (see `listing`) have
        // the same decision: evaluate one representative per class.
        let named = views.iter().any(|v| v.names_tools());
        let mut classes: HashMap<(ToolFlags, Vec<(u32, u32)>), usize> = HashMap::new();
        let mut representatives: Vec<&str> = Vec::new();
        let class_of: Vec<usize> = tools
            .iter()
            .map(|name| {
                let flags = entry
                    .tools
                    .get(*name)
                    .map_or(ToolFlags::UNKNOWN, |(flags, _)| *flags);
                let signature = if named {
                    views
                        .iter()
                        .map(|v| v.signature(name, || entities::member_id(tunnel, name)))
                        .collect()
                } else {
                    Vec::new()
                };
                let next = representatives.len();
                *classes.entry((flags, signature)).or_insert_with(|| {
                    representatives.push(name);
                    next
                })
            })
            .collect();
        let nodes = representatives
            .iter()
            .map(|name| member_tool(entry, name))
            .collect();
        let Ok(store) = store(nodes) else {
            return denied();
        };
        let decisions: Vec<bool> = representatives
            .iter()
            .map(|name| allowed(name, &store))
            .collect();
        class_of.into_iter().map(|c| decisions[c]).collect()
    }

    /// For each prompt name, whether `prompts/get` would be allowed (without
    /// arguments): for filtering `prompts/list`.
    pub fn allowed_prompts(
        &self,
        principal: &Principal,
        tunnel: &str,
        ctx: &RequestContext,
        prompts: &[&str],
    ) -> Vec<bool> {
        self.allowed_members(Action::PromptsGet, principal, tunnel, ctx, prompts)
    }

    /// For each resource uri, whether `resources/read` would be allowed: for
    /// filtering `resources/list`.
    pub fn allowed_resources(
        &self,
        principal: &Principal,
        tunnel: &str,
        ctx: &RequestContext,
        uris: &[&str],
    ) -> Vec<bool> {
        self.allowed_members(Action::ResourcesRead, principal, tunnel, ctx, uris)
    }

    fn build_tunnel(&self, spec: TunnelSpec) -> Result<TunnelEntry, PolicyError> {
        let invalid = |message: String| PolicyError::InvalidSpec {
            tunnel: spec.name.clone(),
            message,
        };
        if spec.name.is_empty() {
            return Err(invalid("the tunnel name is empty".into()));
        }
        // An empty owner means nobody owns the tunnel: no owner permit.
        let owner = spec.owner.to_lowercase();
        if !owner.is_empty() && !owner.contains('@') {
            return Err(invalid(format!(
                "owner {:?} is not an email address",
                spec.owner
            )));
        }
        let mut grant_ids = HashSet::new();
        for grant in &spec.grants {
            if grant.tunnel != spec.name {
                return Err(invalid(format!(
                    "grant {:?} is for tunnel {:?}; pass it with that tunnel's spec",
                    grant.id, grant.tunnel
                )));
            }
            if !grant_ids.insert(grant.id.as_str()) {
                return Err(invalid(format!(
                    "grant id {:?} is used twice; grant ids must be unique",
                    grant.id
                )));
            }
        }

        // Owner policies: validated, and refused if they name another tunnel
        // (they could never match, which is surely a mistake).
        let owner_policies =
            parse_sources(&spec.owner_policies, Origin::Owner).map_err(PolicyError::Invalid)?;
        let problems: Vec<Problem> = owner_policies
            .iter()
            .filter_map(|p| {
                let other = tunnel_scope(&p.policy).filter(|t| *t != spec.name)?;
                Some(Problem {
                    file: p.info.source.clone(),
                    line: p.info.line,
                    column: 1,
                    message: format!(
                        "this policy names tunnel {other:?}, but owner policies apply only to their own tunnel {:?}",
                        spec.name
                    ),
                })
            })
            .collect();
        if !problems.is_empty() {
            return Err(PolicyError::Invalid(problems));
        }

        let mut generated: Vec<PolicySource> = spec
            .grants
            .iter()
            .map(|g| PolicySource::new(format!("grant:{}", g.id), grant_policies(g)))
            .collect();
        if !owner.is_empty() {
            generated.push(PolicySource::new(
                OWNER_POLICY_ID,
                format!(
                    "@id({})\npermit (principal == Mcp::User::{}, action, resource in Mcp::Tunnel::{});\n",
                    cedar_string(OWNER_POLICY_ID),
                    cedar_string(&owner),
                    cedar_string(&spec.name),
                ),
            ));
        }
        let generated =
            parse_sources(&generated, Origin::Generated).map_err(PolicyError::Invalid)?;

        let mut base = PolicySet::new();
        for policy in &self.admin.common {
            add(&mut base, policy, &spec.name)?;
        }
        let mut by_member: HashMap<EntityUid, PolicySet> = HashMap::new();
        for (uid, policy) in &self.admin.common_members {
            add(
                by_member.entry(uid.clone()).or_default(),
                policy,
                &spec.name,
            )?;
        }
        let admin_scoped = self.admin.by_tunnel.get(&spec.name).into_iter().flatten();
        let mut personal: HashMap<PrincipalKey, Vec<&Policy>> = HashMap::new();
        let mut infos = HashMap::new();
        for p in admin_scoped.chain(&owner_policies).chain(&generated) {
            infos.insert(p.policy.id().clone(), p.info.clone());
            match principal_scope(&p.policy) {
                Scope::Principal(key) => personal.entry(key).or_default().push(&p.policy),
                Scope::Member(uid) => {
                    add(by_member.entry(uid).or_default(), &p.policy, &spec.name)?;
                }
                Scope::Any => add(&mut base, &p.policy, &spec.name)?,
            }
        }
        let mut by_principal = HashMap::with_capacity(personal.len());
        for (key, policies) in personal {
            let mut set = base.clone();
            for policy in policies {
                add(&mut set, policy, &spec.name)?;
            }
            by_principal.insert(key, Indexed::new(set));
        }
        let by_member = by_member
            .into_iter()
            .map(|(uid, set)| (uid, Indexed::new(set)))
            .collect();

        let tools = spec
            .tools
            .iter()
            .map(|tool| {
                let flags = tool.flags();
                let node = entities::tool_node(&spec.name, &tool.name, flags);
                (tool.name.clone(), (flags, node))
            })
            .collect();
        Ok(TunnelEntry {
            tunnel_uid: entities::uid(&TYPES.tunnel, &spec.name),
            tunnel_node: entities::tunnel_node(&spec.name, &owner),
            tools,
            base: Indexed::new(base),
            by_principal,
            by_member,
            infos,
            spec,
        })
    }

    /// The decision and the number of policies evaluated.
    fn run(&self, req: &Request) -> (Decision, usize) {
        let action = Action::from_method(req.method);
        let key = PrincipalKey::of(req.principal);
        let kind = action.resource_kind();
        let subject = Subject {
            action: action.as_str(),
            target: match (kind, req.target) {
                (ResourceKind::Tunnel, _) | (_, None) => format!("tunnel {}", req.tunnel),
                (ResourceKind::Tool, Some(t)) => format!("tool {t}"),
                (ResourceKind::Prompt, Some(t)) => format!("prompt {t}"),
                (ResourceKind::Resource, Some(t)) => format!("resource {t}"),
            },
            principal: key.display(),
            refusal: None,
            via: None,
        };
        let Some(entry) = self.tunnels.get(req.tunnel) else {
            let why = format!("tunnel {:?} is not registered", req.tunnel);
            return (Decision::refuse(subject, why), 0);
        };
        let principal = entities::principal_node(req.principal, &key);
        let sets = self.sets_for(entry, &key, &principal);
        let evaluated = sets.iter().map(|s| s.set.num_of_policies()).sum();

        let principal_uid = principal.uid.clone();
        let (resource_uid, context, store) = match prepare(entry, action, principal, req) {
            Ok(prepared) => prepared,
            Err(why) => return (Decision::refuse(subject, why), evaluated),
        };
        let evaluate = |action: Action, resource: &EntityUid| {
            let request = cedar_policy::Request::new(
                principal_uid.clone(),
                action.uid().clone(),
                resource.clone(),
                context.clone(),
                None,
            );
            match request {
                Ok(request) => evaluate(&sets, &request, &store),
                Err(e) => Outcome::error(format!("request: {e}")),
            }
        };

        let mut outcome = evaluate(action, &resource_uid);
        let mut via = None;
        if action.is_housekeeping() && outcome.kind == DecisionKind::NotPermitted {
            for access in Action::ACCESS {
                let access_outcome = evaluate(access, &entry.tunnel_uid);
                outcome.errors.extend(access_outcome.errors);
                match access_outcome.kind {
                    DecisionKind::Permitted => {
                        outcome.kind = DecisionKind::Permitted;
                        outcome.policies = access_outcome.policies;
                        via = Some(access.as_str());
                        break;
                    }
                    // A forbidden `connect` means no access at all.
                    DecisionKind::Forbidden if access == Action::Connect => break,
                    _ => {}
                }
            }
        }

        let info = |id: &PolicyId| -> Arc<PolicyInfo> {
            entry
                .infos
                .get(id)
                .or_else(|| self.admin.infos.get(id))
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(PolicyInfo {
                        id: id.to_string(),
                        source: id.to_string(),
                        line: 0,
                        effect: crate::source::Effect::Permit,
                        text: String::new(),
                    })
                })
        };
        let determining: Vec<Arc<PolicyInfo>> = outcome.policies.iter().map(info).collect();
        let errors = outcome
            .errors
            .iter()
            .map(|(id, e)| match id {
                Some(id) => format!("{}: {e}", info(id).location()),
                None => e.clone(),
            })
            .collect();
        let decision = Decision {
            allowed: outcome.kind == DecisionKind::Permitted,
            kind: outcome.kind,
            policies: determining.iter().map(|p| p.id.clone()).collect(),
            errors,
            determining,
            subject: Subject { via, ..subject },
        };
        (decision, evaluated)
    }

    /// The policy sets that can apply to this principal on this tunnel: the
    /// tunnel's set for it (or the base set), the sets of the groups, domain
    /// (and user) it is a member of, and the admin's set naming it.
    fn sets_for<'e>(
        &'e self,
        entry: &'e TunnelEntry,
        key: &PrincipalKey,
        principal: &PrincipalNode,
    ) -> Vec<&'e Indexed> {
        let mut sets = Vec::with_capacity(4);
        sets.push(entry.by_principal.get(key).unwrap_or(&entry.base));
        if !entry.by_member.is_empty() {
            sets.extend(
                principal
                    .memberships
                    .iter()
                    .filter_map(|uid| entry.by_member.get(uid)),
            );
        }
        sets.extend(self.admin.by_principal.get(key));
        sets
    }

    fn allowed_members(
        &self,
        action: Action,
        principal: &Principal,
        tunnel: &str,
        ctx: &RequestContext,
        names: &[&str],
    ) -> Vec<bool> {
        let denied = || vec![false; names.len()];
        let Some(entry) = self.tunnels.get(tunnel) else {
            return denied();
        };
        let key = PrincipalKey::of(principal);
        let principal = entities::principal_node(principal, &key);
        let sets = self.sets_for(entry, &key, &principal);
        let ty = match action.resource_kind() {
            ResourceKind::Tool => &TYPES.tool,
            ResourceKind::Prompt => &TYPES.prompt,
            _ => &TYPES.resource,
        };
        // One store for all the checks: principal, tunnel, every member.
        let mut nodes = Vec::with_capacity(names.len() + 2);
        nodes.push(principal.node);
        nodes.push(entry.tunnel_node.clone());
        let mut uids = Vec::with_capacity(names.len());
        let mut seen = HashSet::with_capacity(names.len());
        for name in names {
            if seen.insert(*name) {
                nodes.push(match action.resource_kind() {
                    ResourceKind::Tool => member_tool(entry, name),
                    ResourceKind::Prompt => entities::member_node(ty, "name", tunnel, name),
                    _ => entities::member_node(ty, "uri", tunnel, name),
                });
            }
            uids.push(entities::uid(ty, &entities::member_id(tunnel, name)));
        }
        let (Ok(store), Ok(context)) = (entities::store(nodes), entities::context(ctx, &[])) else {
            return denied();
        };
        uids.into_iter()
            .map(|uid| {
                cedar_policy::Request::new(
                    principal.uid.clone(),
                    action.uid().clone(),
                    uid,
                    context.clone(),
                    None,
                )
                .is_ok_and(|request| allowed(&sets, &request, &store))
            })
            .collect()
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("admin_sources", &self.admin.sources.len())
            .field("tunnels", &self.tunnels.len())
            .finish()
    }
}

/// Result of evaluating one request against the indexed sets.
struct Outcome {
    kind: DecisionKind,
    policies: Vec<PolicyId>,
    errors: Vec<(Option<PolicyId>, String)>,
}

impl Outcome {
    fn error(message: String) -> Outcome {
        Outcome {
            kind: DecisionKind::NotPermitted,
            policies: Vec::new(),
            errors: vec![(None, message)],
        }
    }
}

/// Cedar over the union of `sets`: evaluating disjoint sets separately and
/// combining is the same as evaluating their union, since a denied response
/// with reasons means a forbid matched.
fn evaluate(sets: &[&Indexed], request: &cedar_policy::Request, store: &Entities) -> Outcome {
    let mut permits = Vec::new();
    let mut forbids = Vec::new();
    let mut errors = Vec::new();
    for set in sets {
        let response = AUTHORIZER.is_authorized(request, &set.set, store);
        let reasons = response.diagnostics().reason().cloned();
        match response.decision() {
            cedar_policy::Decision::Allow => permits.extend(reasons),
            cedar_policy::Decision::Deny => forbids.extend(reasons),
        }
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(e) = error;
            errors.push((Some(e.policy_id().clone()), e.inner().to_string()));
        }
    }
    let (kind, policies) = if !forbids.is_empty() {
        (DecisionKind::Forbidden, forbids)
    } else if !permits.is_empty() {
        (DecisionKind::Permitted, permits)
    } else {
        (DecisionKind::NotPermitted, Vec::new())
    };
    Outcome {
        kind,
        policies,
        errors,
    }
}

/// [`evaluate`] reduced to allowed or not, without collecting ids.
fn allowed(sets: &[&Indexed], request: &cedar_policy::Request, store: &Entities) -> bool {
    let mut permitted = false;
    for set in sets {
        let response = AUTHORIZER.is_authorized(request, &set.set, store);
        match response.decision() {
            cedar_policy::Decision::Allow => permitted = true,
            cedar_policy::Decision::Deny => {
                if response.diagnostics().reason().next().is_some() {
                    return false;
                }
            }
        }
    }
    permitted
}

/// Resource uid, context and entity store for one request.
fn prepare(
    entry: &TunnelEntry,
    action: Action,
    principal: PrincipalNode,
    req: &Request,
) -> Result<(EntityUid, cedar_policy::Context, Entities), String> {
    let tunnel = entry.spec.name.as_str();
    let mut nodes = Vec::with_capacity(4);
    nodes.push(principal.node);
    nodes.push(entry.tunnel_node.clone());
    let resource_uid = match action.resource_kind() {
        ResourceKind::Tunnel => entry.tunnel_uid.clone(),
        kind => {
            let Some(target) = req.target else {
                return Err(format!("{} without a target name", action.as_str()));
            };
            let (node, ty) = match kind {
                ResourceKind::Tool => (member_tool(entry, target), &TYPES.tool),
                ResourceKind::Prompt => (
                    entities::member_node(&TYPES.prompt, "name", tunnel, target),
                    &TYPES.prompt,
                ),
                _ => (
                    entities::member_node(&TYPES.resource, "uri", tunnel, target),
                    &TYPES.resource,
                ),
            };
            nodes.push(node);
            entities::uid(ty, &entities::member_id(tunnel, target))
        }
    };
    let args = FlatArgs::from_json(req.args);
    nodes.extend(entities::arg_nodes(&args));
    let context = entities::context(req.context, &args.names)?;
    Ok((resource_uid, context, entities::store(nodes)?))
}

/// A known tool's prebuilt entity, or an unannotated (destructive) one.
fn member_tool(entry: &TunnelEntry, name: &str) -> Node {
    match entry.tools.get(name) {
        Some((_, node)) => node.clone(),
        None => entities::tool_node(&entry.spec.name, name, ToolFlags::UNKNOWN),
    }
}

/// How a policy's principal scope narrows whom it can apply to.
enum Scope {
    /// `principal` or `principal is T`: anyone.
    Any,
    /// `principal == User::"e"` / `ServiceAccount::"n"`: one principal.
    Principal(PrincipalKey),
    /// `principal in X` / `principal is T in X`: members of X (or X itself).
    Member(EntityUid),
}

fn principal_scope(policy: &Policy) -> Scope {
    match policy.principal_constraint() {
        // `==` a uid of another type never matches; the base set is merely
        // a wasteful place for it, never a wrong one.
        PrincipalConstraint::Eq(uid) => {
            PrincipalKey::from_uid(&uid).map_or(Scope::Any, Scope::Principal)
        }
        PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid) => Scope::Member(uid),
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => Scope::Any,
    }
}

/// The tunnel a policy's resource scope names (`resource == Mcp::Tunnel::"x"`,
/// `resource in Mcp::Tunnel::"x"`, `resource is T in Mcp::Tunnel::"x"`).
fn tunnel_scope(policy: &Policy) -> Option<String> {
    let uid = match policy.resource_constraint() {
        ResourceConstraint::Eq(uid)
        | ResourceConstraint::In(uid)
        | ResourceConstraint::IsIn(_, uid) => uid,
        ResourceConstraint::Any | ResourceConstraint::Is(_) => return None,
    };
    is_type(&uid, &TYPES.tunnel).then(|| uid.id().unescaped().to_owned())
}

fn is_type(uid: &EntityUid, ty: &EntityTypeName) -> bool {
    uid.type_name() == ty
}

fn add(set: &mut PolicySet, policy: &Policy, tunnel: &str) -> Result<(), PolicyError> {
    set.add(policy.clone())
        .map_err(|e| PolicyError::InvalidSpec {
            tunnel: tunnel.to_owned(),
            message: format!("policy {}: {e}", policy.id()),
        })
}
