//! `rivet validate` refuses exactly what `rivet reconcile --dry-run`
//! refuses: a pull request that validates also plans.

use std::path::Path;

use assert_cmd::Command;

use crate::support::{copy_dir, fixture};

/// One problem as a command reports it: its code, its place, and the places
/// in other files it points to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Reported {
    code: String,
    at: Option<String>,
    see: Vec<String>,
    /// Every snippet's header: a problem whose places lie far apart in one
    /// file is shown as several snippets, the first place first.
    places: Vec<String>,
}

struct Refusal {
    code: i32,
    problems: Vec<Reported>,
}

fn rivet(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::cargo_bin("rivet")
        .unwrap()
        .env("NO_COLOR", "1")
        .env("RIVET_TEST_BMC_PASSWORD", "hunter2-canary")
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

/// `rivet validate --format json`: every error record.
fn validate(dir: &Path) -> Refusal {
    let out = rivet(dir, &["validate", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("validate printed no JSON ({e}): {:?}", out));
    let position = |v: &serde_json::Value| {
        format!(
            "{}:{}:{}",
            v["file"].as_str().unwrap(),
            v["line"],
            v["column"]
        )
    };
    let mut problems: Vec<Reported> = doc["errors"]
        .as_array()
        .expect("an `errors` list")
        .iter()
        .map(|e| {
            let file = e["file"].as_str();
            Reported {
                code: e["code"].as_str().expect("a code").to_string(),
                // A whole-file problem names its file but has no place in it.
                at: file.filter(|_| e["line"].is_u64()).map(|_| position(e)),
                // The human form quotes places in the primary file inline,
                // without their position: compare the others.
                see: e["related"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|r| r["file"].as_str() != file)
                    .map(position)
                    .collect(),
                places: Vec::new(),
            }
        })
        .collect();
    problems.sort();
    Refusal {
        code: out.status.code().unwrap_or(-1),
        problems,
    }
}

/// `rivet reconcile --dry-run`, read from its human diagnostics on stderr.
fn dry_run(dir: &Path) -> Refusal {
    human(dir, &["reconcile", "--dry-run"])
}

/// A command's human diagnostics on stderr: each problem starts with its
/// code on a line of its own, its place is the first snippet's header, and
/// places in other files follow as `☞ see …`.
fn human(dir: &Path, args: &[&str]) -> Refusal {
    let out = rivet(dir, args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let is_code = |line: &str| {
        line.starts_with("rivet::")
            && line
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b':')
    };
    let mut problems: Vec<Reported> = Vec::new();
    let mut in_advice = false;
    for line in stderr.lines() {
        if is_code(line) {
            problems.push(Reported {
                code: line.to_string(),
                at: None,
                see: Vec::new(),
                places: Vec::new(),
            });
            in_advice = false;
            continue;
        }
        let Some(current) = problems.last_mut() else {
            continue;
        };
        if line.starts_with("Advice:") {
            in_advice = true;
        } else if let Some(place) = line.trim_start().strip_prefix("☞ see ") {
            current.see.push(place.trim().to_string());
        } else if !in_advice && let Some(header) = line.split("╭─[").nth(1) {
            let place = header.trim_end().trim_end_matches(']').to_string();
            current.at.get_or_insert_with(|| place.clone());
            current.places.push(place);
        }
    }
    problems.sort();
    let count = format!("error: {} problem", problems.len());
    assert!(
        problems.is_empty() || stderr.contains(&count),
        "the summary does not count {} problems:\n{stderr}",
        problems.len()
    );
    Refusal {
        code: out.status.code().unwrap_or(-1),
        problems,
    }
}

fn fixtures(group: &str) -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(fixture(group))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    cases
}

/// Both commands refuse `dir` with the same problems at the same places.
fn assert_same_refusal(case: &str, dir: &Path) {
    let validated = validate(dir);
    let planned = dry_run(dir);
    assert!(
        !validated.problems.is_empty(),
        "{case}: `rivet validate` reports nothing"
    );
    assert!(
        !planned.problems.is_empty(),
        "{case}: `rivet reconcile --dry-run` reports nothing"
    );
    assert_ne!(validated.code, 0, "{case}: `rivet validate` exits 0");
    assert_ne!(
        planned.code, 0,
        "{case}: `rivet reconcile --dry-run` exits 0"
    );
    // Both render their problems the same way: the human forms are equal.
    let validated_human = human(dir, &["validate"]);
    assert_eq!(
        validated_human.problems, planned.problems,
        "{case}: validate (left) and reconcile --dry-run (right) differ"
    );
    // And validate's JSON records name those problems at those places.
    let mut json_codes: Vec<&str> = validated.problems.iter().map(|p| p.code.as_str()).collect();
    let mut human_codes: Vec<&str> = planned.problems.iter().map(|p| p.code.as_str()).collect();
    json_codes.sort();
    human_codes.sort();
    assert_eq!(
        json_codes, human_codes,
        "{case}: JSON (left) and human (right) codes differ"
    );
    for record in &validated.problems {
        assert!(
            planned.problems.iter().any(|p| p.code == record.code
                && p.see == record.see
                && record.at.as_ref().is_none_or(|at| p.places.contains(at))),
            "{case}: {record:?} is not among the dry run's {:?}",
            planned.problems
        );
    }
}

#[test]
fn validate_refuses_what_a_dry_run_refuses_with_the_same_codes_and_places() {
    for case in fixtures("invalid") {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(&fixture(&format!("invalid/{case}")), tmp.path());
        assert_same_refusal(&case, tmp.path());
    }
    let mut refused_plans = Vec::new();
    for case in fixtures("plan") {
        let fleet = crate::plan::prepare(&case);
        if validate(fleet.path()).code != 0 || dry_run(fleet.path()).code != 0 {
            assert_same_refusal(&case, fleet.path());
            refused_plans.push(case);
        }
    }
    for case in [
        "missing_required_argument",
        "template_conflict",
        "three_node_cycle",
    ] {
        assert!(
            refused_plans.iter().any(|c| c == case),
            "plan fixture {case} is no longer refused: {refused_plans:?}"
        );
    }
}

#[test]
fn rivet_reconcile_refuses_a_clustered_fleet_and_changes_nothing() {
    let fleet = crate::support::TempFleet::new(&[
        (
            "rivet.toml",
            "[conductor]\nhost = \"prov-1\"\n\n[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nadvertise_url = \"http://10.0.0.5:6385\"\n",
        ),
        (
            "nodes/a.toml",
            "[[node]]\nname = \"n1\"\ndriver = \"fake-hardware\"\ndesired = { provision = \"manageable\", power = \"on\" }\n",
        ),
    ]);
    let dir = fleet.path();
    // It validates, and plans offline from this host's state file, saying so.
    assert_eq!(rivet(dir, &["validate"]).status.code(), Some(0));
    let planned = rivet(dir, &["reconcile", "--dry-run"]);
    assert_eq!(planned.status.code(), Some(0), "{planned:?}");
    let stdout = String::from_utf8(planned.stdout).unwrap();
    let header = stdout.lines().next().unwrap();
    assert!(
        header.contains("state file of this host, prov-1") && header.contains(".rivet/state.redb"),
        "{stdout}"
    );
    assert!(stdout.contains("manage"), "{stdout}");
    // The JSON plan is the plan alone.
    let json = rivet(dir, &["reconcile", "--dry-run", "--format", "json"]);
    serde_json::from_slice::<serde_json::Value>(&json.stdout).expect("a JSON plan");

    for args in [&["reconcile"][..], &["reconcile", "--refresh"][..]] {
        let out = rivet(dir, args);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: no plan is shown");
        for says in [
            "converged by its daemons",
            "would drive the same BMCs",
            "Nothing was changed",
            "rivet status --url http://10.0.0.5:6385",
            "stop the fleet's daemons, remove [cluster]",
        ] {
            assert!(stderr.contains(says), "{args:?}: no `{says}` in:\n{stderr}");
        }
    }
    // No state file, no fake BMC: not even the state directory.
    assert!(!dir.join(".rivet").exists());
    // Without [cluster], the same fleet converges.
    std::fs::write(dir.join("rivet.toml"), "[conductor]\nhost = \"prov-1\"\n").unwrap();
    let out = rivet(dir, &["reconcile"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(dir.join(".rivet/state.redb").exists());
    let plan = String::from_utf8(rivet(dir, &["reconcile", "--dry-run"]).stdout).unwrap();
    assert!(!plan.contains("state file of this host"), "{plan}");
}
