//! Reading a fleet directory: every file, with spans, every syntax and
//! shape error collected (not just the first).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::lex;
use super::raw::{HardwareTypeDecl, InterfaceDecl, NodeDecl, RivetFile, TemplateDecl};
use super::secret::{is_secret_key, redact_parsed, redact_unparsable};
use crate::diag::{self, Loc, Problem, SourceFile};

/// The largest declaration file read: 16 MiB, far beyond any fleet's file
/// and far below what would exhaust memory or time.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

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
    /// The fleet directory, by its canonical path: no file is read from
    /// outside it.
    Dir(PathBuf),
    /// A copy of the files' texts by relative path (the declarations last
    /// converged, kept in the state file), read as if they were in the
    /// fleet directory.
    Stored(&'a std::collections::BTreeMap<String, String>),
}

/// Why a declaration file was not read.
enum Unreadable {
    Io(std::io::Error),
    /// A link to a file outside the fleet directory.
    Outside(PathBuf),
    /// A FIFO, a device, a socket or a directory: reading one could block
    /// forever or never end.
    NotRegular(&'static str),
    /// Over [`MAX_FILE_BYTES`]; the size found.
    TooLarge(u64),
}

impl Files<'_> {
    fn exists(&self, root: &Path, path: &Path) -> bool {
        match self {
            // A dangling link exists, to be reported as unreadable.
            Files::Dir(_) => path.symlink_metadata().is_ok(),
            Files::Stored(files) => files.contains_key(&relative(root, path)),
        }
    }

