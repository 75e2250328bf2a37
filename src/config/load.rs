//! Reading a fleet directory: every file, with spans, every syntax and
//! shape error collected (not just the first).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::raw::{HardwareTypeDecl, InterfaceDecl, NodeDecl, RivetFile, TemplateDecl};
use crate::diag::{self, Loc, Problem, SourceFile};

/// Everything read from a fleet directory, before semantic validation.
#[derive(Debug, Default)]
pub struct RawFleet {
    pub root: PathBuf,
    pub rivet: Option<(Arc<SourceFile>, RivetFile)>,
    pub hardware_types: Vec<(Arc<SourceFile>, HardwareTypeDecl)>,
    pub interfaces: Vec<(Arc<SourceFile>, InterfaceDecl)>,
    pub templates: Vec<(Arc<SourceFile>, TemplateDecl)>,
    pub nodes: Vec<(Arc<SourceFile>, NodeDecl)>,
    /// Every file read, in the order read (sorted paths).
    pub files: Vec<Arc<SourceFile>>,
    pub problems: Vec<Problem>,
}

/// Where declaration files are read from.
enum Files<'a> {
    /// The fleet directory.
    Dir,
    /// A copy of the files' texts by relative path (the declarations last
    /// converged, kept in the state file), read as if they were in the
    /// fleet directory.
    Stored(&'a std::collections::BTreeMap<String, String>),
}

impl Files<'_> {
    fn exists(&self, root: &Path, path: &Path) -> bool {
        match self {
            Files::Dir => path.exists(),
            Files::Stored(files) => files.contains_key(&relative(root, path)),
        }
    }

    fn read(&self, root: &Path, path: &Path) -> std::io::Result<Vec<u8>> {
        match self {
            Files::Dir => std::fs::read(path),
            Files::Stored(files) => files
                .get(&relative(root, path))
                .map(|text| text.clone().into_bytes())
                .ok_or_else(|| std::io::ErrorKind::NotFound.into()),
        }
    }

    /// `*.toml` files under `dir`, sorted, at most `depth` levels down.
    fn toml_files(
        &self,
        dir: &Path,
        depth: usize,
        fleet: &mut RawFleet,
        root: &Path,
    ) -> Vec<PathBuf> {
        match self {
            Files::Dir => toml_files(dir, depth, fleet, root),
            Files::Stored(files) => {
                let prefix = format!("{}/", relative(root, dir));
                files
                    .keys()
                    .filter(|name| {
                        name.strip_prefix(&prefix).is_some_and(|rest| {
                            rest.ends_with(".toml") && rest.matches('/').count() < depth
                        })
                    })
                    .map(|name| root.join(name))
                    .collect()
            }
        }
    }
}

/// Read `rivet.toml`, `drivers/*.toml` and `nodes/**/*.toml` under `root`.
pub fn load_dir(root: &Path) -> RawFleet {
    load_files(root, &Files::Dir)
}

/// Read declarations kept as texts by their path relative to `root` (as
/// `SourceFile::name` has them) as if they were the files under `root`.
pub fn load_stored(root: &Path, files: &std::collections::BTreeMap<String, String>) -> RawFleet {
    load_files(root, &Files::Stored(files))
}

