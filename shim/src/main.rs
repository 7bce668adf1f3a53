//! `containerd-shim-tether-v2`: a containerd shim v2 (runtime `io.containerd.tether.v2`)
//! that drives runc, and a standalone reattachable process supervisor (`run`, `exec`,
//! `attach`, `wait`, ... — see `standalone`). A thin entry point over the `tether_shim`
//! library, which holds the supervision core and both faces.
#![deny(unsafe_code)]

use std::io::{Read, Write};
use std::process::ExitCode;
use tether_shim::containerd::address::AddressError;
use tether_shim::containerd::bootstrap::BootstrapError;
use tether_shim::containerd::flags::{self, Action, Flags, FlagsError};
use tether_shim::containerd::info::InfoError;
use tether_shim::{containerd, logger, malloc_arenas, standalone, upgrade_check, upgrade_command};

/// Why a containerd-face action failed (printed on stderr, exit status 1).
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    #[error(transparent)]
    Info(#[from] InfoError),
    #[error("write runtime info: {0}")]
    WriteInfo(#[source] std::io::Error),
    #[error("subreaper: {0}")]
    Subreaper(#[source] nix::Error),
    #[error(transparent)]
    Address(#[from] AddressError),
    #[error("bundle dir: {0}")]
    BundleDir(#[source] std::io::Error),
    #[error("shim: {0}")]
    Serve(#[source] std::io::Error),
    #[error("upgrade: the saved state cannot be taken over: {0}")]
    Resume(String),
}

/// The runtime type containerd knows this shim by.
const RUNTIME_NAME: &str = "io.containerd.tether.v2";

fn main() -> ExitCode {
    malloc_arenas::use_one_arena();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| standalone::is_subcommand(a)) {
        return ExitCode::from(standalone::cli::main(&args));
    }
    match args.first().map(String::as_str) {
        Some("upgrade") => return ExitCode::from(upgrade_command::main(&args[1..])),
        Some("upgrade-check") => return ExitCode::from(upgrade_check::main()),
        _ => {}
    }
    let (flags, action) = match flags::parse(&args) {
        Ok(x) => x,
        Err(FlagsError::Help) => {
            println!("{}", flags::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("containerd-shim-tether-v2: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match action {
        Action::Version => {
            print!("{}", containerd::info::version_text());
            Ok(())
        }
        Action::Info => info(),
        Action::Start => {
            init_logging(&flags, LogTo::FifoOrNowhere);
            containerd::bootstrap::start(&flags).map_err(MainError::from)
        }
        Action::Delete => {
            init_logging(&flags, LogTo::Stderr);
            containerd::bootstrap::delete(&flags).map_err(MainError::from)
        }
        Action::Serve => serve(&flags),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("containerd-shim-tether-v2: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> Result<(), MainError> {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let out = containerd::info::runtime_info(&stdin, RUNTIME_NAME)?;
    std::io::stdout()
        .write_all(&out)
        .map_err(MainError::WriteInfo)
}

/// A live upgrade executed this image (or executed the old one again): serve on from the
/// state the previous image left.
fn resume(
    flags: &Flags,
    taken: Result<
        (i32, containerd::upgrade::state::SavedShim),
        containerd::upgrade::state::StateError,
    >,
) -> Result<(), MainError> {
    use containerd::upgrade::state::{ROLLBACK_ENV, STATE_FD_ENV};
    let rolled_back = std::env::var(ROLLBACK_ENV).ok();
    std::env::remove_var(ROLLBACK_ENV);
    std::env::remove_var(STATE_FD_ENV);
    let (state_fd, saved) = taken.map_err(|e| MainError::Resume(e.to_string()))?;
    containerd::shim_loop::resume(flags, saved, state_fd, rolled_back).map_err(MainError::Serve)
}

/// Where a shim invocation logs.
enum LogTo {
    /// The server: containerd's `log` FIFO in the bundle (the cwd), else stderr.
    Fifo,
    /// `start`: the `log` FIFO if containerd holds it open, else nowhere. Never stderr:
    /// containerd reads `start`'s stdout and stderr together as its answer.
    FifoOrNowhere,
    /// `delete`: stderr, which containerd logs as warnings or shows when it fails; never at
    /// debug level (containerd 2.x logs any stderr output of a successful `delete` as a
    /// warning, and it runs `delete` after every shim exit).
    Stderr,
}

fn init_logging(flags: &Flags, to: LogTo) {
    let dir = || {
        flags
            .bundle
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_default()
    };
    let sink: Box<dyn Write + Send> = match to {
        LogTo::Fifo => logger::open_sink(&dir()),
        LogTo::FifoOrNowhere => {
            logger::open_fifo_sink(&dir()).unwrap_or_else(|| Box::new(std::io::sink()))
        }
        LogTo::Stderr => Box::new(std::io::stderr()),
    };
    let fields = vec![
        ("runtime".to_string(), RUNTIME_NAME.to_string()),
        ("namespace".to_string(), flags.namespace.clone()),
        ("id".to_string(), flags.id.clone()),
    ];
    let debug = flags.debug && !matches!(to, LogTo::Stderr);
    let _ = logger::install(logger::Logger::new(sink, debug, fields));
}

fn serve(flags: &Flags) -> Result<(), MainError> {
    // Our own session: containerd's signals to its process group must not reach us.
    let _ = nix::unistd::setsid();
    // Orphaned container processes (runc exits after starting them) become our children.
    nix::sys::prctl::set_child_subreaper(true).map_err(MainError::Subreaper)?;
    init_logging(flags, LogTo::Fifo);
    if let Some(taken) = containerd::upgrade::state::from_env() {
        return resume(flags, taken);
    }
    let socket_path = match &flags.socket {
        Some(s) => containerd::address::parse_uri(s)?,
        None => containerd::address::socket_path(&flags.address, &flags.namespace, &flags.id),
    };
    let bundle = std::env::current_dir().map_err(MainError::BundleDir)?;
    let handoff = containerd::bootstrap::take_handoff()?;
    let (listener, options) = match handoff {
        Some(h) => (h.listener, h.options),
        // Started by hand (tests): bind the socket ourselves, take what a previous
        // shim left in the bundle.
        None => (
            containerd::address::bind_socket(&socket_path)?,
            std::fs::read(bundle.join("options.json"))
                .ok()
                .and_then(|b| containerd::options::RuncOptions::from_json(&b).ok())
                .unwrap_or_default(),
        ),
    };
    containerd::shim_loop::run(flags, listener, Some(socket_path), options)
        .map_err(MainError::Serve)
}
