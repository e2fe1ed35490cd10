//! `fleet-agent` command line: parses flags (layered with the environment and the
//! TOML file), sets up logging and runs a subcommand. See [`fleet_agent::cmd`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleet_agent::cmd;
use fleet_agent::config::{Config, DEFAULT_STATE_DIR};

/// `fleet-agent`: the command line.
#[derive(Parser, Debug)]
#[command(
    name = "fleet-agent",
    version,
    about = "Follow this host's signed manifest in a fleet bucket: fetch, activate, check, roll back, report",
    after_help = "Every option can also be set with its FLEET_AGENT_* environment variable or in \
                  the TOML file given by --config (keys are the long option names). S3 \
                  credentials come from $CREDENTIALS_DIRECTORY (aws-access-key-id, \
                  aws-secret-access-key, aws-session-token) or else the standard AWS \
                  environment (AWS_ACCESS_KEY_ID, …)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run as a daemon: poll, activate, report, forever.
    Run(Config),
    /// Run one cycle; the exit code tells the outcome (0 healthy, 2 refused,
    /// 3 rolled back, 4 failed, 5 retry later, 6 access denied, 7 paused, 1 error).
    Once(Config),
    /// Pause deploys on this host: the agent keeps polling and reporting `paused`,
    /// and applies nothing until `resume` or --until.
    Pause(cmd::pause::PauseArgs),
    /// End a pause.
    Resume(cmd::resume::ResumeArgs),
    /// Enroll this host: create its identity key and print an enrollment request,
    /// or install the bootstrap bundle of `fleet-publish enroll` (--bundle).
    Init(cmd::init::InitArgs),
    /// Print the local state file.
    State {
        /// State directory [default: /var/lib/fleet-agent].
        #[arg(long, env = "FLEET_AGENT_STATE_DIR", value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

fn settings(c: Config) -> anyhow::Result<fleet_agent::config::Settings> {
    let c = c.layered()?;
    // Before the settings are checked, so that their warnings (deprecated names) are logged.
    fleet_core::logging::init_logging("info", c.log_format.unwrap_or_default());
    c.settings()
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // One thread: the agent does one thing at a time, and it keeps idle memory low.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(c) => settings(c)
            .and_then(|s| runtime()?.block_on(cmd::run::run(s)))
            .map(|()| 0),
        Command::Once(c) => settings(c)
            .and_then(|s| runtime()?.block_on(cmd::once::once(s)))
            .map(|o| o.exit_code()),
        Command::Pause(a) => cmd::pause::pause(a).map(|()| 0),
        Command::Resume(a) => cmd::resume::resume(a).map(|()| 0),
        Command::Init(a) => cmd::init::init(a).map(|()| 0),
        Command::State { state_dir } => {
            cmd::state::state(&state_dir.unwrap_or_else(|| DEFAULT_STATE_DIR.into())).map(|()| 0)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("fleet-agent: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
