//! The graph across nodes: `depends_on` edges, cycle detection, and the
//! waves in which changed nodes converge (respecting rollout `max_parallel`).

use std::collections::{BTreeMap, VecDeque};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::diag::{Loc, Problem};
use crate::model::fleet::Fleet;

/// A `depends_on` edge: `to` waits for `from`.
#[derive(Debug, Clone)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// The `depends_on` entry that declares it.
    pub at: Loc,
}

/// The dependency graph of a fleet; node weights index `fleet.nodes`.
pub struct Dependencies {
    graph: DiGraph<usize, Loc>,
}

impl Dependencies {
    pub fn new(fleet: &Fleet) -> Self {
        let mut graph = DiGraph::with_capacity(fleet.nodes.len(), fleet.nodes.len());
        let index: Vec<NodeIndex> = (0..fleet.nodes.len()).map(|i| graph.add_node(i)).collect();
        for (i, node) in fleet.nodes.iter().enumerate() {
            for dep in &node.depends_on {
                // Nodes left out by validation have no index; their own
                // problem is already reported.
                if let Ok(j) = fleet
                    .nodes
                    .binary_search_by(|n| n.name.as_str().cmp(&dep.value))
                {
                    graph.add_edge(index[j], index[i], dep.at.clone());
                }
            }
        }
        Self { graph }
    }

    /// Every edge, sorted by (to, from).
    pub fn edges(&self, fleet: &Fleet) -> Vec<Edge> {
        let mut edges: Vec<Edge> = self
            .graph
            .edge_references()
            .map(|e| Edge {
                from: fleet.nodes[self.graph[e.source()]].name.clone(),
                to: fleet.nodes[self.graph[e.target()]].name.clone(),
                at: e.weight().clone(),
            })
            .collect();
        edges.sort_by(|a, b| (&a.to, &a.from).cmp(&(&b.to, &b.from)));
        edges
    }

    /// One problem per dependency cycle, with the whole path and each edge's place.
    pub fn cycles(&self, fleet: &Fleet) -> Vec<Problem> {
        let mut problems = Vec::new();
        for scc in tarjan_scc(&self.graph) {
            if scc.len() < 2 {
                continue;
            }
            // Start from the alphabetically first node so the report is stable.
            let start = *scc
                .iter()
                .min_by_key(|i| &fleet.nodes[self.graph[**i]].name)
                .expect("non-empty");
            let cycle = self.shortest_cycle(start, &scc);
            let names: Vec<&str> = cycle
                .iter()
                .map(|(n, _)| fleet.nodes[self.graph[*n]].name.as_str())
                .chain(std::iter::once(
                    fleet.nodes[self.graph[start]].name.as_str(),
                ))
                .collect();
            let mut problem = Problem::new(
                "rivet::plan::cycle",
                format!("dependency cycle: {}", names.join(" → ")),
            )
            .help("a node cannot wait for itself: remove one of these `depends_on` entries");
            for (k, (_, loc)) in cycle.iter().enumerate() {
                let label = format!("{} waits for {}", names[k + 1], names[k]);
                problem = if k == 0 {
                    problem.at(loc, label)
                } else {
                    problem.also(loc, label)
                };
            }
            problems.push(problem);
        }
        problems
    }

    /// The nodes of a shortest cycle through `start` within `scc`, each with
    /// the place of the edge leaving it.
    fn shortest_cycle(&self, start: NodeIndex, scc: &[NodeIndex]) -> Vec<(NodeIndex, Loc)> {
        let mut previous: BTreeMap<NodeIndex, (NodeIndex, Loc)> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            let mut outgoing: Vec<_> = self.graph.edges(n).collect();
            outgoing.sort_by_key(|e| e.target());
            for e in outgoing {
                let m = e.target();
                if !scc.contains(&m) {
                    continue;
                }
                if m == start {
                    let mut path = vec![(n, e.weight().clone())];
                    let mut cur = n;
                    while cur != start {
                        let (p, loc) = previous[&cur].clone();
                        path.push((p, loc));
                        cur = p;
                    }
                    path.reverse();
                    return path;
                }
                if m != start && !previous.contains_key(&m) {
                    previous.insert(m, (n, e.weight().clone()));
                    queue.push_back(m);
                }
            }
        }
        Vec::new()
    }

    /// Waves of the nodes for which `changed[i]` holds: a node comes after
    /// every changed node it depends on, and no wave holds more nodes of a
    /// rollout group than its `max_parallel`. Returns each changed node's
    /// wave (0-based). The graph must be acyclic.
    pub fn waves(&self, fleet: &Fleet, changed: &[bool]) -> Vec<Option<usize>> {
        let order = petgraph::algo::toposort(&self.graph, None).expect("cycles are reported first");
        // Longest-path depth among changed nodes gives a processing order
        // in which every dependency comes first.
        let mut depth = vec![0usize; fleet.nodes.len()];
        for &n in &order {
            let i = self.graph[n];
            for e in self.graph.edges_directed(n, petgraph::Direction::Incoming) {
                let j = self.graph[e.source()];
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
        let index: BTreeMap<usize, NodeIndex> = self
            .graph
            .node_indices()
            .map(|n| (self.graph[n], n))
            .collect();
        for i in queue {
            let earliest = self
                .graph
                .edges_directed(index[&i], petgraph::Direction::Incoming)
                .filter_map(|e| wave[self.graph[e.source()]])
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
}
