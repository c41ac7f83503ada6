//! Policy files: splitting into policies, parsing, strict validation, ids and
//! source positions.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cedar_policy::{Policy, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};

use crate::error::{PolicyError, Problem};

/// The published Cedar schema (namespace `Mcp`) every policy is validated
/// against, in Cedar's human-readable schema format.
pub const SCHEMA: &str = include_str!("../schema.cedarschema");

/// The parsed [`SCHEMA`].
pub(crate) static PARSED_SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    // Invariant: SCHEMA is a constant checked by the `schema_parses` test.
    let (schema, _warnings) = Schema::from_cedarschema_str(SCHEMA).expect("SCHEMA is valid");
    schema
});

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| Validator::new(PARSED_SCHEMA.clone()));

/// A policy file: its name (for messages and default policy ids) and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySource {
    /// File name used in messages and default ids, e.g. `admin.cedar`.
    pub name: String,
    /// Cedar policy text.
    pub text: String,
}

impl PolicySource {
    /// A source from a name and its text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> PolicySource {
        PolicySource {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// Whether a policy permits or forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// `permit`.
    Permit,
    /// `forbid`.
    Forbid,
}

/// Where a loaded policy came from, for decisions and explanations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// The policy id: its `@id("...")` annotation, else `FILE:LINE`;
    /// `grant:<id>` for grants, `builtin:owner` for the owner's permit.
    pub id: String,
    /// The file it was read from (`grant:<id>` / `builtin` for generated ones).
    pub source: String,
    /// 1-based line of the policy's first token in that file.
    pub line: u32,
    /// Permit or forbid.
    pub effect: Effect,
    /// The policy text as written.
    pub text: String,
}

impl PolicyInfo {
    /// `admin.cedar:3 (no-destructive)`, or `admin.cedar:3` when the id is
    /// the default one, or just the id (`grant:g1`) for generated policies.
    pub fn location(&self) -> String {
        if self.id == self.source {
            return self.id.clone();
        }
        let at = format!("{}:{}", self.source, self.line);
        if self.id == at {
            at
        } else {
            format!("{at} ({})", self.id)
        }
    }
}

/// Strictly validates one policy file against [`SCHEMA`] and returns how many
/// policies it holds. Every problem is reported as `FILE:LINE:COL: message`.
pub fn validate(source: &PolicySource) -> Result<usize, PolicyError> {
    parse_sources([source], Origin::Admin)
        .map(|policies| policies.len())
        .map_err(PolicyError::Invalid)
}

/// Which kind of source policies come from; keeps internal ids distinct so an
/// owner's `@id("x")` never collides with an admin's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Admin,
    Owner,
    Generated,
}

impl Origin {
    fn prefix(self) -> &'static str {
        match self {
            Origin::Admin => "admin/",
            Origin::Owner => "owner/",
            Origin::Generated => "",
        }
    }
}

/// A parsed, validated policy with its internal id and public info.
#[derive(Debug, Clone)]
pub(crate) struct ParsedPolicy {
    pub(crate) policy: Policy,
    pub(crate) info: Arc<PolicyInfo>,
    /// Byte offset of the policy in its file, for later problems.
    pub(crate) file: usize,
}

/// Parses and validates a group of files whose policy ids must be unique.
pub(crate) fn parse_sources<'a>(
    sources: impl IntoIterator<Item = &'a PolicySource>,
    origin: Origin,
) -> Result<Vec<ParsedPolicy>, Vec<Problem>> {
    let sources: Vec<&PolicySource> = sources.into_iter().collect();
    let mut problems = Vec::new();
    let mut parsed: Vec<ParsedPolicy> = Vec::new();
    // Internal id -> (file index, byte offset of the policy in its file).
    let mut starts: HashMap<PolicyId, (usize, usize)> = HashMap::new();
    let mut seen: HashMap<String, (usize, u32)> = HashMap::new();
    let lines: Vec<LineIndex> = sources.iter().map(|s| LineIndex::new(&s.text)).collect();

    for (file, source) in sources.iter().enumerate() {
        for (start, end) in split_statements(&source.text) {
            let snippet = &source.text[start..end];
            let (line, column) = lines[file].position(start);
            let problem = |offset: usize, message: String| {
                let (line, column) = lines[file].position(start + offset);
                Problem {
                    file: source.name.clone(),
                    line,
                    column,
                    message,
                }
            };
            let temp_id = PolicyId::new(format!("{file}:{start}"));
            let policy = match Policy::parse(Some(temp_id), snippet) {
                Ok(policy) => policy,
                Err(errors) => {
                    for error in errors.iter() {
                        problems.push(problem(first_label(error).unwrap_or(0), message(error)));
                    }
                    continue;
                }
            };
            let id = match policy.annotation("id") {
                Some(id) => id.to_owned(),
                None => format!("{}:{line}", source.name),
            };
            if let Some((first_file, first_line)) = seen.get(&id) {
                problems.push(Problem {
                    file: source.name.clone(),
                    line,
                    column,
                    message: format!(
                        "duplicate policy id {id:?} (first used at {}:{first_line}); ids must be unique",
                        sources[*first_file].name
                    ),
                });
                continue;
            }
            seen.insert(id.clone(), (file, line));
            let internal = PolicyId::new(format!("{}{id}", origin.prefix()));
            starts.insert(internal.clone(), (file, start));
            let effect = match policy.effect() {
                cedar_policy::Effect::Permit => Effect::Permit,
                cedar_policy::Effect::Forbid => Effect::Forbid,
            };
            parsed.push(ParsedPolicy {
                policy: policy.new_id(internal),
                info: Arc::new(PolicyInfo {
                    id,
                    source: source.name.clone(),
                    line,
                    effect,
                    text: snippet.to_owned(),
                }),
                file,
            });
        }
    }

    let mut set = PolicySet::new();
    for p in &parsed {
        // Ids were made unique above; a failure here would be a Cedar quirk,
        // reported rather than panicking.
        if let Err(e) = set.add(p.policy.clone()) {
            problems.push(Problem {
                file: sources[p.file].name.clone(),
                line: p.info.line,
                column: 1,
                message: e.to_string(),
            });
        }
    }
    let result = VALIDATOR.validate(&set, ValidationMode::Strict);
    for error in result.validation_errors() {
        let Some(&(file, start)) = starts.get(error.policy_id()) else {
            continue;
        };
        let offset = first_label(error).unwrap_or(0);
        let (line, column) = lines[file].position(start + offset);
        problems.push(Problem {
            file: sources[file].name.clone(),
            line,
            column,
            message: message(error),
        });
    }

    if problems.is_empty() {
        Ok(parsed)
    } else {
        let order: HashMap<&str, usize> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        problems.sort_by_key(|p| (order.get(p.file.as_str()).copied(), p.line, p.column));
        problems.dedup();
        Err(problems)
    }
}

