//! The `xenoeye` command: parses the command line, loads the configuration and runs the
//! collector live or over capture files.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use xenoeye::{config, daemon, log, objects};

/// NetFlow v5/v9 and IPFIX collector and analyser.
#[derive(Parser, Debug)]
#[command(name = "xenoeye", version)]
struct Args {
    /// Configuration file.
    #[arg(short = 'c', long = "config", value_name = "FILE", default_value = config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Validate the configuration and exit (non-zero on any error).
    #[arg(long)]
    check_config: bool,
    /// Replay the UDP payloads of these capture files (capture time is the clock), then exit.
    #[arg(long = "read-pcap", value_name = "CAPTURE", num_args = 1..)]
    read_pcap: Vec<PathBuf>,
    /// Also log debug messages.
    #[arg(short, long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    log::set_verbose(args.verbose);
    match start(&args) {
        Ok(code) | Err(code) => code,
    }
}

/// Loads and checks the configuration, then checks only, runs the daemon, or replays.
fn start(args: &Args) -> Result<ExitCode, ExitCode> {
    let cfg = config_or_exit(config::load(&args.config))?;
    for k in &cfg.ignored_keys {
        log::debug(&format!("ignored key {k}"));
    }
    let objects = std::sync::Arc::new(config_or_exit(daemon::load_objects(&cfg))?);
    prepare_output_dirs(&cfg, &objects, args.check_config)?;
    if args.check_config {
        println!("{}: configuration OK ({})", args.config.display(), objects.summary());
        return Ok(ExitCode::SUCCESS);
    }
    let result = if args.read_pcap.is_empty() {
        log::info(&format!("starting with {}: {}", args.config.display(), objects.summary()));
        daemon::run(&cfg, objects)
    } else {
        daemon::replay(&cfg, objects, &args.read_pcap)
    };
    match result {
        Ok(summary) => {
            log::info(&summary.line());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            log::error(&e);
            Err(ExitCode::FAILURE)
        }
    }
}

/// The loaded value, or every error logged and exit status 2 (a configuration error).
fn config_or_exit<T>(loaded: Result<T, Vec<config::ConfigError>>) -> Result<T, ExitCode> {
    loaded.map_err(|errors| {
        for e in &errors {
            log::error(&e.to_string());
        }
        ExitCode::from(2)
    })
}

/// Output directories the objects use: made at start when missing; a check only says so.
fn prepare_output_dirs(cfg: &config::Config, objects: &objects::Objects, check_only: bool) -> Result<(), ExitCode> {
    let used = |d: &&config::dirs::OutputDir| match d.key {
        "export-dir" => !objects.windows.is_empty(),
        "notifications-dir" => !objects.mavgs.is_empty(),
        _ => true,
    };
    let wanted: Vec<_> = cfg.output_dirs.iter().filter(used).cloned().collect();
    let dirs = config::dirs::prepare(&cfg.file, &wanted, !check_only);
    for w in &dirs.warnings {
        log::warn(w);
    }
    for e in &dirs.errors {
        log::error(&e.to_string());
    }
    if !dirs.errors.is_empty() {
        return Err(ExitCode::from(2));
    }
    for d in &dirs.made {
        let what = if check_only { "does not exist; it will be made at start" } else { "made" };
        log::info(&format!("directory {} {what}", d.display()));
    }
    Ok(())
}