fn load_files(root: &Path, files: &Files) -> RawFleet {
    let mut fleet = RawFleet {
        root: root.to_path_buf(),
        ..RawFleet::default()
    };
    if matches!(files, Files::Dir) && !root.is_dir() {
        fleet.problems.push(
            Problem::new(
                "rivet::load::no_directory",
                format!("`{}` is not a directory", root.display()),
            )
            .help("pass the fleet directory that holds rivet.toml and nodes/"),
        );
        return fleet;
    }

    let rivet_path = root.join("rivet.toml");
    if files.exists(root, &rivet_path)
        && let Some(file) = read_source(files, root, &rivet_path, &mut fleet)
        && let Some(table) = parse(&file, &mut fleet.problems)
    {
        let parsed = deserialize::<RivetFile>(&file, 0..0, table, &mut fleet.problems);
        fleet.rivet = parsed.map(|r| (Arc::clone(&file), r));
    }

    for path in files.toml_files(&root.join("drivers"), 1, &mut fleet, root) {
        let Some(file) = read_source(files, root, &path, &mut fleet) else {
            continue;
        };
        let Some(table) = parse(&file, &mut fleet.problems) else {
            continue;
        };
        let table = table.into_inner();
        for (key, value) in table {
            let items = match key.get_ref().as_ref() {
                "hardware_type" | "interface" | "deploy_template" => {
                    match array_of_tables(&file, key.get_ref(), value, &mut fleet.problems) {
                        Some(items) => items,
                        None => continue,
                    }
                }
                other => {
                    fleet.problems.push(unknown_top_key(
                        &file,
                        key.span(),
                        other,
                        &["hardware_type", "interface", "deploy_template"],
                        "a driver file holds [[hardware_type]], [[interface]] and [[deploy_template]] tables",
                    ));
                    continue;
                }
            };
            for item in items {
                match key.get_ref().as_ref() {
                    "hardware_type" => {
                        if let Some(d) = deserialize(&file, item.span(), item, &mut fleet.problems)
                        {
                            fleet.hardware_types.push((Arc::clone(&file), d));
                        }
                    }
                    "interface" => {
                        if let Some(d) = deserialize(&file, item.span(), item, &mut fleet.problems)
                        {
                            fleet.interfaces.push((Arc::clone(&file), d));
                        }
                    }
                    _ => {
                        if let Some(d) = deserialize(&file, item.span(), item, &mut fleet.problems)
                        {
                            fleet.templates.push((Arc::clone(&file), d));
                        }
                    }
                }
            }
        }
    }

    for path in files.toml_files(&root.join("nodes"), usize::MAX, &mut fleet, root) {
        let Some(file) = read_source(files, root, &path, &mut fleet) else {
            continue;
        };
        let Some(table) = parse(&file, &mut fleet.problems) else {
            continue;
        };
        let table = table.into_inner();
        for (key, value) in table {
            if key.get_ref() != "node" {
                fleet.problems.push(unknown_top_key(
                    &file,
                    key.span(),
                    key.get_ref(),
                    &["node"],
                    "a node file holds [[node]] tables and nothing else",
                ));
                continue;
            }
            let Some(items) = array_of_tables(&file, "node", value, &mut fleet.problems) else {
                continue;
            };
            for item in items {
                if let Some(node) =
                    deserialize::<NodeDecl>(&file, item.span(), item, &mut fleet.problems)
                {
                    fleet.nodes.push((Arc::clone(&file), node));
                }
            }
        }
    }

    if fleet.nodes.is_empty() && fleet.problems.is_empty() {
        fleet.problems.push(
            Problem::new(
                "rivet::load::empty",
                "no nodes are declared in this fleet directory",
            )
            .help(
                "declare servers as [[node]] tables in nodes/*.toml (any depth); \
                 `examples/quickstart` is a complete fleet to start from",
            ),
        );
    }
    fleet
}

/// `*.toml` files under `dir`, sorted, at most `depth` levels down.
fn toml_files(dir: &Path, depth: usize, fleet: &mut RawFleet, root: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .max_depth(depth)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
    {
        match entry {
            Ok(e) => {
                if e.path().extension().is_some_and(|x| x == "toml") && !e.file_type().is_dir() {
                    out.push(e.into_path());
                }
            }
            Err(err) => {
                let shown = err
                    .path()
                    .map_or_else(|| dir.display().to_string(), |p| relative(root, p));
                fleet.problems.push(
                    Problem::new(
                        "rivet::load::unreadable",
                        format!("cannot read `{shown}`: {err}"),
                    )
                    .help("check the path exists and is readable by this user"),
                );
            }
        }
    }
    out
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Read one file and check its syntax; on failure record the problem and
/// return None. Literal secrets are blanked out of the returned text, which
/// is what every later parse and diagnostic sees.
fn read_source(
    files: &Files,
    root: &Path,
    path: &Path,
    fleet: &mut RawFleet,
) -> Option<Arc<SourceFile>> {
    let name = relative(root, path);
    let bytes = match files.read(root, path) {
        Ok(bytes) => bytes,
        Err(err) => {
            fleet.problems.push(
                Problem::new(
                    "rivet::load::unreadable",
                    format!("cannot read `{name}`: {err}"),
                )
                .help("check the file exists and is readable by this user"),
            );
            return None;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let valid_up_to = err.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(err.as_bytes()).into_owned();
            let file = SourceFile::new(name.clone(), path.to_path_buf(), lossy);
            // The lossy text maps the valid prefix byte for byte.
            let loc = Loc::new(&file, valid_up_to..valid_up_to + 1);
            fleet.problems.push(
                Problem::new(
                    "rivet::load::not_utf8",
                    format!("`{name}` is not valid UTF-8 (byte {valid_up_to})"),
                )
                .at(&loc, "this byte is not UTF-8")
                .help("TOML files must be UTF-8: re-save the file as UTF-8"),
            );
            fleet.files.push(file);
            return None;
        }
    };
    // Finding secrets needs a parse; most files cannot hold one, and for
    // those the parse that follows is the only one.
    let syntax = if may_hold_secret(&text) {
        DeTable::parse(&text).map(|table| redact_secrets(&text, &table))
    } else {
        Ok(text.clone())
    };
    let shown = match syntax {
        Ok(shown) => shown,
        Err(err) => {
            let file = SourceFile::new(name, path.to_path_buf(), text);
            fleet
                .problems
                .push(toml_problem(&file, &err, "rivet::load::syntax"));
            fleet.files.push(file);
            return None;
        }
    };
    let file = SourceFile::new(name, path.to_path_buf(), shown);
    fleet.files.push(Arc::clone(&file));
    Some(file)
}

/// Whether a secret key or a URL with credentials may appear in `text`:
/// a cheap scan that only has to never miss one.
fn may_hold_secret(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let keyword = ["password", "secret", "token", "private_key", "passphrase"]
        .iter()
        .any(|word| {
            lower.match_indices(word).any(|(i, _)| {
                let rest = &lower[i + word.len()..];
                !(rest.starts_with("_env") || rest.starts_with("_file"))
            })
        });
    keyword || (text.contains("://") && text.contains('@'))
}

/// Parse a file `read_source` accepted, recording a syntax error.
fn parse<'f>(
    file: &'f Arc<SourceFile>,
    problems: &mut Vec<Problem>,
) -> Option<Spanned<DeTable<'f>>> {
    match DeTable::parse(&file.text) {
        Ok(table) => Some(table),
        Err(err) => {
            problems.push(toml_problem(file, &err, "rivet::load::syntax"));
            None
        }
    }
}

