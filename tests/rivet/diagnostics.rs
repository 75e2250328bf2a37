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
    // Files git cannot hold (a FIFO, a link to a device, 16 MiB) are made by
    // the tests named here, each asserting its code.
    let this_file =
        std::fs::read_to_string(crate::support::root().join("tests/rivet/diagnostics.rs")).unwrap();
    for (code, test) in [
        (
            "rivet::load::not_a_file",
            "a_fifo_or_a_device_named_toml_does_not_hang_validate",
        ),
        (
            "rivet::load::outside",
            "a_fifo_or_a_device_named_toml_does_not_hang_validate",
        ),
        (
            "rivet::load::too_large",
            "a_file_over_16_mib_is_refused_naming_the_limit",
        ),
    ] {
        let body = this_file
            .split(&format!("fn {test}()"))
            .nth(1)
            .unwrap_or_else(|| panic!("no test `{test}`"));
        let body = body.split("\n#[test]").next().unwrap();
        assert!(body.contains(code), "`{test}` does not check `{code}`");
        covered.insert(code.into());
    }
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

/// The fixtures that hide a literal secret where a pre-scan of the raw text
/// missed it: an escaped key, typo keys, a syntax error on the secret's
/// line, an escaped `@`, a `?token=` and escapes before the user-info; and
/// those that put one in `[cluster]`: a `password`, a URL's user-info, a
/// `password_env`; and the agent's ramdisk URLs of a hardware type. With
/// the file that holds it.
const HIDDEN_SECRETS: &[(&str, &str)] = &[
    ("secret_escaped_key", "nodes/a.toml"),
    ("secret_typo_keys", "nodes/a.toml"),
    ("secret_syntax_error", "nodes/a.toml"),
    ("secret_url_escaped_at", "nodes/a.toml"),
    ("secret_url_query_token", "nodes/a.toml"),
    ("secret_url_escapes_before_userinfo", "nodes/a.toml"),
    ("secret_in_password_env", "nodes/a.toml"),
    ("cluster_literal_password", "rivet.toml"),
    ("cluster_credentials_in_url", "rivet.toml"),
    ("cluster_secret_in_password_env", "rivet.toml"),
    ("deploy_ramdisk_bad_url", "drivers/acme.toml"),
];