/// The byte offset of a diagnostic's first labelled span.
fn first_label(diagnostic: &dyn Diagnostic) -> Option<usize> {
    diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset())
}

/// One line: the error, its help if any, with our internal policy ids removed
/// (the position already says which policy).
fn message(diagnostic: &dyn Diagnostic) -> String {
    let mut text = diagnostic.to_string();
    if let Some(help) = diagnostic.help() {
        text.push_str("; ");
        text.push_str(&help.to_string());
    }
    while let Some(start) = text.find("for policy `") {
        let rest = &text[start + "for policy `".len()..];
        let Some(end) = rest.find("`, ") else { break };
        let cut = start + "for policy `".len() + end + "`, ".len();
        text.replace_range(start..cut, "");
    }
    text.replace('\n', " ")
}

/// Byte ranges `[start, end)` of the policies in a file: from each policy's
/// first token to its terminating `;` (Cedar uses `;` only there), skipping
/// `//` comments and string literals. Trailing text without `;` is returned
/// too, so the parser reports it.
fn split_statements(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut first: Option<usize> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                first.get_or_insert(i);
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                continue;
            }
            b';' => {
                out.push((first.take().unwrap_or(i), i + 1));
            }
            b if b.is_ascii_whitespace() => {}
            _ => {
                first.get_or_insert(i);
            }
        }
        i += 1;
    }
    if let Some(start) = first {
        out.push((start, bytes.len()));
    }
    out
}

/// Converts byte offsets to 1-based line and column (in characters).
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> LineIndex<'a> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    fn position(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let line_start = self.starts[line];
        let column = self
            .text
            .get(line_start..offset)
            .map_or(offset - line_start, |s| s.chars().count());
        (to_u32(line + 1), to_u32(column + 1))
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parses() {
        let _ = &*PARSED_SCHEMA;
    }

    #[test]
    fn statements_split_on_semicolons_outside_strings_and_comments() {
        let text = "// a; comment\npermit(principal, action, resource) when { \"a;b\" == \"a;b\" };\n\n@id(\"x;\") forbid(principal, action, resource);\npermit";
        let spans: Vec<&str> = split_statements(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect();
        assert_eq!(spans.len(), 3);
        assert!(spans[0].starts_with("permit(") && spans[0].ends_with("};"));
        assert!(spans[1].starts_with("@id(\"x;\")"));
        assert_eq!(spans[2], "permit");
    }

    #[test]
    fn positions_are_one_based_characters() {
        let idx = LineIndex::new("ab\nçd\n");
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(3), (2, 1));
        assert_eq!(idx.position(5), (2, 2));
        assert_eq!(idx.position(100), (3, 1));
    }

    #[test]
    fn ids_come_from_annotation_or_file_and_line() {
        let src = PolicySource::new(
            "admin.cedar",
            "// header\n\npermit(principal, action, resource);\n@id(\"named\")\nforbid(principal, action, resource);\n",
        );
        let parsed = parse_sources([&src], Origin::Admin).expect("valid");
        let ids: Vec<(&str, u32)> = parsed
            .iter()
            .map(|p| (p.info.id.as_str(), p.info.line))
            .collect();
        assert_eq!(ids, [("admin.cedar:3", 3), ("named", 4)]);
        assert_eq!(validate(&src), Ok(2));
    }

    #[test]
    fn duplicate_ids_are_reported_at_the_second_use() {
        let a = PolicySource::new("a.cedar", "@id(\"x\") permit(principal, action, resource);");
        let b = PolicySource::new(
            "b.cedar",
            "\n@id(\"x\") permit(principal, action, resource);",
        );
        let err = parse_sources([&a, &b], Origin::Admin).expect_err("duplicate");
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].file, "b.cedar");
        assert_eq!((err[0].line, err[0].column), (2, 1));
        assert!(err[0].message.contains("a.cedar:1"), "{}", err[0].message);
    }
}
