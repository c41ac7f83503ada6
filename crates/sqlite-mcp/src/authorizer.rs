//! The SQLite authorizer: the engine-level rule of what a statement may do.
//!
//! SQLite calls the authorizer for every action a statement will take while it compiles it
//! (and again for SQL it runs internally, such as the `ATTACH` inside `VACUUM INTO`). This is
//! what makes "read-only" a property of the engine rather than of string matching: a `DELETE`
//! hidden behind a CTE, a comment or odd casing is still a `DELETE` action.
//!
//! [`decide`] is the pure rule (unit-tested below, no database needed). [`Authorizer`] installs
//! it on a connection and remembers the first refusal, so the caller can say what was refused
//! instead of SQLite's bare "not authorized".

use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization, TransactionOperation};

/// Which statements a connection may compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Only reads: SELECT, reads of columns, harmless functions, recursion, schema pragmas.
    ReadOnly,
    /// Any single data or schema change, except leaving the database file (ATTACH, VACUUM
    /// INTO), transaction control and setting pragmas.
    Write,
    /// One CREATE TABLE and what SQLite does internally to record it.
    CreateTable,
}

/// A refused action, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denial {
    /// What was refused, e.g. `DELETE on orders`.
    pub(crate) what: String,
    /// Why, and what to do instead.
    pub(crate) why: &'static str,
}

/// PRAGMAs that only read the schema. Their argument is a table or index name, never a setting.
const READ_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
];

/// SQL functions that reach outside the database or can change how SQLite behaves. Most are not
/// compiled into this library at all (`readfile`, `writefile` and `edit` belong to the sqlite3
/// shell, `load_extension` is switched off); naming them keeps that true if the build changes.
const DENIED_FUNCTIONS: &[&str] = &[
    "load_extension",
    "readfile",
    "writefile",
    "edit",
    "fts3_tokenizer",
];

const WHY_READ_ONLY: &str =
    "this database is served read-only, so only SELECT (and WITH ... SELECT) statements run";
const WHY_OUTSIDE: &str = "the tool serves exactly one database file and never opens another";
const WHY_TRANSACTION: &str =
    "each call runs as its own transaction; send one statement per call without BEGIN/COMMIT";
const WHY_PRAGMA: &str = "only the schema-reading pragmas table_info, table_xinfo, table_list, \
     index_list, index_info, index_xinfo and foreign_key_list are allowed";
const WHY_FUNCTION: &str = "the function can reach outside the database";
const WHY_CREATE_TABLE: &str = "create_table only creates one ordinary table; use write_query for \
     other statements";
const WHY_UNKNOWN: &str = "SQLite asked about an action this server does not recognise";

/// The rule: may `action` run under `policy`?
pub(crate) fn decide(policy: Policy, action: &AuthAction<'_>) -> Result<(), Denial> {
    use AuthAction as A;
    let deny = |why: &'static str| {
        Err(Denial {
            what: describe(action),
            why,
        })
    };
    // Rules that hold whatever the policy.
    match action {
        A::Attach { .. } | A::Detach { .. } => return deny(WHY_OUTSIDE),
        A::Transaction { .. } | A::Savepoint { .. } => return deny(WHY_TRANSACTION),
        A::Function { function_name } if is_denied_function(function_name) => {
            return deny(WHY_FUNCTION);
        }
        A::Pragma { pragma_name, .. } => {
            return if is_read_pragma(pragma_name) {
                Ok(())
            } else {
                deny(WHY_PRAGMA)
            };
        }
        A::Select | A::Read { .. } | A::Function { .. } | A::Recursive => return Ok(()),
        A::Unknown { .. } => return deny(WHY_UNKNOWN),
        _ => {}
    }
    match policy {
        Policy::ReadOnly => deny(WHY_READ_ONLY),
        Policy::Write => Ok(()),
        Policy::CreateTable => match action {
            A::CreateTable { .. } => Ok(()),
            // Recording a new table inserts into and updates the schema table.
            A::Insert { table_name } | A::Update { table_name, .. }
                if is_schema_table(table_name) =>
            {
                Ok(())
            }
            // UNIQUE and PRIMARY KEY constraints create their own indexes.
            A::CreateIndex { index_name, .. } if index_name.starts_with("sqlite_autoindex_") => {
                Ok(())
            }
            _ => deny(WHY_CREATE_TABLE),
        },
    }
}

/// Installs [`decide`] on one connection and reports what it refused.
#[derive(Debug, Clone)]
pub(crate) struct Authorizer {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    policy: Policy,
    denial: Option<Denial>,
    tables_created: u32,
}

