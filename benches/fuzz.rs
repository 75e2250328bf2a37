//! Benchmark: the loader's fuzzing harness (tests/rivet/fuzz.rs, which
//! `cargo test` runs for a few seconds) for a long while: a two-, three-
//! and four-byte character at every position of every example file (for at
//! most half the time), then random mutations until the time is up. Prints how many inputs ran and what it
//! found, saves each finding's file, and exits 1 when there is one.
//!
//! `cargo bench --bench fuzz [-- DURATION]`, or `RIVET_FUZZ_DURATION`
//! (`600`, `30m`, `2h`; default 10 minutes); `RIVET_FUZZ_SEED` repeats a run.

#[path = "../tests/rivet/fuzz.rs"]
mod fuzz;

use std::time::Duration;

fn duration(text: &str) -> Duration {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .or_else(|_| humantime::parse_duration(text))
        .unwrap_or_else(|e| panic!("`{text}` is not a duration (600, 30m, 2h): {e}"))
}

fn main() {
    let duration = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("RIVET_FUZZ_DURATION").ok())
        .map_or(Duration::from_secs(600), |d| duration(&d));
    let seed = std::env::var("RIVET_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!(
        "fuzzing the loader for {duration:?}, seed {seed} (RIVET_FUZZ_SEED={seed} repeats it)"
    );
    let report = fuzz::run(&fuzz::Budget {
        duration,
        seed,
        per_input: Duration::from_secs(1),
        per_mib: Duration::from_millis(300),
        huge: 4 * 1024 * 1024,
        sweep: true,
    });
    println!("{}", report.summary());
    if report.findings.is_empty() {
        println!("found nothing");
        return;
    }
    let dir = std::env::temp_dir().join(format!("rivet-fuzz-{seed}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (n, finding) in report.findings.iter().enumerate() {
        let path = dir.join(format!("{n:04}.toml"));
        std::fs::write(&path, &finding.bytes).unwrap();
        println!("finding {n}: {} ({})", path.display(), finding.rule);
    }
    std::process::exit(1);
}
