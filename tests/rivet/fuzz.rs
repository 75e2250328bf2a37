//! A fuzzing harness over the loader. The example fleets, mutated (byte
//! flips and stray bytes, truncation, a multibyte character anywhere, deep
//! nesting, huge values and repeated tables, a secret canary), must load
//! without a panic, within a time bound, with every problem that has a
//! place in a file located (`file` and `line`), and without the canary in
//! any rendering: human, JSON, or the text kept of a file.
//!
//! `cargo test` runs a short budget of it; `cargo bench --bench fuzz` runs
//! a long one (this file is its harness too).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Problems about a file or directory as a whole, not a place in one.
const WITHOUT_PLACE: &[&str] = &[
    "rivet::load::unreadable",
    "rivet::load::empty",
    "rivet::load::no_directory",
    "rivet::load::not_a_file",
    "rivet::load::outside",
    "rivet::load::too_large",
];

/// How long to run and how much an input may take.
pub struct Budget {
    pub duration: Duration,
    pub seed: u64,
    /// The longest a load and every rendering of one input may take, and
    /// how much longer for each MiB of the input: a bound on time linear
    /// in the size, that anything superlinear soon breaks.
    pub per_input: Duration,
    pub per_mib: Duration,
    /// The largest huge value or repetition, in bytes.
    pub huge: usize,
    /// First put each character of [`SWEEP`] at every position of every
    /// example file (for at most half the time), then the random inputs.
    pub sweep: bool,
}

/// What a run did and found.
#[derive(Default)]
pub struct Report {
    pub inputs: u64,
    /// Inputs by the kind of their mutations.
    pub kinds: BTreeMap<&'static str, u64>,
    /// Inputs that loaded without a problem.
    pub valid: u64,
    pub problems: u64,
    pub slowest: Duration,
    /// The size of the slowest input, and of the largest.
    pub slowest_bytes: usize,
    pub largest_bytes: usize,
    pub findings: Vec<Finding>,
}

/// An input that broke a rule: what, and how it was made.
#[derive(Debug)]
pub struct Finding {
    pub rule: String,
    pub input: String,
    /// The mutated file's bytes, to reproduce it.
    pub file: String,
    pub bytes: Vec<u8>,
}

/// Multibyte characters of two, three and four bytes.
const SWEEP: &[char] = &['é', '€', '𝄞'];

/// Characters put into the text: multibyte ones, and those TOML gives a
/// meaning to.
const CHARS: &[char] = &[
    'é', '€', '𝄞', '\u{0}', '\u{feff}', '\u{202e}', '"', '\'', '[', '{', '\\', '\n', '#', '=', '.',
];

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Insert(Index, char),
    Deep(Nesting, usize, Index),
    Huge(HugeAt, usize, Index),
    Repeat(Index, usize, usize),
}

#[derive(Debug, Clone, Copy)]
enum Nesting {
    Header,
    ArrayHeader,
    DottedKey,
    Array,
    InlineTable,
}

#[derive(Debug, Clone, Copy)]
enum HugeAt {
    /// The content of an existing string value.
    StringValue,
    /// A new key of that length.
    Key,
    /// A new value of an existing key's kind: a `name`, a `rollout`, a trait.
    Name,
    /// A line of that length in a comment.
    Comment,
}

