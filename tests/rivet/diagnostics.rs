//! Every invalid fleet under tests/fixtures/invalid gives a full diagnostic
//! (file, line, column, message, help), snapshotted as users see it.

use rivet::model::fleet::load;

use crate::support::fixture;

/// Problems that are about a file or directory as a whole, not a place in one.
const WITHOUT_PLACE: &[&str] = &[
    "rivet::load::unreadable",
    "rivet::load::empty",
    "rivet::load::no_directory",
];

fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(fixture("invalid"))
        .expect("fixtures")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    cases
}

#[test]
fn there_are_at_least_25_invalid_fleets() {
    assert!(cases().len() >= 25, "only {} cases", cases().len());
}

#[test]
fn every_invalid_fleet_renders_a_located_diagnostic_with_help() {
    for case in cases() {
        let loaded = load(&fixture(&format!("invalid/{case}")));
        assert!(!loaded.is_valid(), "{case}: expected problems, found none");
        let mut rendered = String::new();
        for problem in &loaded.problems {
            assert!(
                problem.help.is_some(),
                "{case}: `{}` has no help",
                problem.message
            );
            if !WITHOUT_PLACE.contains(&problem.code) {
                let at = problem
                    .at
                    .as_ref()
                    .unwrap_or_else(|| panic!("{case}: `{}` has no location", problem.message));
                let record = problem.record();
                assert_eq!(record.file.as_deref(), Some(at.loc.file.name.as_str()));
                assert!(record.line.unwrap() >= 1 && record.column.unwrap() >= 1);
            }
            rendered.push_str(&problem.render_plain());
            rendered.push('\n');
        }
        assert!(
            !rendered.contains("hunter2"),
            "{case}: a secret leaked into a diagnostic:\n{rendered}"
        );
        insta::assert_snapshot!(case, rendered);
    }
}

#[test]
fn all_problems_are_reported_together_not_just_the_first() {
    let loaded = load(&fixture("invalid/many_problems_at_once"));
    let codes: Vec<&str> = loaded.problems.iter().map(|p| p.code).collect();
    assert_eq!(
        codes,
        [
            "rivet::composition::driver_not_found",
            "rivet::node::unknown_dependency",
            "rivet::node::unknown_rollout",
            "rivet::conductor::workers",
        ]
    );
}

#[test]
fn a_bad_global_default_breaks_only_the_nodes_it_does_not_fit() {
    let loaded = load(&fixture("invalid/bad_global_default"));
    let valid: Vec<&str> = loaded.fleet.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(valid, ["fake1"]);
    assert_eq!(loaded.problems.len(), 1);
    assert!(loaded.problems[0].message.contains("ipmi1"));
}

#[test]
fn duplicate_names_show_both_places() {
    let loaded = load(&fixture("invalid/duplicate_node_name"));
    let problem = &loaded.problems[0];
    let record = problem.record();
    assert_eq!(record.file.as_deref(), Some("nodes/b/b.toml"));
    assert_eq!(record.related.len(), 1);
    assert_eq!(record.related[0].file, "nodes/a.toml");
    assert_eq!((record.related[0].line, record.related[0].column), (2, 8));
}

#[test]
fn nodes_in_a_dependency_cycle_are_left_out_and_their_dependents_stay() {
    let loaded = load(&fixture("invalid/dependency_cycle"));
    let codes: Vec<&str> = loaded.problems.iter().map(|p| p.code).collect();
    assert_eq!(codes, ["rivet::plan::cycle"]);
    assert_eq!(
        loaded.problems[0].message,
        "dependency cycle: db → web → db"
    );
    let valid: Vec<&str> = loaded.fleet.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(valid, ["lb"]);
}

#[test]
fn template_conflicts_are_found_on_nodes_that_are_not_to_be_deployed() {
    // n1 is declared `available`: no plan would deploy it yet, but its
    // templates are already in conflict.
    let loaded = load(&fixture("invalid/template_conflict"));
    let codes: Vec<&str> = loaded.problems.iter().map(|p| p.code).collect();
    assert_eq!(codes, ["rivet::step::template_conflict"]);
    assert!(loaded.fleet.nodes.is_empty());
}

/// The problem codes a fixture's `expect` file lists, one a line.
fn expected_codes(case: &str) -> Vec<String> {
    let path = fixture(&format!("invalid/{case}/expect"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("{case}: no `expect` file listing the problem codes the fixture is for")
    });
    let mut codes: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    codes.sort();
    codes
}

