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

/// The fixtures that hide a literal secret where a pre-scan of the raw text
/// missed it: an escaped key, typo keys, a syntax error on the secret's
/// line, an escaped `@`, a `?token=` and escapes before the user-info.
const HIDDEN_SECRETS: &[&str] = &[
    "secret_escaped_key",
    "secret_typo_keys",
    "secret_syntax_error",
    "secret_url_escaped_at",
    "secret_url_query_token",
    "secret_url_escapes_before_userinfo",
    "secret_in_password_env",
];

#[test]
fn literal_secrets_do_not_slip_past_redaction() {
    for case in HIDDEN_SECRETS {
        let dir = fixture(&format!("invalid/{case}"));
        let text = std::fs::read_to_string(dir.join("nodes/a.toml")).unwrap();
        assert!(
            text.contains("hunter2"),
            "{case}: the fixture holds no canary"
        );
        for args in [
            &["validate"][..],
            &["validate", "--format", "json"][..],
            &["reconcile", "--dry-run"][..],
        ] {
            let output = assert_cmd::Command::cargo_bin("rivet")
                .unwrap()
                .args(args)
                .arg(&dir)
                .env("NO_COLOR", "1")
                .output()
                .unwrap();
            assert_eq!(output.status.code(), Some(1), "{case} {args:?}");
            let shown = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                !shown.contains("hunter2"),
                "{case} {args:?}: a secret leaked:\n{shown}"
            );
            if args.len() != 3 {
                assert!(shown.contains("nodes/a.toml"), "{case} {args:?}:\n{shown}");
            }
        }
        // The snippet still shows the line, with the secret blanked.
        let rendered: String = load(&dir)
            .problems
            .iter()
            .map(|p| p.render_plain())
            .collect();
        assert!(
            rendered.contains("***"),
            "{case}: nothing blanked:\n{rendered}"
        );
    }
}

#[test]
fn password_env_holding_the_password_is_not_echoed() {
    let node = |password_env: &str| {
        format!(
            "[[node]]\nname = \"n1\"\ndriver = \"ipmi\"\n\
             bmc = {{ address = \"ipmi://10.0.0.1\", username = \"admin\", password_env = \"{password_env}\" }}\n"
        )
    };
    // Looks random, and no such variable is set: the password itself.
    let pasted = "Xk9fQ2mZpL7vR4tW";
    assert!(std::env::var_os(pasted).is_none());
    let fleet = crate::support::TempFleet::new(&[("nodes/a.toml", &node(pasted))]);
    let loaded = load(fleet.path());
    let problem = loaded
        .problems
        .iter()
        .find(|p| p.code == "rivet::bmc::password_env")
        .expect("a password_env problem");
    assert!(
        problem
            .message
            .contains("must name an environment variable")
    );
    let json = serde_json::to_string(&problem.record()).unwrap();
    for shown in [problem.render_plain(), json] {
        assert!(!shown.contains(pasted), "echoed:\n{shown}");
    }
    // A variable's name is kept as written and accepted.
    let fleet = crate::support::TempFleet::new(&[("nodes/a.toml", &node("RACK1_BMC_PASSWORD"))]);
    let loaded = load(fleet.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    assert!(
        loaded
            .fleet
            .files
            .iter()
            .any(|f| f.text.contains("RACK1_BMC_PASSWORD"))
    );
}
