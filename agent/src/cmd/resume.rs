//! `fleet-agent resume`: ends a pause by removing `<state-dir>/pause.json` (see
//! [`crate::pause`]). The running agent applies what is pending at its next poll.

use std::path::PathBuf;

use crate::pause;

/// The arguments of `resume`.
#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    /// State directory of the agent [default: /var/lib/fleet-agent].
    #[arg(long, env = "FLEET_AGENT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Removes the pause file.
pub fn resume(args: ResumeArgs) -> anyhow::Result<()> {
    let state_dir = args
        .state_dir
        .unwrap_or_else(|| crate::config::DEFAULT_STATE_DIR.into());
    match pause::load(&state_dir) {
        Ok(Some(p)) => println!("ending the pause ({})", p.describe()),
        Ok(None) => println!("not paused"),
        Err(e) => println!("removing a damaged pause file: {e:#}"),
    }
    pause::remove(&state_dir)?;
    Ok(())
}
