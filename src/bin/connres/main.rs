//! The `connres` command: parses flags, sets up logging and runs a subcommand.
//! Everything else lives in the library.

mod args;
mod author;
mod serve;

use std::process::ExitCode;

use clap::Parser;
use connres::explain::{Action, Question};
use connres::logs;
use connres::service::ServiceError;

use args::{Cli, Command, ExplainAction};
use author::{check, explain, mapping, plan, test};
use serve::{serve, Report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs are for the service; the authoring commands print their findings themselves
    // (a denied rule's warning would only repeat what `explain` and `test` show).
    if matches!(cli.command, Command::Serve { .. }) {
        logs::init(cli.log_format);
    }
    let report = Report(cli.log_format);
    match cli.command {
        Command::Check { config, paths } => {
            let paths = if paths.is_empty() {
                vec![config.config]
            } else {
                paths
            };
            paths
                .iter()
                .fold(ExitCode::SUCCESS, |code, path| match check(path) {
                    ExitCode::SUCCESS => code,
                    failed => failed,
                })
        }
        Command::Test { config, paths } => test(config.as_deref(), paths),
        Command::Plan { old, new, tests } => plan(&old, &new, tests),
        Command::Mapping { config } => mapping(&config.config),
        Command::Schema => {
            print!("{}", connres::config::schema::text());
            ExitCode::SUCCESS
        }
        Command::Explain {
            config,
            action,
            rid,
            cid,
            token,
            method,
            params,
            query,
        } => {
            let action = match action {
                ExplainAction::Get => Action::Get,
                ExplainAction::Access => Action::Access,
                ExplainAction::Call => Action::Call {
                    method: method.unwrap_or_default(),
                    params,
                },
            };
            let question = Question {
                action,
                rid,
                cid,
                token,
                query,
            };
            explain(&config.config, &question)
        }
        Command::Serve {
            config,
            nats,
            metrics_addr,
        } => match serve(config.config, nats.overrides(), metrics_addr, report) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                report.line(&format!("connres: {}", logs::error_chain(e.as_ref())));
                if let Some(hint) = e
                    .downcast_ref::<ServiceError>()
                    .and_then(ServiceError::hint)
                {
                    report.line(&format!("connres: {hint}."));
                }
                ExitCode::FAILURE
            }
        },
    }
}