impl Mutation {
    fn kind(&self) -> &'static str {
        match self {
            Mutation::FlipBit(..) => "flip",
            Mutation::SetByte(..) => "byte",
            Mutation::Truncate(..) => "truncate",
            Mutation::Insert(..) => "char",
            Mutation::Deep(..) => "deep",
            Mutation::Huge(..) => "huge",
            Mutation::Repeat(..) => "repeat",
        }
    }

    fn apply(&self, text: &mut Vec<u8>) {
        let at = |i: &Index, text: &Vec<u8>| i.index(text.len() + 1);
        match self {
            Mutation::FlipBit(i, bit) if !text.is_empty() => {
                let at = i.index(text.len());
                text[at] ^= 1 << (bit % 8);
            }
            Mutation::SetByte(i, byte) if !text.is_empty() => {
                let at = i.index(text.len());
                text[at] = *byte;
            }
            Mutation::FlipBit(..) | Mutation::SetByte(..) => {}
            Mutation::Truncate(i) => text.truncate(at(i, text)),
            Mutation::Insert(i, c) => {
                let at = at(i, text);
                let mut buf = [0; 4];
                text.splice(at..at, c.encode_utf8(&mut buf).bytes());
            }
            Mutation::Deep(kind, depth, i) => {
                let parts = vec!["a"; *depth].join(".");
                let line = match kind {
                    Nesting::Header => format!("[{parts}]\n"),
                    Nesting::ArrayHeader => format!("[[{parts}]]\n"),
                    Nesting::DottedKey => format!("{parts} = 1\n"),
                    Nesting::Array => {
                        format!("x = {}1{}\n", "[".repeat(*depth), "]".repeat(*depth))
                    }
                    Nesting::InlineTable => {
                        format!("x = {}1{}\n", "{ a = ".repeat(*depth), " }".repeat(*depth))
                    }
                };
                let at = line_start(text, at(i, text));
                text.splice(at..at, line.into_bytes());
            }
            Mutation::Huge(kind, len, i) => {
                let long = "x".repeat(*len);
                match kind {
                    HugeAt::StringValue => {
                        // The string that starts at or after the position.
                        let from = at(i, text);
                        if let Some(open) =
                            text[from.min(text.len())..].iter().position(|&b| b == b'"')
                        {
                            let open = from + open + 1;
                            text.splice(open..open, long.into_bytes());
                        }
                    }
                    HugeAt::Key => {
                        let at = line_start(text, at(i, text));
                        text.splice(at..at, format!("{long} = 1\n").into_bytes());
                    }
                    HugeAt::Name => {
                        let at = line_start(text, at(i, text));
                        let key = ["name", "rollout", "driver", "traits"][len % 4];
                        let line = if key == "traits" {
                            format!("traits = [\"{long}\"]\n")
                        } else {
                            format!("{key} = \"{long}\"\n")
                        };
                        text.splice(at..at, line.into_bytes());
                    }
                    HugeAt::Comment => {
                        let at = line_start(text, at(i, text));
                        text.splice(at..at, format!("# {long}\n").into_bytes());
                    }
                }
            }
            Mutation::Repeat(i, lines, times) => {
                let start = line_start(text, at(i, text));
                let mut end = start;
                for _ in 0..*lines {
                    end = text[end..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(text.len(), |n| end + n + 1);
                }
                let repeated = text[start..end].repeat(*times);
                text.splice(end..end, repeated);
            }
        }
    }
}

/// The start of the line `at` is on.
fn line_start(text: &[u8], at: usize) -> usize {
    let at = at.min(text.len());
    text[..at]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |n| n + 1)
}

/// Lines that put a secret where the loader must blank it; `{}` is the canary.
const CANARIES: &[&str] = &[
    "password = \"{}\"",
    "\"pass\\u0077ord\" = \"{}\"",
    "passwd = '{}'",
    "pwd = \"\"\"\n{}\n\"\"\"",
    "bmc = { address = \"redfish://admin:{}@10.0.0.1/redfish/v1/Systems/1\" }",
    "bmc = { address = \"redfish://10.0.0.1/redfish/v1/Systems/1?token={}\" }",
    "bmc = { address = \"redfish://admin:{}\\u004010.0.0.1/\" }",
    "bmc = { address = \"ipmi://10.0.0.1\", password_env = \"{}\" }",
    "bmc = { address = \"ipmi://10.0.0.1\", username = \"admin\", password = \"{}\"",
    "token = {}",
    "secret = \"{}",
    "# the old password: {}",
    "client_secret = [\"{}\"]",
    "x = { private_key = \"{}\" }",
];

#[derive(Debug, Clone)]
struct Canary {
    line: usize,
    at: Index,
    secret: String,
}

impl Canary {
    fn text(&self) -> String {
        CANARIES[self.line % CANARIES.len()].replace("{}", &self.secret)
    }

    fn apply(&self, text: &mut Vec<u8>) {
        let at = line_start(text, self.at.index(text.len() + 1));
        let mut line = self.text().into_bytes();
        line.push(b'\n');
        if at > 0 && text[at - 1] != b'\n' {
            line.insert(0, b'\n');
        }
        text.splice(at..at, line);
    }
}

/// One input: a file of an example fleet, mutated.
#[derive(Debug, Clone)]
struct Input {
    fleet: Index,
    file: Index,
    mutations: Vec<Mutation>,
    canary: Option<Canary>,
}

fn mutation(huge: usize) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), proptest::sample::select(CHARS)).prop_map(|(i, c)| Mutation::Insert(i, c)),
        1 => (
            prop_oneof![
                Just(Nesting::Header),
                Just(Nesting::ArrayHeader),
                Just(Nesting::DottedKey),
                Just(Nesting::Array),
                Just(Nesting::InlineTable),
            ],
            prop_oneof![1usize..100, 60usize..120, 100usize..20_000],
            any::<Index>()
        )
            .prop_map(|(k, d, i)| Mutation::Deep(k, d, i)),
        1 => (
            prop_oneof![
                Just(HugeAt::StringValue),
                Just(HugeAt::Key),
                Just(HugeAt::Name),
                Just(HugeAt::Comment),
            ],
            prop_oneof![1usize..200, 1000usize..=huge],
            any::<Index>()
        )
            .prop_map(|(k, n, i)| Mutation::Huge(k, n, i)),
        1 => (any::<Index>(), 1usize..12, 1usize..=(huge / 4096).max(2))
            .prop_map(|(i, l, t)| Mutation::Repeat(i, l, t)),
    ]
}

