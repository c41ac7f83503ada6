//! Test kit for end-to-end tests: start the real `mcp-relay` and `mcp-agent`
//! binaries on loopback ports with throw-away state, a controllable upstream
//! HTTP server, and helpers to find the Python venv with the official MCP SDK.
//!
//! Every process is killed when its handle drops, so a failing test leaves
//! nothing running.

pub mod home;
pub mod process;
pub mod upstream;

pub use home::AgentHome;
pub use process::{
    Agent, AgentOptions, Process, Relay, RelayOptions, bin_path, cache_dir, conformance_suite,
    python, run_python_driver, workspace_root,
};
pub use upstream::Upstream;
