//! One prompt that starts an analyst session: it tells the model how to use
//! the tools on this database, optionally around a question.

use rmcp::model::{GetPromptResult, Prompt, PromptArgument, PromptMessage, Role};

/// The prompt's name.
pub const ANALYST_PROMPT: &str = "sqlite-analyst";

/// The prompts this server lists.
pub fn prompt_list() -> Vec<Prompt> {
    vec![
        Prompt::new(
            ANALYST_PROMPT,
            Some("Explore this SQLite database and answer a question with SQL"),
            Some(vec![
                PromptArgument::new("question")
                    .with_description("What you want to find out (optional)")
                    .with_required(false),
            ]),
        )
        .with_title("SQLite analyst"),
    ]
}

/// Renders the analyst prompt for `db_name`, around `question` if given.
pub fn analyst_prompt(db_name: &str, question: Option<&str>) -> GetPromptResult {
    let goal = match question.map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) => format!("Answer this question: {q}"),
        None => "Find out what the data is about and summarise the most interesting facts.".into(),
    };
    let text = format!(
        "You are a data analyst working on the SQLite database {db_name}. {goal}\n\n\
         1. Call list_tables to see the tables and their sizes.\n\
         2. Call describe_table on the tables that matter (columns, keys, indexes).\n\
         3. Write one SELECT per read_query call; use parameters (?) for values. \
         Use explain_query if a query may be slow.\n\
         4. Show the SQL you ran and the rows that support your answer."
    );
    GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
        .with_description("Analyse the database with SQL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_mentions_question_and_tools() {
        let p = analyst_prompt("shop.db", Some("top customers?"));
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            text.contains("top customers?") && text.contains("read_query"),
            "{text}"
        );
        let p = analyst_prompt("shop.db", Some("  "));
        assert!(serde_json::to_string(&p).unwrap().contains("summarise"));
        assert_eq!(prompt_list()[0].name, ANALYST_PROMPT);
    }
}
