//! Tamper-evident audit log (work in progress).