impl Authorizer {
    /// Installs the authorizer with `policy` on `conn`.
    pub(crate) fn install(conn: &mut Connection, policy: Policy) -> rusqlite::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            policy,
            denial: None,
            tables_created: 0,
        }));
        let hook_state = Arc::clone(&state);
        conn.authorizer(Some(move |ctx: AuthContext<'_>| {
            let mut state = lock(&hook_state);
            if let AuthAction::CreateTable { table_name } = ctx.action
                && !table_name.starts_with("sqlite_")
            {
                state.tables_created += 1;
            }
            match decide(state.policy, &ctx.action) {
                Ok(()) => Authorization::Allow,
                Err(denial) => {
                    state.denial.get_or_insert(denial);
                    Authorization::Deny
                }
            }
        }))?;
        Ok(Self { state })
    }

    /// Switches the policy and forgets earlier refusals; call before preparing a statement.
    pub(crate) fn begin(&self, policy: Policy) {
        let mut state = lock(&self.state);
        state.policy = policy;
        state.denial = None;
        state.tables_created = 0;
    }

    /// The first action refused since [`Self::begin`].
    pub(crate) fn take_denial(&self) -> Option<Denial> {
        lock(&self.state).denial.take()
    }

    /// User tables whose creation was authorized since [`Self::begin`].
    pub(crate) fn tables_created(&self) -> u32 {
        lock(&self.state).tables_created
    }
}

/// The state is only plain data, so a panic elsewhere cannot leave it inconsistent.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn is_read_pragma(name: &str) -> bool {
    READ_PRAGMAS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

fn is_denied_function(name: &str) -> bool {
    DENIED_FUNCTIONS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
}

fn is_schema_table(name: &str) -> bool {
    ["sqlite_master", "sqlite_schema", "sqlite_temp_master"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(name))
}

