//! `fleet-publish`: the command line over [`fleet_publish`].
//!
//! Exit codes: 0 success, 1 failure (the message names what failed and where),
//! 2 bad usage (clap's own code); `rollout status` and `rollout advance` also 3
//! (rollout in progress) and 4 (halted or aborted).

use std::process::ExitCode;

use clap::Parser;
use fleet_publish::cli::{Cli, Command};
use fleet_publish::cmd;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Only warnings by default: results go to stdout, and stderr is for what went wrong.
    fleet_core::logging::init_logging("warn", fleet_core::logging::LogFormat::Human);
    let config = &cli.config_file();
    let result = match cli.command {
        Command::Keygen(o) => cmd::keygen::run(o, config),
        Command::Policy(o) => cmd::policy::run(o, config),
        command => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(async {
                match command {
                    Command::Push(a) => cmd::push::run(a, config).await,
                    Command::Deploy(a) => cmd::deploy::run(*a, config).await,
                    Command::Show(o) => cmd::show::run(o, config).await,
                    Command::Renew(a) => cmd::renew::run(*a, config).await,
                    Command::Rollback(a) => cmd::rollback::run(*a, config).await,
                    Command::Hold(a) => cmd::hold::run(*a, config).await,
                    Command::Unhold(a) => cmd::unhold::run(*a, config).await,
                    Command::Enroll(a) => cmd::enroll::run(*a, config).await,
                    Command::Audit(a) => cmd::audit::run(a, config).await,
                    Command::Trust(a) => cmd::trust::run(a, config).await,
                    Command::Retire(a) => cmd::retire::run(*a, config).await,
                    Command::Gc(a) => cmd::gc::run(*a, config).await,
                    Command::Release(a) => cmd::release::run(*a, config).await,
                    Command::Rollout(a) => cmd::rollout::run(*a, config).await,
                    Command::Keygen(_) | Command::Policy(_) => unreachable!("handled above"),
                }
            }),
            Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<cmd::rollout::PhaseExit>().is_some() => {
            let code = e
                .downcast_ref::<cmd::rollout::PhaseExit>()
                .map_or(1, |p| p.code());
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("fleet-publish: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
