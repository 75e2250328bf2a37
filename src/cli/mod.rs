//! The command line: argument parsing and thin commands that call the
//! conductor and print results (stdout), diagnostics and logs (stderr).
//! Nothing imports this module but `main.rs`.

mod converge;
mod reconcile;
mod status;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use miette::GraphicalTheme;
use serde_json::{Value, json};

use crate::conductor::Conductor;
use crate::conductor::drivers::{driver_json, enabled};
use crate::diag::Problem;
use crate::model::fleet::{Fleet, HostOverrides, Loaded, load};
use crate::model::hardware::HardwareType;
use crate::vocab::InterfaceType;

/// rivet: declarative bare-metal provisioning.
#[derive(Debug, Parser)]
#[command(name = "rivet", version, about, long_about = None)]
pub struct Cli {
    /// Log output format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and validate a fleet directory; exit 1 when anything is wrong.
    Validate {
        /// The fleet directory (holds rivet.toml, drivers/, nodes/).
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Plan the changes that bring the hardware to the declarations
    /// (`--dry-run`), or plan and converge.
    Reconcile(ReconcileArgs),
    /// Watch the declarations, converge what changes, keep power in sync;
    /// until SIGINT or SIGTERM.
    Daemon {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The name this host reports (default: `[conductor] host`, else the machine's hostname).
        #[arg(long, value_name = "NAME")]
        host: Option<String>,
        /// This host's state file, relative to the current directory
        /// (default: `[conductor] state`, relative to the fleet directory).
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// HTTP API address (default: `[conductor] http`, 127.0.0.1:6385); port 0 picks a free one.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// The URL the fleet's other daemons reach this one's API at (default: `[cluster] advertise_url`).
        #[arg(long, value_name = "URL")]
        advertise_url: Option<String>,
    },
    /// State, current step, last error and history of the nodes, from the
    /// state file, or from a running daemon's API.
    Status {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// One node, with its recent history.
        node: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Ask the daemon at this URL (e.g. http://127.0.0.1:6385) instead of reading the state file.
        #[arg(long)]
        url: Option<String>,
        /// API token, when the daemon requires one for reads.
        #[arg(long, env = "RIVET_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Call a node's vendor passthru method through a running daemon's API.
    Passthru(PassthruArgs),
    /// Hardware types ("drivers"), as `baremetal driver` shows them.
    #[command(subcommand)]
    Driver(DriverCommand),
    /// Write the JSON schemas of the declaration files.
    Schema {
        /// Directory to write rivet.schema.json, node.schema.json and driver.schema.json into.
        #[arg(long, default_value = "schema")]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The fleet directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Show the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Exit 0 when there is nothing to do, 1 on error, 2 when there are changes.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Save the plan (JSON, with a fingerprint of its inputs) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Read live power and boot state from the BMCs before planning.
    #[arg(long)]
    pub refresh: bool,
    /// Apply this saved plan, refusing if anything it was made from changed.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PassthruArgs {
    /// The node's name or UUID.
    pub node: String,
    /// The vendor method, e.g. `bmc_reset`.
    pub method: String,
    #[arg(long, default_value = "POST")]
    pub http_method: String,
    /// An argument `KEY=VALUE`; VALUE is read as JSON when it is JSON
    /// (`warm=false`, `n=3`), else as a string. Repeat for more.
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    /// The daemon's API.
    #[arg(long, env = "RIVET_URL", default_value = "http://127.0.0.1:6385")]
    pub url: String,
    /// API token (`[conductor] api_token_env` of the daemon).
    #[arg(long, env = "RIVET_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DriverCommand {
    /// List the enabled hardware types.
    List(DriverListArgs),
    /// Show one hardware type with its default and enabled interfaces.
    Show {
        name: String,
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
}

#[derive(Debug, Args)]
pub struct DriverListArgs {
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Add each type's default and enabled interfaces.
    #[arg(long)]
    pub detail: bool,
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// Parse arguments, run the command, return the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RIVET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only for a person at a terminal: never in a file, a pipe or
    // a journal, and not when NO_COLOR asks for none.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn run(cli: Cli) -> std::io::Result<ExitCode> {
    match cli.command {
        Command::Validate { dir, format } => validate(&dir, format),
        Command::Reconcile(args) => reconcile::reconcile(&args),
        Command::Daemon {
            dir,
            host,
            state,
            http,
            advertise_url,
        } => daemon(
            &dir,
            &HostOverrides {
                host,
                state,
                http,
                advertise_url,
            },
        ),
        Command::Status {
            dir,
            node,
            format,
            url,
            token,
        } => status::status(
            &dir,
            // With --url no directory is read: `rivet status --url URL NODE`.
            node.as_deref().or_else(|| {
                (url.is_some() && !dir.is_dir())
                    .then(|| dir.to_str())
                    .flatten()
            }),
            format,
            url.as_deref(),
            token.as_deref(),
        ),
        Command::Passthru(args) => status::passthru(&args),
        Command::Driver(DriverCommand::List(args)) => driver_list(&args),
        Command::Driver(DriverCommand::Show { name, dir, format }) => {
            driver_show(&name, &dir, format)
        }
        Command::Schema { out } => {
            std::fs::create_dir_all(&out)?;
            for (name, text) in crate::config::schema::all() {
                std::fs::write(out.join(name), text)?;
                println!("wrote {}", out.join(name).display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn theme() -> GraphicalTheme {
    if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    }
}

/// Print every problem to stderr, as miette renders it.
fn print_problems(problems: &[Problem]) {
    let theme = theme();
    let mut err = std::io::stderr().lock();
    for problem in problems {
        let _ = writeln!(err, "{}", problem.render(theme.clone()));
    }
}

fn validate(dir: &Path, format: Format) -> std::io::Result<ExitCode> {
    let loaded = load(dir);
    let code = if loaded.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    match format {
        Format::Json => {
            let out = validate_json(&loaded);
            println!("{}", serde_json::to_string_pretty(&out).expect("json"));
        }
        Format::Human => {
            let fleet = &loaded.fleet;
            if loaded.is_valid() {
                println!(
                    "{}: {} {} valid ({} hardware {} enabled, {} deploy {}, {} rollout {})",
                    dir.display(),
                    fleet.nodes.len(),
                    plural(fleet.nodes.len(), "node", "nodes"),
                    fleet.hardware.enabled_types.len(),
                    plural(fleet.hardware.enabled_types.len(), "type", "types"),
                    fleet.templates.len(),
                    plural(fleet.templates.len(), "template", "templates"),
                    fleet.rollouts.len(),
                    plural(fleet.rollouts.len(), "group", "groups"),
                );
            } else {
                print_problems(&loaded.problems);
                eprintln!(
                    "error: {} {} in {}; {} of the declared nodes are valid. Nothing was changed.",
                    loaded.problems.len(),
                    plural(loaded.problems.len(), "problem", "problems"),
                    dir.display(),
                    fleet.nodes.len(),
                );
            }
        }
    }
    Ok(code)
}

fn daemon(dir: &Path, overrides: &HostOverrides) -> std::io::Result<ExitCode> {
    let shared = match Conductor::open(dir, overrides) {
        Ok(shared) => shared,
        Err(e) => {
            if let crate::conductor::OpenError::Invalid(problems) = &e {
                print_problems(problems);
            }
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(crate::daemon::serve(shared, overrides.http));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// The `validate --format json` document.
pub fn validate_json(loaded: &Loaded) -> Value {
    let nodes: Vec<Value> = loaded
        .fleet
        .nodes
        .iter()
        .map(|node| {
            json!({
                "name": node.name,
                "uuid": node.uuid.to_string(),
                "driver": node.driver,
                "interfaces": node.interface_map(),
            })
        })
        .collect();
    let errors: Vec<Value> = loaded
        .problems
        .iter()
        .map(|p| serde_json::to_value(p.record()).expect("json"))
        .collect();
    json!({ "valid": loaded.is_valid(), "nodes": nodes, "errors": errors })
}

fn load_for_drivers(dir: &Path) -> Loaded {
    let loaded = load(dir);
    if !loaded.is_valid() {
        eprintln!(
            "warning: {} {} in {}; run `rivet validate {}` to see them",
            loaded.problems.len(),
            plural(loaded.problems.len(), "problem", "problems"),
            dir.display(),
            dir.display()
        );
    }
    loaded
}

fn driver_list(args: &DriverListArgs) -> std::io::Result<ExitCode> {
    let loaded = load_for_drivers(&args.dir);
    let fleet = &loaded.fleet;
    let enabled: Vec<&HardwareType> = enabled(fleet).collect();
    match args.format {
        Format::Json => {
            let drivers: Vec<Value> = enabled
                .iter()
                .map(|hw| driver_json(fleet, hw, args.detail))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "drivers": drivers })).expect("json")
            );
        }
        Format::Human => {
            let width = enabled
                .iter()
                .map(|t| t.name.len())
                .max()
                .unwrap_or(0)
                .max(19);
            println!("{:width$}  Active host(s)", "Supported driver(s)");
            for hw in &enabled {
                println!("{:width$}  {}", hw.name, fleet.conductor.host);
            }
            if args.detail {
                for hw in &enabled {
                    println!();
                    print_driver_detail(fleet, hw);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_driver_detail(fleet: &Fleet, hw: &HardwareType) {
    println!("{}", hw.name);
    if let Some(base) = &hw.base {
        println!("  base: {base}");
    }
    for kind in InterfaceType::ALL {
        let default = fleet
            .type_default(hw, kind)
            .unwrap_or_else(|| "(none)".into());
        let enabled = fleet.type_enabled(hw, kind);
        println!(
            "  {:<11} default {:<22} enabled {}",
            kind.as_str(),
            default,
            if enabled.is_empty() {
                "(none)".to_string()
            } else {
                enabled.join(", ")
            }
        );
    }
}

fn driver_show(name: &str, dir: &Path, format: Format) -> std::io::Result<ExitCode> {
    let loaded = load_for_drivers(dir);
    let fleet = &loaded.fleet;
    let Some(hw) = fleet.hardware_type(name) else {
        let known: Vec<&str> = fleet.types.iter().map(|t| t.name.as_str()).collect();
        let mut message = format!("hardware type `{name}` does not exist (DriverNotFound)");
        if let Some(near) = crate::diag::nearest(name, known.iter().copied()) {
            message.push_str(&format!("; did you mean `{near}`?"));
        }
        eprintln!(
            "error: {message}\n  known hardware types: {}",
            crate::diag::list(&known)
        );
        return Ok(ExitCode::from(1));
    };
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&driver_json(fleet, hw, true)).expect("json")
        ),
        Format::Human => print_driver_detail(fleet, hw),
    }
    Ok(ExitCode::SUCCESS)
}
