//! Benchmark of the store's history (numbers, not tests): 10,000 nodes with
//! 30 events each (300,000 events, as ten deploys or so of every node),
//! written in batches of 64 as the journal's group commit does; then one
//! node's last 100 events, read through the per-node index (what
//! `GET /v1/nodes/{id}/history` and `rivet status NODE` do), and a prune of
//! every node to its newest 10.
//!
//! `cargo bench --bench history`

use std::time::Instant;

use rivet::store::records::{Event, Outcome};
use rivet::store::{Store, Write};

const NODES: usize = 10_000;
const PER_NODE: usize = 30;

fn event(node: usize, i: usize) -> Write {
    Write::Event(Event {
        seq: 0,
        node: format!("node{node:06}"),
        run_id: Some(i as u64),
        op_index: Some(i),
        action: "deploy.deploy".into(),
        outcome: Outcome::Succeeded,
        protocol: Some("redfish".into()),
        duration_ms: Some(1200),
        detail: None,
        at: "2026-11-26T00:00:00Z".into(),
    })
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.redb")).unwrap();
    let start = Instant::now();
    let writes: Vec<Write> = (0..PER_NODE)
        .flat_map(|i| (0..NODES).map(move |n| event(n, i)))
        .collect();
    for batch in writes.chunks(64) {
        store.apply(batch).unwrap();
    }
    let wall = start.elapsed().as_secs_f64();
    println!(
        "write {} events in batches of 64: {wall:.2} s ({:.0} events/s)",
        writes.len(),
        writes.len() as f64 / wall
    );

    let mut times: Vec<f64> = (0..200)
        .map(|i| {
            let node = format!("node{:06}", (i * 7919) % NODES);
            let start = Instant::now();
            let events = store.node_history(&node, 100).unwrap();
            assert_eq!(events.len(), PER_NODE);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "one node's history among {} events: median {:.3} ms, max {:.3} ms",
        writes.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );

    let start = Instant::now();
    let removed = store.prune_history(10, None).unwrap();
    assert_eq!(removed as usize, NODES * (PER_NODE - 10));
    println!(
        "prune every node to its newest 10: {removed} events removed in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    assert_eq!(store.prune_history(10, None).unwrap(), 0);
    println!(
        "prune again with nothing to remove: {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
}
