//! The waves in which changed nodes converge: after the changed nodes they
//! depend on, and within rollout `max_parallel`. The dependency graph and its
//! cycles belong to validation (`model::fleet::graph`).

use std::collections::BTreeMap;

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use crate::model::fleet::Fleet;
use crate::model::fleet::graph::Dependencies;

/// Waves of the nodes for which `changed[i]` holds: a node comes after
/// every changed node it depends on, and no wave holds more nodes of a
/// rollout group than its `max_parallel`. Returns each changed node's
/// wave (0-based). The graph must be acyclic.
pub fn waves(deps: &Dependencies, fleet: &Fleet, changed: &[bool]) -> Vec<Option<usize>> {
    let graph = deps.graph();
    let order = petgraph::algo::toposort(graph, None).expect("cycles are reported first");
    // Longest-path depth among changed nodes gives a processing order
    // in which every dependency comes first.
    let mut depth = vec![0usize; fleet.nodes.len()];
    for &n in &order {
        let i = graph[n];
        for e in graph.edges_directed(n, petgraph::Direction::Incoming) {
            let j = graph[e.source()];
            depth[i] = depth[i].max(depth[j] + usize::from(changed[j]));
        }
    }
    let mut queue: Vec<usize> = (0..fleet.nodes.len()).filter(|&i| changed[i]).collect();
    queue.sort_by_key(|&i| (depth[i], i));

    let limits: BTreeMap<&str, u32> = fleet
        .rollouts
        .iter()
        .filter_map(|r| r.max_parallel.map(|m| (r.name.as_str(), m)))
        .collect();
    let mut load: BTreeMap<(&str, usize), u32> = BTreeMap::new();
    // Per group, every wave before this one is full: searches start here,
    // which keeps placement linear in the number of nodes.
    let mut first_open: BTreeMap<&str, usize> = BTreeMap::new();
    let mut wave: Vec<Option<usize>> = vec![None; fleet.nodes.len()];
    let index: BTreeMap<usize, NodeIndex> = graph.node_indices().map(|n| (graph[n], n)).collect();
    for i in queue {
        let earliest = graph
            .edges_directed(index[&i], petgraph::Direction::Incoming)
            .filter_map(|e| wave[graph[e.source()]])
            .map(|w| w + 1)
            .max()
            .unwrap_or(0);
        let group = fleet.nodes[i].rollout.as_deref();
        let mut w = earliest;
        if let Some(limit) = group.and_then(|g| limits.get(g)) {
            let g = group.expect("limited groups have names");
            let open = first_open.entry(g).or_insert(0);
            w = w.max(*open);
            while load.get(&(g, w)).copied().unwrap_or(0) >= *limit {
                w += 1;
            }
            let count = load.entry((g, w)).or_insert(0);
            *count += 1;
            if w == *open && *count >= *limit {
                while load.get(&(g, *open)).copied().unwrap_or(0) >= *limit {
                    *open += 1;
                }
            }
        }
        wave[i] = Some(w);
    }
    wave
}
