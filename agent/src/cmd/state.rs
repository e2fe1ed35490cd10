//! `fleet-agent state`: prints the local state file (`<state-dir>/state.json`) as
//! JSON, without taking the agent's lock, for operators and tests.

use std::path::Path;

use crate::state::{STATE_FILE, StateStore};

/// Prints the state in `state_dir`.
pub fn state(state_dir: &Path) -> anyhow::Result<()> {
    let s = StateStore::load(&state_dir.join(STATE_FILE))?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    Ok(())
}