fn input(huge: usize) -> impl Strategy<Value = Input> {
    (
        any::<Index>(),
        any::<Index>(),
        proptest::collection::vec(mutation(huge), 0..4),
        proptest::option::weighted(
            0.5,
            (any::<usize>(), any::<Index>(), any::<u64>()).prop_map(|(line, at, n)| Canary {
                line,
                at,
                // Not a variable's name, so a `password_env` holding it is
                // the password itself; digits only when it must be a number.
                secret: format!("hunter2-canary-{n:016x}!"),
            }),
        ),
    )
        .prop_map(|(fleet, file, mutations, canary)| Input {
            fleet,
            file,
            mutations,
            canary,
        })
}

/// The example fleets, copied into a temporary directory (with the plugins
/// their drivers name), and their declaration files.
struct Examples {
    dir: tempfile::TempDir,
    fleets: Vec<Example>,
}

/// One example fleet: its directory, and each declaration file with its
/// bytes as written.
struct Example {
    root: PathBuf,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Examples {
    fn new() -> Self {
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let dir = tempfile::tempdir().expect("tempdir");
        copy(&from, dir.path());
        let mut fleets = Vec::new();
        for name in ["quickstart", "redfish", "ipmi"] {
            let root = dir.path().join(name);
            let mut files = Vec::new();
            toml_files(&root, &mut files);
            files.sort();
            let files = files
                .into_iter()
                .map(|path| {
                    let bytes = std::fs::read(&path).unwrap();
                    (path, bytes)
                })
                .collect();
            fleets.push(Example { root, files });
        }
        Self { dir, fleets }
    }
}

fn copy(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() == ".rivet" {
                continue;
            }
            std::fs::create_dir_all(&target).unwrap();
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// Load one mutated fleet and check every rule; the broken ones.
fn check(
    root: &Path,
    bytes: &[u8],
    canary: Option<&str>,
    budget: &Budget,
) -> (Vec<String>, usize, Duration) {
    let mib = bytes.len() as f64 / (1024.0 * 1024.0);
    let per_input = budget.per_input + budget.per_mib.mul_f64(mib);
    let mut broken = Vec::new();
    let start = Instant::now();
    let loaded = match catch_unwind(AssertUnwindSafe(|| rivet::model::fleet::load(root))) {
        Ok(loaded) => loaded,
        Err(_) => return (vec!["the loader panicked".to_string()], 0, start.elapsed()),
    };
    let rendered = catch_unwind(AssertUnwindSafe(|| {
        let human: Vec<String> = loaded.problems.iter().map(|p| p.render_plain()).collect();
        let json = serde_json::to_string(&rivet::cli::validate_json(&loaded)).expect("json");
        (human, json)
    }));
    let took = start.elapsed();
    let Ok((human, json)) = rendered else {
        return (
            vec!["rendering panicked".to_string()],
            loaded.problems.len(),
            took,
        );
    };
    if took > per_input {
        broken.push(format!("took {took:?}, over {per_input:?}"));
    }
    for problem in &loaded.problems {
        let record = problem.record();
        if !WITHOUT_PLACE.contains(&problem.code)
            && (record.file.is_none() || record.line.is_none())
        {
            broken.push(format!(
                "`{}` ({}) has no place",
                record.message, record.code
            ));
        }
        if record.help.is_none() {
            broken.push(format!(
                "`{}` ({}) has no help",
                record.message, record.code
            ));
        }
    }
    // The canary counts only while the input still holds it as written.
    if let Some(canary) = canary.filter(|c| contains(bytes, c.as_bytes())) {
        let core = &canary[canary.len() - 17..canary.len() - 1];
        for (what, text) in human
            .iter()
            .map(|h| ("the human rendering", h.as_str()))
            .chain([("the JSON rendering", json.as_str())])
            .chain(
                loaded
                    .fleet
                    .files
                    .iter()
                    .map(|f| ("the text kept of a file", &*f.text)),
            )
        {
            if text.contains(core) {
                broken.push(format!("the canary is in {what}"));
            }
        }
    }
    (broken, loaded.problems.len(), took)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    String::from_utf8_lossy(haystack).contains(&*String::from_utf8_lossy(needle))
}

impl Report {
    fn record(
        &mut self,
        kind: &'static str,
        description: impl FnOnce() -> String,
        file: &Path,
        bytes: &[u8],
        (broken, problems, took): (Vec<String>, usize, Duration),
    ) {
        self.inputs += 1;
        *self.kinds.entry(kind).or_default() += 1;
        self.problems += problems as u64;
        if problems == 0 {
            self.valid += 1;
        }
        if took > self.slowest {
            self.slowest = took;
            self.slowest_bytes = bytes.len();
        }
        self.largest_bytes = self.largest_bytes.max(bytes.len());
        if !broken.is_empty() {
            let input = description();
            for rule in broken {
                self.findings.push(Finding {
                    rule,
                    input: input.clone(),
                    file: file.display().to_string(),
                    bytes: bytes.to_vec(),
                });
            }
        }
    }
}

/// Run inputs until the budget's time is spent.
pub fn run(budget: &Budget) -> Report {
    let examples = Examples::new();
    let mut report = Report::default();
    let deadline = Instant::now() + budget.duration;
    let try_one = |report: &mut Report,
                   root: &Path,
                   path: &Path,
                   original: &[u8],
                   bytes: Vec<u8>,
                   canary: Option<&str>,
                   kind: &'static str,
                   description: &dyn Fn() -> String| {
        std::fs::write(path, &bytes).unwrap();
        let result = check(root, &bytes, canary, budget);
        report.record(kind, description, path, &bytes, result);
        std::fs::write(path, original).unwrap();
    };

    if budget.sweep {
        let sweep_end = Instant::now() + budget.duration / 2;
        'sweep: for Example { root, files } in &examples.fleets {
            for (path, original) in files {
                for &c in SWEEP {
                    for at in 0..=original.len() {
                        if Instant::now() > sweep_end {
                            break 'sweep;
                        }
                        let mut bytes = original.clone();
                        let mut buf = [0; 4];
                        bytes.splice(at..at, c.encode_utf8(&mut buf).bytes());
                        try_one(
                            &mut report,
                            root,
                            path,
                            original,
                            bytes,
                            None,
                            "sweep",
                            &|| format!("{c:?} at byte {at}"),
                        );
                    }
                }
            }
        }
    }

    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&budget.seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
    );
    let strategy = input(budget.huge);
    while Instant::now() < deadline {
        let input = strategy.new_tree(&mut runner).expect("an input").current();
        let Example { root, files } = &examples.fleets[input.fleet.index(examples.fleets.len())];
        let (path, original) = &files[input.file.index(files.len())];
        let mut bytes = original.clone();
        for mutation in &input.mutations {
            mutation.apply(&mut bytes);
        }
        // Mutations on mutations can grow past any size worth a try.
        bytes.truncate(original.len() + 2 * budget.huge);
        if let Some(canary) = &input.canary {
            canary.apply(&mut bytes);
        }
        let kind = match (&input.canary, input.mutations.first()) {
            (Some(_), _) => "canary",
            (None, Some(m)) => m.kind(),
            (None, None) => "none",
        };
        let canary = input.canary.as_ref().map(|c| c.secret.clone());
        try_one(
            &mut report,
            root,
            path,
            original,
            bytes,
            canary.as_deref(),
            kind,
            &|| format!("{input:?}"),
        );
    }
    drop(examples.dir);
    report
}

