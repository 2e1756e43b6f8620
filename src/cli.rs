//! What every binary shares: argument parsing that fails with one clear line and exit code 2,
//! and logging set up once (RUST_LOG wins over the default level).

use clap::Parser;

/// Parses the command line; `--help` and `--version` print and exit 0, anything else wrong
/// prints one line and exits 2.
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) => match e.kind() {
            clap::error::ErrorKind::DisplayHelp
            | clap::error::ErrorKind::DisplayVersion
            | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                // clap spreads some errors over several lines (missing arguments are listed
                // below the message): keep everything before the usage on one line.
                let text = e.to_string();
                let message: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                    .filter(|l| !l.is_empty())
                    .collect();
                usage_error(&message.join(" "))
            }
        },
    }
}

/// Prints one line to stderr and exits with the usage-error code.
pub fn usage_error(message: &str) -> ! {
    let message = message.strip_prefix("error: ").unwrap_or(message);
    eprintln!("error: {message}");
    std::process::exit(2)
}

/// Logs to stderr at `info` unless RUST_LOG says otherwise, and keeps the last
/// `logs::LOG_LINES_MAX` lines for `zask logs` (`logs::install`).
pub fn init_logging() {
    let console =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format_timestamp_millis()
            .build();
    crate::logs::install(console).expect("logging is set up once per process");
}

/// A clap value parser for `tcp://HOST:PORT` addresses.
pub fn parse_address(s: &str) -> Result<String, crate::net::AddressError> {
    crate::net::Endpoint::parse(s).map(|_| s.to_owned())
}

/// Where a scheduler listens: the flags `zask-scheduler` and `zask local` share.
#[derive(clap::Args, Debug, Clone)]
pub struct ListenArgs {
    /// Interface the scheduler listens on (0.0.0.0: every interface, advertised by hostname).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The scheduler's port for workers (0: pick a free port).
    #[arg(long, default_value_t = 0)]
    pub worker_port: u16,
    /// The scheduler's port for clients (0: pick a free port).
    #[arg(long, default_value_t = 0)]
    pub client_port: u16,
}