#[test]
fn every_invalid_fleet_finds_exactly_the_problems_it_is_for() {
    for case in cases() {
        let loaded = load(&fixture(&format!("invalid/{case}")));
        let mut found: Vec<String> = loaded.problems.iter().map(|p| p.code.to_string()).collect();
        found.sort();
        assert_eq!(
            found,
            expected_codes(&case),
            "{case}: the problems found are not those its `expect` file names"
        );
        for problem in &loaded.problems {
            assert!(
                problem.at.is_some() || WITHOUT_PLACE.contains(&problem.code),
                "{case}: `{}` has no place",
                problem.code
            );
        }
    }
}

/// Every problem code written in `src/` (`"rivet::area::what"`, but for
/// tracing targets).
fn codes_in_src() -> std::collections::BTreeSet<String> {
    let mut codes = std::collections::BTreeSet::new();
    let mut dirs = vec![crate::support::root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices("\"rivet::") {
                let rest = &text[i + 1..];
                let code: String = rest
                    .chars()
                    .take_while(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':'
                    })
                    .collect();
                let before = text[..i].trim_end();
                let is_target = before.ends_with("target:");
                if code.matches("::").count() == 2 && !is_target {
                    codes.insert(code);
                }
            }
        }
    }
    codes
}

#[test]
fn every_problem_code_has_a_fixture() {
    let mut covered: std::collections::BTreeSet<String> = cases()
        .iter()
        .flat_map(|case| expected_codes(case))
        .collect();
    // A fixture is a directory, so "not a directory" is a file given instead.
    let file = fixture("invalid/unknown_rollout/rivet.toml");
    let not_a_dir = load(&file);
    assert_eq!(
        not_a_dir
            .problems
            .iter()
            .map(|p| p.code)
            .collect::<Vec<_>>(),
        vec!["rivet::load::no_directory"]
    );
    covered.insert("rivet::load::no_directory".into());
    let in_src = codes_in_src();
    assert!(
        in_src.len() > 40,
        "found only {} codes in src/",
        in_src.len()
    );
    let uncovered: Vec<&String> = in_src.difference(&covered).collect();
    assert!(
        uncovered.is_empty(),
        "problem codes with no fixture under tests/fixtures/invalid: {uncovered:?}"
    );
}

#[test]
fn a_mac_declared_twice_is_a_problem_at_both_places_and_both_nodes_are_left_out() {
    let loaded = load(&fixture("invalid/port_duplicate_mac"));
    let places: Vec<(String, usize, usize, String)> = loaded
        .problems
        .iter()
        .map(|p| {
            assert_eq!(p.code, "rivet::port::duplicate_address");
            let r = p.record();
            assert_eq!(r.related.len(), 1);
            (
                r.file.unwrap(),
                r.line.unwrap(),
                r.column.unwrap(),
                r.related[0].file.clone(),
            )
        })
        .collect();
    assert_eq!(
        places,
        [
            ("nodes/a.toml".into(), 6, 11, "nodes/b.toml".into()),
            ("nodes/b.toml".into(), 4, 22, "nodes/a.toml".into())
        ]
    );
    let valid: Vec<&str> = loaded.fleet.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(valid, ["n2"]);
}

#[test]
fn ports_keep_macs_in_lower_case_with_derived_uuids() {
    let dir = crate::support::TempFleet::new(&[(
        "nodes/a.toml",
        "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\n\n[[node.ports]]\naddress = \"52:54:00:AB:CD:EF\"\nphysical_network = \"physnet1\"\nlocal_link_connection = { switch_id = \"0a:1b:2c:3d:4e:5f\", port_id = \"Ethernet3/1\" }\n\n[[node.ports]]\naddress = \"52:54:00:ab:cd:f0\"\nuuid = \"1be26c0b-03f2-4d2e-ae87-c02d7f33c123\"\npxe_enabled = false\n",
    )]);
    let loaded = load(dir.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    let node = &loaded.fleet.nodes[0];
    let ports = &node.ports;
    assert_eq!(ports[0].address, "52:54:00:ab:cd:ef");
    assert!(ports[0].pxe_enabled && !ports[1].pxe_enabled);
    assert_eq!(
        ports[0].uuid,
        rivet::model::node::derived_port_uuid(&node.uuid, "52:54:00:ab:cd:ef")
    );
    assert_eq!(
        ports[1].uuid.to_string(),
        "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
    );
    assert_eq!(ports[0].physical_network.as_deref(), Some("physnet1"));
    assert_eq!(
        ports[0].local_link_connection.port_id.as_deref(),
        Some("Ethernet3/1")
    );
}
