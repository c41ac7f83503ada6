//! Errors from loading policies and tunnel specs.

use std::fmt;

/// One problem in one policy file, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in (`PolicySource::name`, or `grant:<id>`).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// What is wrong, on one line.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Why policies, grants or a tunnel spec could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Policy text failed to parse or failed strict validation against
    /// [`crate::SCHEMA`]; every problem found is listed, one per line, as
    /// `FILE:LINE:COL: message`.
    #[error("{}", ProblemLines(.0))]
    Invalid(Vec<Problem>),
    /// A tunnel spec is unusable as a whole (empty name, a grant for another
    /// tunnel, duplicate grant ids, ...).
    #[error("tunnel {tunnel:?}: {message}")]
    InvalidSpec {
        /// The tunnel named in the spec.
        tunnel: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl PolicyError {
    /// The individual problems (empty for [`PolicyError::InvalidSpec`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid(problems) => problems,
            Self::InvalidSpec { .. } => &[],
        }
    }
}

/// Formats problems one per line.
struct ProblemLines<'a>(&'a [Problem]);

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