/// Keys whose string values are secrets and must never be displayed.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.ends_with("_env") || key.ends_with("_file") {
        return false;
    }
    ["password", "secret", "token", "private_key", "passphrase"]
        .iter()
        .any(|s| key.contains(s))
}

fn redact_secrets(text: &str, table: &Spanned<DeTable<'_>>) -> String {
    let mut spans = Vec::new();
    collect_secret_spans(table.get_ref(), &mut spans);
    if spans.is_empty() {
        return text.to_string();
    }
    let mut bytes = text.as_bytes().to_vec();
    for span in spans {
        // Keep the quotes so the snippet still reads as TOML.
        let inner = (span.start + 1)..span.end.saturating_sub(1);
        for b in &mut bytes[inner] {
            *b = b'*';
        }
    }
    String::from_utf8(bytes).unwrap_or_else(|_| text.to_string())
}

fn collect_secret_spans(table: &DeTable<'_>, out: &mut Vec<std::ops::Range<usize>>) {
    for (key, value) in table.iter() {
        collect_value(is_secret_key(key.get_ref()), value, out);
    }
}

fn collect_value(
    secret: bool,
    value: &Spanned<DeValue<'_>>,
    out: &mut Vec<std::ops::Range<usize>>,
) {
    match value.get_ref() {
        DeValue::String(_) if secret => out.push(value.span()),
        DeValue::String(text) => {
            // `scheme://user:password@host`: blank the password. Spans here
            // include one byte of padding each side, like a quoted string's.
            if let Some(range) = url_password(text) {
                let content = value.span().start + 1;
                out.push((content + range.start - 1)..(content + range.end + 1));
            }
        }
        DeValue::Table(t) => collect_secret_spans(t, out),
        DeValue::Array(a) => {
            for v in a.iter() {
                collect_value(secret, v, out);
            }
        }
        _ => {}
    }
}

/// Byte range of the password in `scheme://user:password@host…`.
fn url_password(s: &str) -> Option<std::ops::Range<usize>> {
    let authority_start = s.find("://")? + 3;
    let rest = &s[authority_start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some((authority_start + colon + 1)..(authority_start + at))
}

fn array_of_tables<'i>(
    file: &Arc<SourceFile>,
    key: &str,
    value: Spanned<DeValue<'i>>,
    problems: &mut Vec<Problem>,
) -> Option<Vec<Spanned<DeValue<'i>>>> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => Some(items.into_iter().collect()),
        other => {
            problems.push(
                Problem::new(
                    "rivet::load::shape",
                    format!(
                        "`{key}` must be an array of tables, found {}",
                        other.type_str()
                    ),
                )
                .at(&Loc::new(file, span), "expected [[...]] tables")
                .help(format!("write each entry as a `[[{key}]]` table")),
            );
            None
        }
    }
}

