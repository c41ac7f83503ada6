//! Writes the sample shop database: `cargo run -p mcp-sqlite --example make_demo_db -- shop.db`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: make_demo_db <path/to/new.db>");
        return ExitCode::from(2);
    };
    if path.exists() {
        eprintln!("{} already exists; pick a new file name", path.display());
        return ExitCode::FAILURE;
    }
    match mcp_sqlite::create_demo_database(&path) {
        Ok(()) => {
            println!("wrote the demo shop database to {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot create {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
