//! Online backup and restore of a relay's state directory. Placeholder.

use std::path::Path;

/// Writes a consistent backup of the state dir `state` to `out`.
pub fn backup(_state: &Path, _out: &Path) -> anyhow::Result<()> {
    anyhow::bail!("backup is not supported yet")
}

/// Restores the backup `file` into the state dir `state`.
pub fn restore(_file: &Path, _state: &Path, _force: bool) -> anyhow::Result<()> {
    anyhow::bail!("restore is not supported yet")
}
