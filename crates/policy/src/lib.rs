//! Cedar authorization of MCP messages (work in progress).
