//! Timing one `rivet reconcile` process, for the benchmarks that converge.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

/// Run `rivet reconcile DIR` with `env`; its wall time in seconds and its
/// output. Panics with both outputs when it does not succeed.
pub fn timed_reconcile(dir: &Path, env: &[(&str, &str)]) -> (f64, Output) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_rivet"))
        .arg("reconcile")
        .arg(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let wall = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (wall, out)
}
