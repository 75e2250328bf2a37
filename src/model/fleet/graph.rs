//! The graph across nodes: `depends_on` edges and the cycles among them.
//! Validation leaves the nodes of every cycle out of the fleet, so the graph
//! of a fleet's nodes is acyclic and a plan can order it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use super::Builder;
use crate::diag::{Loc, Problem};
use crate::model::node::Node;

/// A `depends_on` edge: `to` waits for `from`.
#[derive(Debug, Clone)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// The `depends_on` entry that declares it.
    pub at: Loc,
}

/// A dependency cycle: the problem that reports it, and the nodes in it.
#[derive(Debug, Clone)]
pub struct Cycle {
    pub problem: Problem,
    /// Indexes of every node of the strongly connected component, not only
    /// those on the reported path.
    pub nodes: Vec<usize>,
}

/// The dependency graph of nodes sorted by name; node weights index them.
pub struct Dependencies<'a> {
    nodes: &'a [Arc<Node>],
    graph: DiGraph<usize, Loc>,
}

impl<'a> Dependencies<'a> {
    /// `nodes` must be sorted by name.
    pub fn new(nodes: &'a [Arc<Node>]) -> Self {
        let mut graph = DiGraph::with_capacity(nodes.len(), nodes.len());
        let index: Vec<NodeIndex> = (0..nodes.len()).map(|i| graph.add_node(i)).collect();
        for (i, node) in nodes.iter().enumerate() {
            for dep in &node.depends_on {
                // Nodes left out by validation have no index; their own
                // problem is already reported.
                if let Ok(j) = nodes.binary_search_by(|n| n.name.as_str().cmp(&dep.value)) {
                    graph.add_edge(index[j], index[i], dep.at.clone());
                }
            }
        }
        Self { nodes, graph }
    }

    /// The graph itself: an edge runs from a dependency to the node waiting
    /// for it, and carries the place of its `depends_on` entry.
    pub fn graph(&self) -> &DiGraph<usize, Loc> {
        &self.graph
    }

    fn name(&self, n: NodeIndex) -> &'a str {
        &self.nodes[self.graph[n]].name
    }

    /// Every edge, sorted by (to, from).
    pub fn edges(&self) -> Vec<Edge> {
        let mut edges: Vec<Edge> = self
            .graph
            .edge_references()
            .map(|e| Edge {
                from: self.name(e.source()).to_string(),
                to: self.name(e.target()).to_string(),
                at: e.weight().clone(),
            })
            .collect();
        edges.sort_by(|a, b| (&a.to, &a.from).cmp(&(&b.to, &b.from)));
        edges
    }

    /// One cycle per strongly connected component of two or more nodes,
    /// reported with the whole path and each edge's place.
    pub fn cycles(&self) -> Vec<Cycle> {
        let mut cycles = Vec::new();
        for scc in tarjan_scc(&self.graph) {
            if scc.len() < 2 {
                continue;
            }
            // Start from the alphabetically first node so the report is stable.
            let start = *scc
                .iter()
                .min_by_key(|i| self.name(**i))
                .expect("non-empty");
            let cycle = self.shortest_cycle(start, &scc);
            let names: Vec<&str> = cycle
                .iter()
                .map(|(n, _)| self.name(*n))
                .chain(std::iter::once(self.name(start)))
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
            cycles.push(Cycle {
                problem,
                nodes: scc.iter().map(|n| self.graph[*n]).collect(),
            });
        }
        cycles
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
}

impl Builder {
    /// Report every dependency cycle among `nodes` (sorted by name) and
    /// leave its nodes out, as any invalid node; the nodes that depend on
    /// them stay.
    pub(super) fn leave_out_cycles(&mut self, nodes: Vec<Arc<Node>>) -> Vec<Arc<Node>> {
        let mut in_cycle: BTreeSet<usize> = BTreeSet::new();
        for cycle in Dependencies::new(&nodes).cycles() {
            self.push(cycle.problem);
            in_cycle.extend(cycle.nodes);
        }
        if in_cycle.is_empty() {
            return nodes;
        }
        nodes
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !in_cycle.contains(i))
            .map(|(_, node)| node)
            .collect()
    }
}
