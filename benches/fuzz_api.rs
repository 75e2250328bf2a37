//! The API fuzz run at length (numbers, not a test): random requests from
//! `tests/common/api_fuzz.rs` through `api::router`, never a 5xx and never
//! a hang. `cargo bench --bench fuzz_api`; `FUZZ_API_REQUESTS` (default
//! 50,000) and `FUZZ_API_SEED` (default: from the clock, printed) tune it.

#[path = "../tests/common/api_fuzz.rs"]
mod api_fuzz;

fn main() {
    let requests = std::env::var("FUZZ_API_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let seed = std::env::var("FUZZ_API_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(api_fuzz::run(seed, requests)) {
        Ok(report) => {
            println!(
                "fuzz_api: seed {seed}, {} requests, no 5xx, no hang",
                report.requests
            );
            println!(
                "  {:.2} s, {:.0} requests/s, slowest {:.2} ms: {}",
                report.elapsed.as_secs_f64(),
                report.requests as f64 / report.elapsed.as_secs_f64(),
                report.slowest.as_secs_f64() * 1000.0,
                report.slowest_request
            );
            for (status, n) in &report.by_status {
                println!("  {status}: {n}");
            }
        }
        Err(finding) => {
            eprintln!("fuzz_api: {finding}");
            std::process::exit(1);
        }
    }
}
