//! Properties of plans over random fleets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use proptest::prelude::*;
use rivet::plan::{self, Observed};
use rivet::vocab::{PowerState, ProvisionState};

use crate::support::TempFleet;

#[derive(Debug, Clone)]
struct NodeSpec {
    deps: Vec<usize>,
    group: Option<usize>,
    traits: Vec<usize>,
    reset_priority: Option<u32>,
    desired: &'static str,
    power: Option<&'static str>,
    observed: ProvisionState,
    observed_power: Option<PowerState>,
}

fn node_spec(index: usize) -> impl Strategy<Value = NodeSpec> {
    let deps = if index == 0 {
        Just(Vec::new()).boxed()
    } else {
        prop::collection::vec(0..index, 0..3).boxed()
    };
    (
        deps,
        prop::option::of(0..3usize),
        prop::collection::vec(0..3usize, 0..3),
        prop::option::of(0..200u32),
        prop::sample::select(vec!["manageable", "available", "active"]),
        prop::option::of(prop::sample::select(vec!["on", "off"])),
        prop::sample::select(vec![
            ProvisionState::Enroll,
            ProvisionState::Manageable,
            ProvisionState::Available,
            ProvisionState::Active,
            ProvisionState::DeployFailed,
            ProvisionState::Deploying,
        ]),
        prop::option::of(prop::sample::select(vec![PowerState::On, PowerState::Off])),
    )
        .prop_map(
            |(
                mut deps,
                group,
                mut traits,
                reset_priority,
                desired,
                power,
                observed,
                observed_power,
            )| {
                deps.sort();
                deps.dedup();
                traits.sort();
                traits.dedup();
                NodeSpec {
                    deps,
                    group,
                    traits,
                    reset_priority,
                    desired,
                    power,
                    observed,
                    observed_power,
                }
            },
        )
}

fn fleet_spec() -> impl Strategy<Value = (Vec<NodeSpec>, Vec<u32>)> {
    (1usize..24).prop_flat_map(|n| {
        let nodes: Vec<_> = (0..n).map(node_spec).collect();
        (nodes, prop::collection::vec(1u32..4, 3))
    })
}

const TEMPLATES: &str = r#"
[[deploy_template]]
name = "CUSTOM_T0"
steps = [{ interface = "bios", step = "apply_configuration", priority = 150, args = { settings = [] } }]

[[deploy_template]]
name = "CUSTOM_T1"
steps = [{ interface = "bios", step = "factory_reset", priority = 150 }]

[[deploy_template]]
name = "CUSTOM_T2"
steps = [{ interface = "deploy", step = "deploy", priority = 95 }]
"#;

fn write(nodes: &[NodeSpec], limits: &[u32]) -> TempFleet {
    let mut rivet = String::new();
    for (g, limit) in limits.iter().enumerate() {
        writeln!(
            rivet,
            "[[rollout]]\nname = \"g{g}\"\nmax_parallel = {limit}\n"
        )
        .unwrap();
    }
    let mut text = String::new();
    for (i, n) in nodes.iter().enumerate() {
        writeln!(
            text,
            "[[node]]\nname = \"n{i:02}\"\ndriver = \"fake-hardware\""
        )
        .unwrap();
        let deps: Vec<String> = n.deps.iter().map(|d| format!("\"n{d:02}\"")).collect();
        writeln!(text, "depends_on = [{}]", deps.join(", ")).unwrap();
        let traits: Vec<String> = n
            .traits
            .iter()
            .map(|t| format!("\"CUSTOM_T{t}\""))
            .collect();
        writeln!(text, "traits = [{}]", traits.join(", ")).unwrap();
        if let Some(g) = n.group {
            writeln!(text, "rollout = \"g{g}\"").unwrap();
        }
        match n.power {
            Some(p) => writeln!(
                text,
                "desired = {{ provision = \"{}\", power = \"{p}\" }}",
                n.desired
            ),
            None => writeln!(text, "desired = {{ provision = \"{}\" }}", n.desired),
        }
        .unwrap();
        if let Some(p) = n.reset_priority {
            writeln!(text, "[[node.deploy_steps]]\ninterface = \"bios\"\nstep = \"factory_reset\"\npriority = {p}").unwrap();
        }
        text.push('\n');
    }
    TempFleet::new(&[
        ("rivet.toml", &rivet),
        ("drivers/templates.toml", TEMPLATES),
        ("nodes/a.toml", &text),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn plans_are_deterministic_ordered_and_respect_dependencies((nodes, limits) in fleet_spec()) {
        let dir = write(&nodes, &limits);
        let loaded = rivet::model::fleet::load(dir.path());
        prop_assert!(loaded.is_valid(), "{:?}", loaded.problems.first().map(|p| &p.message));
        let fleet = loaded.fleet;
        let observed: BTreeMap<String, Observed> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut o = Observed::unknown();
                o.provision_state = n.observed;
                o.power_state = n.observed_power;
                (format!("n{i:02}"), o)
            })
            .collect();

        let plan = plan::build(&fleet, &observed, Vec::new()).expect("acyclic fleets plan");
        let again = plan::build(&fleet, &observed, Vec::new()).unwrap();
        prop_assert_eq!(plan::render::json(&plan), plan::render::json(&again));
        prop_assert_eq!(plan::render::human(&plan, false), plan::render::human(&again, false));

        let wave: BTreeMap<&str, Option<usize>> =
            plan.nodes.iter().map(|n| (n.name.as_str(), n.wave)).collect();
        for edge in &plan.edges {
            if let (Some(before), Some(after)) = (wave[edge.from.as_str()], wave[edge.to.as_str()]) {
                prop_assert!(before < after, "{} (wave {before}) must precede {} (wave {after})", edge.from, edge.to);
            }
        }
        for node in &plan.nodes {
            prop_assert_eq!(node.wave.is_some(), node.change != plan::Change::None);
            for pair in node.steps.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                prop_assert!(
                    (a.priority, a.interface.step_rank()) >= (b.priority, b.interface.step_rank()),
                    "{}: {} ({}) ran before {} ({})", node.name, a.id(), a.priority, b.id(), b.priority
                );
                prop_assert!(a.priority > 0 && b.priority > 0);
            }
        }
        let mut load: BTreeMap<(String, usize), u32> = BTreeMap::new();
        for node in &plan.nodes {
            if let (Some(group), Some(w)) = (&node.rollout, node.wave) {
                *load.entry((group.clone(), w)).or_default() += 1;
            }
        }
        for ((group, w), count) in load {
            let limit = limits[group[1..].parse::<usize>().unwrap()];
            prop_assert!(count <= limit, "group {group} has {count} nodes in wave {w}, limit {limit}");
        }
    }
}