fn describe(action: &AuthAction<'_>) -> String {
    use AuthAction as A;
    match action {
        A::CreateIndex { index_name, .. } => format!("CREATE INDEX {index_name}"),
        A::CreateTable { table_name } => format!("CREATE TABLE {table_name}"),
        A::CreateTempIndex { index_name, .. } => format!("CREATE TEMP INDEX {index_name}"),
        A::CreateTempTable { table_name } => format!("CREATE TEMP TABLE {table_name}"),
        A::CreateTempTrigger { trigger_name, .. } => {
            format!("CREATE TEMP TRIGGER {trigger_name}")
        }
        A::CreateTempView { view_name } => format!("CREATE TEMP VIEW {view_name}"),
        A::CreateTrigger { trigger_name, .. } => format!("CREATE TRIGGER {trigger_name}"),
        A::CreateView { view_name } => format!("CREATE VIEW {view_name}"),
        A::CreateVtable { table_name, .. } => format!("CREATE VIRTUAL TABLE {table_name}"),
        // DDL first records itself in the schema table, so that is what gets refused first.
        A::Insert { table_name } if is_schema_table(table_name) => {
            format!("creating a schema object (INSERT into {table_name})")
        }
        A::Delete { table_name } if is_schema_table(table_name) => {
            format!("dropping a schema object (DELETE on {table_name})")
        }
        A::Update { table_name, .. } if is_schema_table(table_name) => {
            format!("changing the schema (UPDATE of {table_name})")
        }
        A::Delete { table_name } => format!("DELETE on {table_name}"),
        A::DropIndex { index_name, .. } | A::DropTempIndex { index_name, .. } => {
            format!("DROP INDEX {index_name}")
        }
        A::DropTable { table_name } | A::DropTempTable { table_name } => {
            format!("DROP TABLE {table_name}")
        }
        A::DropTrigger { trigger_name, .. } | A::DropTempTrigger { trigger_name, .. } => {
            format!("DROP TRIGGER {trigger_name}")
        }
        A::DropView { view_name } | A::DropTempView { view_name } => {
            format!("DROP VIEW {view_name}")
        }
        A::DropVtable { table_name, .. } => format!("DROP VIRTUAL TABLE {table_name}"),
        A::Insert { table_name } => format!("INSERT into {table_name}"),
        A::Update {
            table_name,
            column_name,
        } => format!("UPDATE of {table_name}.{column_name}"),
        A::Pragma {
            pragma_name,
            pragma_value: Some(value),
        } => format!("PRAGMA {pragma_name} = {value}"),
        A::Pragma { pragma_name, .. } => format!("PRAGMA {pragma_name}"),
        A::Transaction { operation } => match operation {
            TransactionOperation::Begin => "BEGIN".to_owned(),
            TransactionOperation::Release => "COMMIT".to_owned(),
            TransactionOperation::Rollback => "ROLLBACK".to_owned(),
            _ => "transaction control".to_owned(),
        },
        A::Savepoint { savepoint_name, .. } => format!("SAVEPOINT {savepoint_name}"),
        A::Attach { .. } => "ATTACH (also run inside VACUUM and VACUUM INTO)".to_owned(),
        A::Detach { database_name } => format!("DETACH {database_name}"),
        A::AlterTable { table_name, .. } => format!("ALTER TABLE {table_name}"),
        A::Reindex { .. } => "REINDEX".to_owned(),
        A::Analyze { .. } => "ANALYZE".to_owned(),
        A::Function { function_name } => format!("function {function_name}()"),
        A::Select => "SELECT".to_owned(),
        A::Read {
            table_name,
            column_name,
        } => format!("read of {table_name}.{column_name}"),
        A::Recursive => "recursive query".to_owned(),
        A::Unknown { code, .. } => format!("action code {code}"),
        _ => "an unrecognised action".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn allowed(policy: Policy, action: AuthAction<'_>) -> bool {
        decide(policy, &action).is_ok()
    }

    #[test]
    fn read_only_allows_reading() {
        for action in [
            AuthAction::Select,
            AuthAction::Recursive,
            AuthAction::Read {
                table_name: "t",
                column_name: "c",
            },
            AuthAction::Function {
                function_name: "upper",
            },
            AuthAction::Pragma {
                pragma_name: "TABLE_INFO",
                pragma_value: Some("t"),
            },
        ] {
            assert!(allowed(Policy::ReadOnly, action), "{action:?}");
        }
    }

    #[test]
    fn read_only_denies_every_change() {
        for action in [
            AuthAction::Insert { table_name: "t" },
            AuthAction::Delete { table_name: "t" },
            AuthAction::Update {
                table_name: "sqlite_master",
                column_name: "sql",
            },
            AuthAction::CreateTempTable { table_name: "x" },
            AuthAction::CreateTempTrigger {
                trigger_name: "x",
                table_name: "t",
            },
            AuthAction::DropTable { table_name: "t" },
            AuthAction::AlterTable {
                database_name: "main",
                table_name: "t",
            },
            AuthAction::Analyze { table_name: "t" },
            AuthAction::Reindex { index_name: "i" },
            AuthAction::Attach { filename: "x" },
            AuthAction::Detach { database_name: "x" },
            AuthAction::Transaction {
                operation: TransactionOperation::Begin,
            },
            AuthAction::Savepoint {
                operation: TransactionOperation::Begin,
                savepoint_name: "s",
            },
            AuthAction::Pragma {
                pragma_name: "writable_schema",
                pragma_value: Some("1"),
            },
            AuthAction::Pragma {
                pragma_name: "journal_mode",
                pragma_value: None,
            },
            AuthAction::Function {
                function_name: "LOAD_EXTENSION",
            },
            AuthAction::Unknown {
                code: 99,
                arg1: None,
                arg2: None,
            },
        ] {
            let denial = decide(Policy::ReadOnly, &action).unwrap_err();
            assert!(!denial.what.is_empty(), "{action:?}");
        }
    }

    #[test]
    fn write_policy_still_keeps_to_one_file() {
        assert!(allowed(
            Policy::Write,
            AuthAction::Delete { table_name: "t" }
        ));
        assert!(!allowed(
            Policy::Write,
            AuthAction::Attach { filename: "/x" }
        ));
        assert!(!allowed(
            Policy::Write,
            AuthAction::Transaction {
                operation: TransactionOperation::Begin
            }
        ));
        assert!(!allowed(
            Policy::Write,
            AuthAction::Pragma {
                pragma_name: "journal_mode",
                pragma_value: Some("delete"),
            }
        ));
    }

    #[test]
    fn create_table_policy_allows_only_table_creation() {
        assert!(allowed(
            Policy::CreateTable,
            AuthAction::CreateTable { table_name: "t" }
        ));
        assert!(allowed(
            Policy::CreateTable,
            AuthAction::Insert {
                table_name: "sqlite_master"
            }
        ));
        assert!(allowed(
            Policy::CreateTable,
            AuthAction::CreateIndex {
                index_name: "sqlite_autoindex_t_1",
                table_name: "t"
            }
        ));
        for action in [
            AuthAction::Insert { table_name: "t" },
            AuthAction::CreateIndex {
                index_name: "i",
                table_name: "t",
            },
            AuthAction::CreateView { view_name: "v" },
            AuthAction::DropTable { table_name: "t" },
        ] {
            assert!(!allowed(Policy::CreateTable, action), "{action:?}");
        }
    }

    #[test]
    fn installed_authorizer_reports_the_first_refusal() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(a)").unwrap();
        let auth = Authorizer::install(&mut conn, Policy::ReadOnly).unwrap();
        auth.begin(Policy::ReadOnly);
        assert!(conn.prepare("SELECT a FROM t").is_ok());
        assert!(auth.take_denial().is_none());
        let err = conn.prepare("DELETE FROM t").err().unwrap();
        assert!(err.to_string().contains("not authorized"), "{err}");
        let denial = auth.take_denial().unwrap();
        assert_eq!(denial.what, "DELETE on t");
    }
}