#[test]
fn literal_secrets_do_not_slip_past_redaction() {
    for (case, holder) in HIDDEN_SECRETS {
        let dir = fixture(&format!("invalid/{case}"));
        let text = std::fs::read_to_string(dir.join(holder)).unwrap();
        assert!(
            text.contains("hunter2"),
            "{case}: the fixture holds no canary"
        );
        for args in [
            &["validate"][..],
            &["validate", "--format", "json"][..],
            &["reconcile", "--dry-run"][..],
            &["reconcile"][..],
            &["daemon", "--http", "127.0.0.1:0"][..],
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
                assert!(shown.contains(holder), "{case} {args:?}:\n{shown}");
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

const NODE: &str = "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\n";

/// The JSON record of the one problem whose `file` is `name`.
fn record_of(loaded: &rivet::model::fleet::Loaded, name: &str) -> rivet::diag::ProblemRecord {
    let records: Vec<_> = loaded.problems.iter().map(|p| p.record()).collect();
    records
        .iter()
        .find(|r| r.file.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no problem names {name}: {records:?}"))
        .clone()
}

#[test]
fn a_fifo_or_a_device_named_toml_does_not_hang_validate() {
    let fleet = crate::support::TempFleet::new(&[("nodes/a.toml", NODE)]);
    let nodes = fleet.path().join("nodes");
    let fifo = std::ffi::CString::new(nodes.join("fifo.toml").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::os::unix::fs::symlink("/dev/urandom", nodes.join("random.toml")).unwrap();

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rivet"))
        .args(["validate", "--format", "json"])
        .arg(fleet.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("rivet validate still runs after 30 s");
        }
        std::thread::yield_now();
    };
    assert_eq!(status.code(), Some(1));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let errors = json["errors"].as_array().unwrap();
    let by_file = |name: &str| {
        errors
            .iter()
            .find(|e| e["file"] == name)
            .unwrap_or_else(|| panic!("no error names {name}: {errors:?}"))
    };
    assert_eq!(
        by_file("nodes/fifo.toml")["code"],
        "rivet::load::not_a_file"
    );
    assert!(
        by_file("nodes/fifo.toml")["message"]
            .as_str()
            .unwrap()
            .contains("a FIFO")
    );
    assert_eq!(by_file("nodes/random.toml")["code"], "rivet::load::outside");
    assert!(by_file("nodes/random.toml")["help"].is_string());
    // The regular file beside them is still read.
    assert_eq!(json["nodes"].as_array().unwrap().len(), 1);
}

#[test]
fn a_file_over_16_mib_is_refused_naming_the_limit() {
    let mut big = NODE.replace("n1", "n2");
    let line = format!("# {}\n", "x".repeat(1021));
    while big.len() <= 16 * 1024 * 1024 {
        big.push_str(&line);
    }
    let fleet = crate::support::TempFleet::new(&[("nodes/a.toml", NODE), ("nodes/big.toml", &big)]);
    let loaded = load(fleet.path());
    let record = record_of(&loaded, "nodes/big.toml");
    assert_eq!(record.code, "rivet::load::too_large");
    assert!(
        record.message.contains("nodes/big.toml"),
        "{}",
        record.message
    );
    assert!(record.message.contains("16 MiB"), "{}", record.message);
    assert!(record.help.is_some());
    // One byte less is read.
    big.truncate(16 * 1024 * 1024);
    let end = big.rfind('\n').unwrap() + 1;
    big.truncate(end);
    let fleet = crate::support::TempFleet::new(&[("nodes/big.toml", &big)]);
    assert!(load(fleet.path()).is_valid());
}

#[test]
fn symlink_loops_and_dangling_links_name_the_file_in_json() {
    let fleet = crate::support::TempFleet::new(&[("nodes/a.toml", NODE)]);
    let nodes = fleet.path().join("nodes");
    std::os::unix::fs::symlink("loop.toml", nodes.join("loop.toml")).unwrap();
    std::os::unix::fs::symlink("missing.toml", nodes.join("dangling.toml")).unwrap();
    std::os::unix::fs::symlink("missing.toml", fleet.path().join("rivet.toml")).unwrap();
    let loaded = load(fleet.path());
    for name in ["nodes/loop.toml", "nodes/dangling.toml", "rivet.toml"] {
        let record = record_of(&loaded, name);
        assert_eq!(record.code, "rivet::load::unreadable");
        assert!(record.message.contains(name), "{}", record.message);
        assert_eq!((record.line, record.column), (None, None));
    }
}

#[test]
fn a_link_to_a_file_inside_the_fleet_directory_is_read() {
    let fleet = crate::support::TempFleet::new(&[("shared/a.toml", NODE)]);
    std::fs::create_dir(fleet.path().join("nodes")).unwrap();
    std::os::unix::fs::symlink("../shared/a.toml", fleet.path().join("nodes/a.toml")).unwrap();
    let loaded = load(fleet.path());
    assert!(loaded.is_valid(), "{:?}", loaded.problems);
    assert_eq!(loaded.fleet.nodes.len(), 1);
}

#[test]
fn a_deep_dotted_table_header_is_located() {
    let deep = vec!["a"; 10_000].join(".");
    for (text, line) in [
        (format!("{NODE}[{deep}]\n"), 4),
        (format!("{NODE}{deep} = 1\n"), 4),
        (format!("{NODE}x = {{ {deep} = 1 }}\n"), 4),
        (
            format!("{NODE}x = {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
            4,
        ),
        // Found by the fuzzing harness: a value naming a token blanked the
        // header on the next line, and the key could not be found.
        (
            format!("{NODE}bmc = {{ address = \"r://h/?token=x\" }}\n[{deep}]\n"),
            5,
        ),
    ] {
        let fleet = crate::support::TempFleet::new(&[("nodes/a.toml", &text)]);
        let loaded = load(fleet.path());
        let records: Vec<_> = loaded.problems.iter().map(|p| p.record()).collect();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].code, "rivet::load::syntax");
        assert_eq!(
            records[0].file.as_deref(),
            Some("nodes/a.toml"),
            "{records:?}"
        );
        assert_eq!(records[0].line, Some(line), "{records:?}");
        assert!(records[0].help.is_some());
    }
}

#[test]
fn long_values_are_quoted_as_a_short_prefix() {
    // A rollout group with a long name, that every node's error lists.
    let long = "r".repeat(200_000);
    let mut files = vec![(
        "rivet.toml".to_string(),
        format!("[[rollout]]\nname = \"{long}\"\n"),
    )];
    let nodes: String = (0..100)
        .map(|i| {
            format!("[[node]]\nname = \"n{i}\"\ndriver = \"fake-hardware\"\nrollout = \"rack1\"\n")
        })
        .collect();
    files.push(("nodes/a.toml".to_string(), nodes));
    // A long key.
    files.push((
        "nodes/b.toml".to_string(),
        format!("{}{} = 1\n", NODE.replace("n1", "b1"), "k".repeat(200_000)),
    ));
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let fleet = crate::support::TempFleet::new(&files);

    let start = std::time::Instant::now();
    let loaded = load(fleet.path());
    assert_eq!(
        loaded.problems.len(),
        101,
        "{:?}",
        loaded.problems.iter().map(|p| p.code).collect::<Vec<_>>()
    );
    for problem in &loaded.problems {
        let record = problem.record();
        assert!(
            record.message.chars().count() <= 200,
            "{}",
            record.message.len()
        );
        // The unknown-key help lists every valid node key (about 500
        // characters); what must never be quoted whole is the long value.
        assert!(record.help.as_ref().unwrap().chars().count() <= 1000);
        let human = problem.render_plain();
        assert!(human.len() < 4000, "{} bytes rendered", human.len());
    }
    let rollout = loaded
        .problems
        .iter()
        .find(|p| p.code == "rivet::node::unknown_rollout")
        .unwrap();
    let prefix = format!("`{}…`", "r".repeat(rivet::diag::QUOTE_MAX));
    assert!(
        rollout.help.as_ref().unwrap().contains(&prefix),
        "{:?}",
        rollout.help
    );
    let key = loaded
        .problems
        .iter()
        .find(|p| p.message.starts_with("unknown key"))
        .unwrap();
    assert!(key.message.ends_with("kkk…`"), "{}", key.message.len());
    let took = start.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

#[test]
fn human_rendering_is_linear_in_the_number_of_problems() {
    use rivet::diag::{Loc, Problem, SourceFile};
    // 20,000 lines of 100 bytes: problems at its end must cost what
    // problems at its start cost.
    let line = format!("x = \"{}\"\n", "y".repeat(93));
    let text = line.repeat(20_000);
    let file = SourceFile::new("nodes/a.toml", "nodes/a.toml".into(), text);
    let render = |lines: std::ops::Range<usize>| {
        let start = std::time::Instant::now();
        let mut bytes = 0;
        for n in lines {
            let at = n * line.len();
            let problem = Problem::new("rivet::test", "a problem")
                .at(&Loc::new(&file, at..at + 1), "here")
                .help("fix it");
            let rendered = problem.render_plain();
            assert!(
                rendered.contains(&format!("nodes/a.toml:{}:1", n + 1)),
                "{rendered}"
            );
            bytes += rendered.len();
        }
        (start.elapsed(), bytes)
    };
    let (first, first_bytes) = render(0..300);
    let (last, last_bytes) = render(19_700..20_000);
    assert!(last_bytes >= first_bytes);
    assert!(
        last < first * 4 + std::time::Duration::from_millis(200),
        "300 problems at the start: {first:?}; at the end: {last:?}"
    );
}

/// The problems of `rivet.toml` holding `[cluster]` with `cluster`, by code.
fn cluster_problems(cluster: &str) -> Vec<rivet::diag::ProblemRecord> {
    let fleet = crate::support::TempFleet::new(&[
        ("rivet.toml", &format!("[cluster]\n{cluster}")),
        ("nodes/a.toml", NODE),
    ]);
    load(fleet.path())
        .problems
        .iter()
        .map(|p| p.record())
        .collect()
}

#[test]
fn cluster_values_are_checked_at_the_value_with_help() {
    let etcd = "etcd = [\"http://10.0.0.1:2379\"]\n";
    for (line, code, says) in [
        (
            "lease_ttl = \"ten\"",
            "rivet::cluster::lease_ttl",
            "not a duration",
        ),
        (
            "lease_ttl = \"1500ms\"",
            "rivet::cluster::lease_ttl",
            "shorter than",
        ),
        (
            "lease_ttl = \"2500ms\"",
            "rivet::cluster::lease_ttl",
            "whole seconds",
        ),
        (
            "key_prefix = \"/rivet\"",
            "rivet::cluster::key_prefix",
            "start and end",
        ),
        (
            "key_prefix = \"rivet/\"",
            "rivet::cluster::key_prefix",
            "start and end",
        ),
        (
            "key_prefix = \"/ri vet/\"",
            "rivet::cluster::key_prefix",
            "printable ASCII",
        ),
        (
            "advertise_url = \"http://10.0.0.5\"",
            "rivet::cluster::advertise_url",
            "no port",
        ),
        (
            "advertise_url = \"ftp://10.0.0.5:21\"",
            "rivet::cluster::advertise_url",
            "`ftp://`",
        ),
        (
            "password_env = \"RIVET_ETCD_PASSWORD\"",
            "rivet::cluster::credentials",
            "without `username`",
        ),
        (
            "key_file = \"rivet.toml\"",
            "rivet::cluster::tls_pair",
            "without `cert_file`",
        ),
        (
            "ca_file = \"nodes\"",
            "rivet::cluster::file",
            "is not a file",
        ),
    ] {
        let records = cluster_problems(&format!("{etcd}{line}\n"));
        let found: Vec<&str> = records.iter().map(|r| r.code).collect();
        let record = records
            .iter()
            .find(|r| r.code == code)
            .unwrap_or_else(|| panic!("{line}: no {code} in {found:?}"));
        assert!(record.message.contains(says), "{line}: {}", record.message);
        assert_eq!(
            (record.file.as_deref(), record.line),
            (Some("rivet.toml"), Some(3)),
            "{line}"
        );
        // At the value, after `key = `.
        assert_eq!(record.column, Some(line.find('"').unwrap() + 1), "{line}");
        assert!(record.help.is_some(), "{line}");
    }
    // What is valid is not a problem: 2s, a nested prefix, a URL with its port.
    let records = cluster_problems(&format!(
        "{etcd}lease_ttl = \"2s\"\nkey_prefix = \"/rivet/site-a/\"\nadvertise_url = \"https://[fd00::5]:6385/\"\n"
    ));
    assert!(records.is_empty(), "{records:?}");
}

#[test]
fn host_flags_are_checked_as_the_file_is_and_name_the_flag() {
    use rivet::model::fleet::{HostOverrides, load_with};
    let plain = crate::support::TempFleet::new(&[("nodes/a.toml", NODE)]);
    let clustered = crate::support::TempFleet::new(&[
        (
            "rivet.toml",
            "[cluster]\netcd = [\"http://10.0.0.1:2379\"]\n",
        ),
        ("nodes/a.toml", NODE),
    ]);
    let canary = "http://root:hunter2-canary@10.0.0.5:6385";
    let host = |name: &str| HostOverrides {
        host: Some(name.into()),
        ..Default::default()
    };
    let advertise = |url: &str| HostOverrides {
        advertise_url: Some(url.into()),
        ..Default::default()
    };
    let advertised = "rivet::cluster::advertise_url";
    for (dir, overrides, code, flag) in [
        (
            clustered.path(),
            host("prov 1"),
            "rivet::conductor::host",
            "`--host prov 1`",
        ),
        (
            clustered.path(),
            advertise("http://10.0.0.5:6385/v1"),
            advertised,
            "`--advertise-url`",
        ),
        (
            clustered.path(),
            advertise(canary),
            advertised,
            "credentials",
        ),
        (
            plain.path(),
            advertise("http://10.0.0.5:6385"),
            advertised,
            "no [cluster]",
        ),
    ] {
        let loaded = load_with(dir, &overrides);
        assert_eq!(
            loaded.problems.len(),
            1,
            "{overrides:?}: {:?}",
            loaded.problems
        );
        let problem = &loaded.problems[0];
        assert_eq!(problem.code, code, "{overrides:?}");
        assert!(
            problem.message.contains(flag),
            "{overrides:?}: {}",
            problem.message
        );
        assert!(
            problem.help.is_some() && problem.at.is_none(),
            "{overrides:?}"
        );
        let json = serde_json::to_string(&problem.record()).unwrap();
        for shown in [problem.render_plain(), json] {
            assert!(!shown.contains("hunter2"), "{overrides:?}: {shown}");
        }
    }
    // The daemon refuses to start on one, saying which flag, and shows no secret.
    let output = assert_cmd::Command::cargo_bin("rivet")
        .unwrap()
        .args(["daemon", "--http", "127.0.0.1:0", "--advertise-url", canary])
        .arg(clustered.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("rivet::cluster::advertise_url") && shown.contains("--advertise-url"),
        "{shown}"
    );
    assert!(!shown.contains("hunter2"), "{shown}");
}
