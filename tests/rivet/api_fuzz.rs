//! The API under random requests (`tests/common/api_fuzz.rs`): never a 5xx,
//! never a hang. `cargo bench --bench fuzz_api` runs the long version.

use crate::api_fuzz_cases::run;

/// The seed of the run `cargo test` makes; the benchmark takes others.
const SEED: u64 = 0x05ee_da91;
/// About 4 s unoptimized on 2 cores.
const REQUESTS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_to_the_api_never_answer_5xx_or_hang() {
    let report = run(SEED, REQUESTS)
        .await
        .unwrap_or_else(|finding| panic!("{finding}"));
    assert_eq!(report.requests, REQUESTS);
    // The generator reaches the router's real answers, not only 404s.
    for status in [200, 400, 404, 405] {
        assert!(
            report.by_status.contains_key(&status),
            "no {status} among {:?}",
            report.by_status
        );
    }
    eprintln!(
        "{} requests in {:?}, slowest {:?} ({}), statuses {:?}",
        report.requests, report.elapsed, report.slowest, report.slowest_request, report.by_status
    );
}
