//! ipmitool: Ironic's `ipmitool` power, management and vendor interfaces,
//! driving the `ipmitool` program over IPMI 2.0 (lanplus).
//!
//! Every call runs `ipmitool` once, with an argument vector (never a shell
//! line). The password travels through a private file (mode 0600, deleted
//! when the call ends) named with `-f`: never on a command line, where any
//! user can read it, nor in the environment, which children inherit.
//!
//! BMCs are small and easily overwhelmed: at most one `ipmitool` runs
//! against a BMC (host:port) at a time, and consecutive commands to one BMC
//! are at least `min_command_interval` apart (Ironic's default is 5 s).

mod command;
mod failure;
mod management;
mod power;
mod vendor;

use std::path::PathBuf;
use std::time::Duration;

/// The IPMI port when an `ipmi://` address names none.
pub const DEFAULT_PORT: u16 = 623;

/// The ipmitool power, management and vendor interfaces.
#[derive(Debug, Clone)]
pub struct IpmiDriver {
    /// The fleet directory: a relative `password_file` is relative to it.
    root: PathBuf,
    program: PathBuf,
    min_command_interval: Duration,
    /// How long a busy BMC is asked again before its answer is returned.
    retry_window: Duration,
    /// A hard limit on one `ipmitool` run (it gives up by itself after
    /// `-N 5 -R 1`, about 10 s, when nothing answers).
    command_timeout: Duration,
    /// Where password files are made; the system's temporary directory when unset.
    secret_dir: Option<PathBuf>,
}

impl IpmiDriver {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            program: PathBuf::from("ipmitool"),
            min_command_interval: Duration::from_secs(5),
            retry_window: Duration::from_secs(60),
            command_timeout: Duration::from_secs(30),
            secret_dir: None,
        }
    }

    /// The shortest pause between two commands to one BMC.
    pub fn with_min_command_interval(mut self, gap: Duration) -> Self {
        self.min_command_interval = gap;
        self
    }

    /// How long a busy BMC is asked again before its answer is returned.
    pub fn with_retry_window(mut self, window: Duration) -> Self {
        self.retry_window = window;
        self
    }

    /// Run another program instead of `ipmitool` from PATH.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Make password files in `dir` instead of the temporary directory.
    pub fn with_secret_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.secret_dir = Some(dir.into());
        self
    }

    pub fn min_command_interval(&self) -> Duration {
        self.min_command_interval
    }
}
