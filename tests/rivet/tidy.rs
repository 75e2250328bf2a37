//! Tidy checks over the source tree, in the spirit of rust-analyzer's: the
//! layer order of docs/ARCHITECTURE.md holds with no exception, the
//! top-level modules form no import cycle, and only the command line prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may import modules of its own layer
/// or lower ones, never a higher one; within a layer, no cycles.
const LAYERS: &[&[&str]] = &[
    &["diag", "vocab", "backoff"],
    &["config"],
    &["model"],
    &["store", "driver", "cluster"],
    &["plan"],
    &["reconcile"],
    &["conductor"],
    &["api"],
    &["daemon"],
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level module a file under `src/` belongs to (`None` for the
/// crate root files).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The code of a line without its `//` comment (string literals holding
/// `//` are rare enough in `use` lines not to matter).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Every top-level module a source text names through `crate::…`,
/// including grouped `use crate::{a::b, c}` forms, with the line.
fn imports(text: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = code(line);
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let ident: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !ident.is_empty() {
                        found.push((ident, n + 1));
                    }
                }
            } else {
                let ident: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !ident.is_empty() {
                    found.push((ident, n + 1));
                }
            }
            rest = after;
        }
    }
    found
}

/// What is wrong with these files (relative path, text): imports up the
/// layer order, modules missing from the table, and import cycles between
/// top-level modules.
fn layering_problems(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in files {
        let Some(module) = module_of(path) else {
            continue;
        };
        let Some(layer) = layer_of(&module) else {
            problems.push(format!(
                "src/{}: module `{module}` is in no layer; add it to LAYERS and to docs/ARCHITECTURE.md",
                path.display()
            ));
            continue;
        };
        for (target, line) in imports(text) {
            if target == module || target == "self" || target == "super" {
                continue;
            }
            let Some(target_layer) = layer_of(&target) else {
                problems.push(format!(
                    "src/{}:{line}: `crate::{target}` is in no layer",
                    path.display()
                ));
                continue;
            };
            if target_layer > layer {
                problems.push(format!(
                    "src/{}:{line}: `{module}` imports `{target}`, which is above it in the layer order",
                    path.display()
                ));
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    // A cycle between modules: a path from a module back to itself.
    for start in edges.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
        while let Some(path) = stack.pop() {
            let last = path.last().expect("non-empty").clone();
            for next in edges.get(&last).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(next.clone());
                    problems.push(format!("import cycle: {}", cycle.join(" → ")));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
    problems.sort();
    problems.dedup();
    problems
}

/// Lines that print (to stdout or stderr) outside the command line.
fn printing_problems(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, text) in files {
        if path.starts_with("cli") || path == Path::new("main.rs") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let line = code(line);
            if [
                "println!",
                "print!",
                "eprintln!",
                "eprint!",
                "stdout()",
                "stderr()",
            ]
            .iter()
            .any(|p| line.contains(p))
            {
                problems.push(format!(
                    "src/{}:{}: prints; only main.rs and cli/ print (log with tracing, or return the result to the caller)",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    problems
}

fn sources() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path.strip_prefix(&src).unwrap().to_path_buf(), text));
            }
        }
    }
    files.sort();
    assert!(files.len() > 20, "found only {} source files", files.len());
    files
}

#[test]
fn no_import_points_up_the_layer_order_or_forms_a_cycle() {
    let problems = layering_problems(&sources());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn only_the_command_line_prints() {
    let problems = printing_problems(&sources());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_tidy_checks_find_what_they_look_for() {
    let files = vec![
        (
            PathBuf::from("model/fleet.rs"),
            "use crate::plan::Plan; // up\nuse crate::{diag::Problem, vocab};\n".to_string(),
        ),
        (
            PathBuf::from("store/mod.rs"),
            "fn f() { crate::driver::x(); }\n".to_string(),
        ),
        (
            PathBuf::from("driver/mod.rs"),
            "use crate::store::Store;\n// use crate::cli::nothing;\n".to_string(),
        ),
        (
            PathBuf::from("plan/mod.rs"),
            "fn f() { println!(\"x\"); }\n".to_string(),
        ),
        (
            PathBuf::from("cli/mod.rs"),
            "fn f() { println!(\"x\"); }\n".to_string(),
        ),
        (
            PathBuf::from("cluster/etcd.rs"),
            "use crate::reconcile::Pass;\nuse crate::{backoff, model::node};\n".to_string(),
        ),
        (PathBuf::from("widgets.rs"), String::new()),
    ];
    let problems = layering_problems(&files);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("src/model/fleet.rs:1:") && p.contains("`plan`")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p == "import cycle: driver → store → driver"),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("src/cluster/etcd.rs:1:") && p.contains("`reconcile`")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`widgets` is in no layer")),
        "{problems:#?}"
    );
    // Grouped imports of lower layers and commented-out lines are fine.
    assert!(
        !problems
            .iter()
            .any(|p| p.contains(":2:") || p.contains("cli")),
        "{problems:#?}"
    );
    let printing = printing_problems(&files);
    assert_eq!(printing.len(), 1, "{printing:#?}");
    assert!(printing[0].starts_with("src/plan/mod.rs:1:"));
}