fn unknown_top_key(
    file: &Arc<SourceFile>,
    span: std::ops::Range<usize>,
    key: &str,
    valid: &[&str],
    what: &str,
) -> Problem {
    let mut help = format!("{what}; valid keys here: {}", diag::list(valid));
    if let Some(near) = diag::nearest(key, valid.iter().copied()) {
        help = format!("did you mean `{near}`? {help}");
    }
    Problem::new("rivet::load::unknown_key", format!("unknown key `{key}`"))
        .at(&Loc::new(file, span), "not a valid key here")
        .help(help)
}

fn deserialize<'i, T: DeserializeOwned>(
    file: &Arc<SourceFile>,
    whole: std::ops::Range<usize>,
    value: impl IntoDeserializer<'i, toml::de::Error>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match T::deserialize(value.into_deserializer()) {
        Ok(v) => Some(v),
        Err(err) => {
            let mut problem = toml_problem(file, &err, "rivet::load::invalid");
            if problem.at.is_none() {
                problem.at = Some(Loc::new(file, whole).labelled("in this table"));
            }
            problems.push(problem);
            None
        }
    }
}

/// Turn a toml/serde error into a problem, with suggestions for typos.
fn toml_problem(file: &Arc<SourceFile>, err: &toml::de::Error, code: &'static str) -> Problem {
    let message = err.message().trim().to_string();
    let mut problem = Problem::new(code, first_line(&message));
    if let Some(span) = err.span() {
        let span = if span.is_empty() {
            span.start..span.start + 1
        } else {
            span
        };
        problem = problem.at(&Loc::new(file, span), label_for(&message));
    }
    if let Some(field) = between(&message, "unknown field `", "`") {
        let expected = expected_names(&message);
        if field == "password"
            || (is_secret_key(&field) && expected.iter().any(|e| e == "password_env"))
        {
            if let Some(at) = problem.at.as_mut() {
                at.label = "a secret in a declaration file".to_string();
            }
            return Problem {
                code: "rivet::secret::literal_password",
                message: format!("a literal `{field}` is not allowed in declarations"),
                help: Some(
                    "secrets never live in git: set `password_env = \"VAR\"` (read from the \
                     environment) or `password_file = \"path\"` instead"
                        .to_string(),
                ),
                ..problem
            };
        }
        problem.message = format!("unknown key `{field}`");
        let near = diag::nearest(&field, expected.iter().map(String::as_str));
        problem.help = Some(match near {
            Some(near) => format!(
                "did you mean `{near}`? valid keys here: {}",
                diag::list(&expected)
            ),
            None => format!("valid keys here: {}", diag::list(&expected)),
        });
    } else if let Some(variant) = between(&message, "unknown variant `", "`") {
        let expected = expected_names(&message);
        let near = diag::nearest(&variant, expected.iter().map(String::as_str));
        problem.message = format!("`{variant}` is not a valid value here");
        problem.help = Some(match near {
            Some(near) => format!(
                "did you mean `{near}`? valid values: {}",
                diag::list(&expected)
            ),
            None => format!("valid values: {}", diag::list(&expected)),
        });
    } else if let Some(field) = between(&message, "missing field `", "`") {
        problem.message = format!("missing required key `{field}`");
        problem.help = Some(format!("add `{field} = …` to this table"));
    } else if message.starts_with("invalid type") {
        if let Some(expected) = message.split("expected ").nth(1) {
            problem.help = Some(format!("this key takes {}", plain_type(expected)));
        }
    } else if code == "rivet::load::syntax" {
        problem.help = Some("fix the TOML syntax; the file is ignored until it parses".to_string());
    }
    problem
}

/// serde's type names in words a TOML author uses.
fn plain_type(expected: &str) -> String {
    let expected = expected.trim_end_matches('.');
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".to_string(),
        "i8" | "i16" | "i32" | "i64" => "a whole number".to_string(),
        "a boolean" => "`true` or `false`".to_string(),
        other => other.to_string(),
    }
}

fn label_for(message: &str) -> &'static str {
    if message.starts_with("unknown field") {
        "unknown key"
    } else if message.starts_with("unknown variant") {
        "not a valid value"
    } else if message.starts_with("missing field") {
        "in this table"
    } else if message.starts_with("invalid type") {
        "wrong type"
    } else {
        "here"
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

fn between(s: &str, start: &str, end: &str) -> Option<String> {
    let rest = &s[s.find(start)? + start.len()..];
    Some(rest[..rest.find(end)?].to_string())
}

/// The backticked names after "expected" in a serde message.
fn expected_names(message: &str) -> Vec<String> {
    let Some(rest) = message.split("expected").nth(1) else {
        return Vec::new();
    };
    rest.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}