impl Report {
    /// The counts, and each finding with its input.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let mut out = format!(
            "{} inputs ({}), {} valid, {} problems, slowest {:?} ({} bytes), largest {} bytes, {} findings",
            self.inputs,
            kinds.join(", "),
            self.valid,
            self.problems,
            self.slowest,
            self.slowest_bytes,
            self.largest_bytes,
            self.findings.len()
        );
        for finding in self.findings.iter().take(20) {
            let shown = String::from_utf8_lossy(&finding.bytes);
            out.push_str(&format!(
                "\n- {} in {}\n  input: {}\n  text ({} bytes): {:?}",
                finding.rule,
                finding.file,
                rivet::diag::shorten(&finding.input, 400),
                finding.bytes.len(),
                rivet::diag::shorten(&shown, 2000),
            ));
        }
        out
    }
}

#[test]
fn the_loader_survives_mutated_example_fleets() {
    let seed = std::env::var("RIVET_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f1ee);
    let report = run(&Budget {
        duration: Duration::from_secs(10),
        seed,
        per_input: Duration::from_secs(3),
        per_mib: Duration::from_secs(10),
        huge: 256 * 1024,
        sweep: false,
    });
    assert!(report.inputs >= 100, "only {} inputs ran", report.inputs);
    assert!(report.kinds.len() >= 6, "{}", report.summary());
    assert!(report.findings.is_empty(), "{}", report.summary());
}
