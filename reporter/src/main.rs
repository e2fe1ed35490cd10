//! `fleet-reporter`: the fleet dashboard binary.
//!
//! ```text
//! fleet-reporter serve --bucket URL [--listen 127.0.0.1:8080] [--token-file F] …
//! fleet-reporter summary --bucket URL [--trusted-key K] [--json]   # once, then exit (3: a host fails)
//! fleet-reporter lambda          # run under the AWS Lambda runtime
//! fleet-reporter                 # = lambda when AWS_LAMBDA_RUNTIME_API is set
//! ```
//!
//! Both modes answer with the same handler (`fleet_reporter::Reporter::handle`);
//! the options are one schema (`fleet_reporter::config`).

use clap::{Parser, Subcommand};
use fleet_reporter::config::Config;

mod cmd;

#[derive(Parser)]
#[command(
    name = "fleet-reporter",
    version,
    about = "Stateless fleet dashboard: HTML, JSON API and Prometheus metrics computed from the fleet bucket"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the dashboard over HTTP (127.0.0.1:8080 unless --listen says otherwise).
    Serve(Config),
    /// Run as an AWS Lambda function (API Gateway or Function URL events).
    Lambda(Config),
    /// Print the fleet once as a text table (host, state, generations, last error)
    /// or JSON; exit code 3 when any host is failed, rolled back, refused, stale or
    /// flagged.
    Summary(cmd::summary::SummaryArgs),
}

/// Only the configuration, read from the environment, for the implicit Lambda mode.
#[derive(Parser)]
struct EnvOnly {
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fleet_core::logging::init_logging("info", fleet_core::logging::LogFormat::Human);
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(c)) => cmd::serve::run(c).await,
        Some(Command::Lambda(c)) => cmd::lambda::run(c).await,
        Some(Command::Summary(a)) => match cmd::summary::run(a).await {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::from(cmd::summary::GATE_FAILED),
            Err(e) => Err(e),
        },
        None if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() => {
            cmd::lambda::run(EnvOnly::parse_from(["fleet-reporter"]).config).await
        }
        None => Err(anyhow::anyhow!(
            "no command given: use `fleet-reporter serve --bucket URL` (or `lambda` under AWS Lambda); see --help"
        )),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-reporter: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