    fn read(&self, root: &Path, path: &Path) -> Result<Vec<u8>, Unreadable> {
        match self {
            Files::Dir(inside) => read_regular(inside, path),
            Files::Stored(files) => files
                .get(&relative(root, path))
                .map(|text| text.clone().into_bytes())
                .ok_or_else(|| Unreadable::Io(std::io::ErrorKind::NotFound.into())),
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
            Files::Dir(_) => toml_files(dir, depth, fleet, root),
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

/// Read a regular file of at most [`MAX_FILE_BYTES`] that is, once links
/// are resolved, inside `inside`. It is opened without blocking and checked
/// on the open handle, so a FIFO put in its place after the check cannot
/// hang the read either.
fn read_regular(inside: &Path, path: &Path) -> Result<Vec<u8>, Unreadable> {
    let target = std::fs::canonicalize(path).map_err(Unreadable::Io)?;
    if !target.starts_with(inside) {
        return Err(Unreadable::Outside(target));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW);
    }
    let file = options.open(&target).map_err(Unreadable::Io)?;
    let meta = file.metadata().map_err(Unreadable::Io)?;
    if !meta.is_file() {
        return Err(Unreadable::NotRegular(kind_of(&meta.file_type())));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Unreadable::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // A file that grows while it is read stops at the limit too.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(Unreadable::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Unreadable::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

fn kind_of(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Read `rivet.toml`, `drivers/*.toml` and `nodes/**/*.toml` under `root`.
pub fn load_dir(root: &Path) -> RawFleet {
    let inside = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    load_files(root, &Files::Dir(inside))
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
    if matches!(files, Files::Dir(_)) && !root.is_dir() {
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
    if files.exists(root, &rivet_path) {
        each_parsed(
            files,
            root,
            &rivet_path,
            &mut fleet,
            |fleet, file, table| {
                let parsed = deserialize::<RivetFile>(file, 0..0, table, &mut fleet.problems);
                fleet.rivet = parsed.map(|r| (Arc::clone(file), r));
            },
        );
    }

    for path in files.toml_files(&root.join("drivers"), 1, &mut fleet, root) {
        each_parsed(files, root, &path, &mut fleet, driver_file);
    }

    for path in files.toml_files(&root.join("nodes"), usize::MAX, &mut fleet, root) {
        each_parsed(files, root, &path, &mut fleet, node_file);
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

/// The tables of a driver file.
fn driver_file(fleet: &mut RawFleet, file: &Arc<SourceFile>, table: Spanned<DeTable<'_>>) {
    for (key, value) in table.into_inner() {
        let items = match key.get_ref().as_ref() {
            "hardware_type" | "interface" | "deploy_template" => {
                match array_of_tables(file, key.get_ref(), value, &mut fleet.problems) {
                    Some(items) => items,
                    None => continue,
                }
            }
            other => {
                fleet.problems.push(unknown_top_key(
                    file,
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
                    if let Some(d) = deserialize(file, item.span(), item, &mut fleet.problems) {
                        fleet.hardware_types.push((Arc::clone(file), d));
                    }
                }
                "interface" => {
                    if let Some(d) = deserialize(file, item.span(), item, &mut fleet.problems) {
                        fleet.interfaces.push((Arc::clone(file), d));
                    }
                }
                _ => {
                    if let Some(d) = deserialize(file, item.span(), item, &mut fleet.problems) {
                        fleet.templates.push((Arc::clone(file), d));
                    }
                }
            }
        }
    }
}

/// The `[[node]]` tables of a node file.
fn node_file(fleet: &mut RawFleet, file: &Arc<SourceFile>, table: Spanned<DeTable<'_>>) {
    for (key, value) in table.into_inner() {
        if key.get_ref() != "node" {
            fleet.problems.push(unknown_top_key(
                file,
                key.span(),
                key.get_ref(),
                &["node"],
                "a node file holds [[node]] tables and nothing else",
            ));
            continue;
        }
        let Some(items) = array_of_tables(file, "node", value, &mut fleet.problems) else {
            continue;
        };
        for item in items {
            if let Some(node) =
                deserialize::<NodeDecl>(file, item.span(), item, &mut fleet.problems)
            {
                fleet.nodes.push((Arc::clone(file), node));
            }
        }
    }
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
                    .help("check the path exists and is readable by this user")
                    .in_file(&shown),
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

/// Read one file, check its syntax, and hand its table to `each` with the
/// file as it is shown: secrets blanked, which is also the text parsed, so
/// no secret reaches a value or a message. A file that cannot be read or
/// does not parse is a problem, and `each` is not called.
fn each_parsed(
    files: &Files,
    root: &Path,
    path: &Path,
    fleet: &mut RawFleet,
    each: impl FnOnce(&mut RawFleet, &Arc<SourceFile>, Spanned<DeTable<'_>>),
) {
    let name = relative(root, path);
    let bytes = match files.read(root, path) {
        Ok(bytes) => bytes,
        Err(why) => {
            fleet.problems.push(unreadable(&name, why));
            return;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let valid_up_to = err.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(err.as_bytes());
            let file = SourceFile::new(name.clone(), path.to_path_buf(), redact_unparsable(&lossy));
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
            return;
        }
    };
    let raw = SourceFile::new(name, path.to_path_buf(), text);
    let shown = match DeTable::parse(&raw.text) {
        Err(err) => {
            let file = SourceFile::new(
                raw.name.clone(),
                path.to_path_buf(),
                redact_unparsable(&raw.text),
            );
            fleet.problems.push(syntax_problem(&file, &err, &raw.text));
            fleet.files.push(file);
            return;
        }
        Ok(table) => match redact_parsed(&raw.text, table.get_ref()) {
            // Most files hold no secret: their one parse is this one.
            None => {
                fleet.files.push(Arc::clone(&raw));
                each(fleet, &raw, table);
                return;
            }
            Some(shown) => shown,
        },
    };
    let file = SourceFile::new(raw.name.clone(), path.to_path_buf(), shown);
    drop(raw);
    fleet.files.push(Arc::clone(&file));
    match DeTable::parse(&file.text) {
        Ok(table) => each(fleet, &file, table),
        Err(err) => {
            let text = Arc::clone(&file.text);
            fleet.problems.push(syntax_problem(&file, &err, &text));
        }
    }
}

/// The problem of a file that was not read, naming it in its `file`.
fn unreadable(name: &str, why: Unreadable) -> Problem {
    let problem = match why {
        Unreadable::Io(err) => Problem::new(
            "rivet::load::unreadable",
            format!("cannot read `{name}`: {err}"),
        )
        .help("check the file exists and is readable by this user"),
        Unreadable::Outside(target) => Problem::new(
            "rivet::load::outside",
            format!(
                "`{name}` links to `{}`, outside the fleet directory",
                target.display()
            ),
        )
        .help("declarations are read from the fleet directory only: copy the file in, or link to a file inside it"),
        Unreadable::NotRegular(kind) => Problem::new(
            "rivet::load::not_a_file",
            format!("`{name}` is {kind}, not a regular file"),
        )
        .help("declarations are read from regular files only: remove it, or rename it so it does not end in `.toml`"),
        Unreadable::TooLarge(bytes) => Problem::new(
            "rivet::load::too_large",
            format!(
                "`{name}` is {:.1} MiB, over the limit of {} MiB a declaration file",
                bytes as f64 / (1024.0 * 1024.0),
                MAX_FILE_BYTES / (1024 * 1024)
            ),
        )
        .help("split its declarations into several files under nodes/ (any depth)"),
    };
    problem.in_file(name)
}

/// A TOML syntax error; the one the parser reports without a place (a key
/// with too many dotted parts) gets the place of that key, found in the
/// text as written (`raw`: blanking may have hidden the key).
fn syntax_problem(file: &Arc<SourceFile>, err: &toml::de::Error, raw: &str) -> Problem {
    let problem = toml_problem(file, err, "rivet::load::syntax");
    if problem.at.is_none()
        && err.message().trim() == "recursion limit"
        && let Some(at) = lex::deepest_key(raw)
    {
        return Problem::new(
            "rivet::load::syntax",
            "this key is nested too deep to read (recursion limit)",
        )
        .at(&Loc::new(file, at..at + 1), "too many dotted parts")
        .help("a key or table header may have at most 80 dotted parts; use fewer");
    }
    problem
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
                ..problem
            }
            .with_message(format!(
                "a literal `{field}` is not allowed in declarations"
            ))
            .help(
                if expected.iter().any(|e| e == "password_file")
                    || !expected.iter().any(|e| e == "password_env")
                {
                    "secrets never live in git: set `password_env = \"VAR\"` (read from the \
                 environment) or `password_file = \"path\"` instead"
                } else {
                    // A table without `password_file` ([cluster]).
                    "secrets never live in git: set `password_env = \"VAR\"` (read from the \
                 environment) instead"
                },
            );
        }
        problem = problem.with_message(format!("unknown key `{field}`"));
        let near = diag::nearest(&field, expected.iter().map(String::as_str));
        problem = problem.help(match near {
            Some(near) => format!(
                "did you mean `{near}`? valid keys here: {}",
                diag::list(&expected)
            ),
            None => format!("valid keys here: {}", diag::list(&expected)),
        });
    } else if let Some(variant) = between(&message, "unknown variant `", "`") {
        let expected = expected_names(&message);
        let near = diag::nearest(&variant, expected.iter().map(String::as_str));
        problem = problem.with_message(format!("`{variant}` is not a valid value here"));
        problem = problem.help(match near {
            Some(near) => format!(
                "did you mean `{near}`? valid values: {}",
                diag::list(&expected)
            ),
            None => format!("valid values: {}", diag::list(&expected)),
        });
    } else if let Some(field) = between(&message, "missing field `", "`") {
        problem = problem.with_message(format!("missing required key `{field}`"));
        problem = problem.help(format!("add `{field} = …` to this table"));
    } else if message.starts_with("invalid type") {
        if let Some(expected) = message.split("expected ").nth(1) {
            problem = problem.help(format!("this key takes {}", plain_type(expected)));
        }
    } else if code == "rivet::load::syntax" {
        problem = problem.help("fix the TOML syntax; the file is ignored until it parses");
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
