//! Problems found in declarations, with the place they were found.
//!
//! Every error a user can fix by editing a file is a [`Problem`]: a stable
//! code, a message, a `help` that says how to fix it, and the file spans it is
//! about. Problems render as miette diagnostics (with source snippets) for
//! people and as flat JSON records for CI.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde::Serialize;

/// One declaration file as read from disk.
#[derive(Debug)]
pub struct SourceFile {
    /// Path relative to the fleet directory, with `/` separators, as shown to users.
    pub name: String,
    /// Where the file lives.
    pub path: PathBuf,
    /// The text; literal secrets are blanked out with `*` (same byte length, so
    /// spans stay valid) before anything can display it.
    pub text: Arc<str>,
    /// Byte offsets where lines start, computed on first use.
    line_starts: std::sync::OnceLock<Vec<usize>>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, path: PathBuf, text: impl Into<Arc<str>>) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            path,
            text: text.into(),
            line_starts: std::sync::OnceLock::new(),
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let starts = self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let line = starts.partition_point(|&start| start <= offset);
        let line_start = starts[line - 1];
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A place in a declaration file.
#[derive(Debug, Clone)]
pub struct Loc {
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
}

impl Loc {
    pub fn new(file: &Arc<SourceFile>, span: Range<usize>) -> Self {
        Self {
            file: Arc::clone(file),
            span,
        }
    }

    /// `file:line:column`, as editors and CI annotations understand it.
    pub fn position(&self) -> String {
        let (line, column) = self.file.line_col(self.span.start);
        format!("{}:{line}:{column}", self.file.name)
    }

    pub fn labelled(&self, label: impl Into<String>) -> Spot {
        Spot {
            loc: self.clone(),
            label: label.into(),
        }
    }
}

/// A labelled place: what a diagnostic underlines.
#[derive(Debug, Clone)]
pub struct Spot {
    pub loc: Loc,
    pub label: String,
}

/// One thing wrong with the declarations.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Stable identifier, e.g. `rivet::composition::not_enabled`.
    pub code: &'static str,
    pub message: String,
    pub help: Option<String>,
    /// The main place; `None` only when the problem has no place in a file
    /// (an empty directory, a missing directory).
    pub at: Option<Spot>,
    /// Further places the problem involves (the other duplicate, the global
    /// default that broke this node).
    pub also: Vec<Spot>,
    /// The file a problem without a place is about as a whole (it cannot be
    /// read, it is too large), as `SourceFile::name` has it.
    pub file: Option<String>,
}

impl Problem {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            help: None,
            at: None,
            also: Vec::new(),
            file: None,
        }
    }

    /// About this file as a whole: the file that could not be read.
    pub fn in_file(mut self, name: impl Into<String>) -> Self {
        self.file = Some(name.into());
        self
    }

    pub fn at(mut self, loc: &Loc, label: impl Into<String>) -> Self {
        self.at = Some(loc.labelled(label));
        self
    }

    pub fn also(mut self, loc: &Loc, label: impl Into<String>) -> Self {
        self.also.push(loc.labelled(label));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    fn sort_key(&self) -> (String, usize, &'static str, String) {
        match &self.at {
            Some(spot) => (
                spot.loc.file.name.clone(),
                spot.loc.span.start,
                self.code,
                self.message.clone(),
            ),
            None => (
                self.file.clone().unwrap_or_default(),
                0,
                self.code,
                self.message.clone(),
            ),
        }
    }

    /// The flat record `validate --format json` prints.
    pub fn record(&self) -> ProblemRecord {
        let (file, line, column) = match &self.at {
            Some(spot) => {
                let (line, column) = spot.loc.file.line_col(spot.loc.span.start);
                (Some(spot.loc.file.name.clone()), Some(line), Some(column))
            }
            None => (self.file.clone(), None, None),
        };
        ProblemRecord {
            code: self.code,
            message: self.message.clone(),
            file,
            line,
            column,
            help: self.help.clone(),
            related: self
                .also
                .iter()
                .map(|spot| {
                    let (line, column) = spot.loc.file.line_col(spot.loc.span.start);
                    RelatedRecord {
                        file: spot.loc.file.name.clone(),
                        line,
                        column,
                        label: spot.label.clone(),
                    }
                })
                .collect(),
        }
    }

    /// Full miette rendering without colour (stable for snapshots).
    pub fn render_plain(&self) -> String {
        self.render(GraphicalTheme::unicode_nocolor())
    }

    pub fn render(&self, theme: GraphicalTheme) -> String {
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        let mut out = String::new();
        let view = ProblemView::new(self);
        if handler.render_report(&mut out, &view).is_err() {
            out = format!("error[{}]: {}", self.code, self.message);
        }
        out
    }
}

/// Sort problems by file and position so output is stable.
pub fn sort(problems: &mut [Problem]) {
    problems.sort_by_cached_key(|p| p.sort_key());
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProblemRecord {
    pub code: &'static str,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub help: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<RelatedRecord>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RelatedRecord {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub label: String,
}

/// A [`Problem`] as miette sees it: labels in the primary file, and one
/// related diagnostic per place in another file.
#[derive(Debug)]
struct ProblemView<'a> {
    problem: &'a Problem,
    source: Option<NamedSource<Arc<str>>>,
    related: Vec<RelatedView>,
}

impl<'a> ProblemView<'a> {
    fn new(problem: &'a Problem) -> Self {
        let source = problem.at.as_ref().map(|spot| named(&spot.loc.file));
        let related = problem
            .also
            .iter()
            .filter(|spot| {
                problem
                    .at
                    .as_ref()
                    .is_none_or(|at| !Arc::ptr_eq(&at.loc.file, &spot.loc.file))
            })
            .map(|spot| RelatedView {
                source: named(&spot.loc.file),
                spot: spot.clone(),
            })
            .collect();
        Self {
            problem,
            source,
            related,
        }
    }
}

fn named(file: &Arc<SourceFile>) -> NamedSource<Arc<str>> {
    NamedSource::new(file.name.clone(), Arc::clone(&file.text)).with_language("toml")
}

impl fmt::Display for ProblemView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem.message)
    }
}

impl std::error::Error for ProblemView<'_> {}

impl Diagnostic for ProblemView<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.problem.code))
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.problem
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let at = self.problem.at.as_ref()?;
        let mut labels = vec![LabeledSpan::new_primary_with_span(
            Some(at.label.clone()),
            span_of(&at.loc),
        )];
        for spot in &self.problem.also {
            if Arc::ptr_eq(&spot.loc.file, &at.loc.file) {
                labels.push(LabeledSpan::new_with_span(
                    Some(spot.label.clone()),
                    span_of(&spot.loc),
                ));
            }
        }
        Some(Box::new(labels.into_iter()))
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn Diagnostic> + 'b>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(self.related.iter().map(|r| r as &dyn Diagnostic)))
    }
}

fn span_of(loc: &Loc) -> miette::SourceSpan {
    (loc.span.start, loc.span.end.saturating_sub(loc.span.start)).into()
}

#[derive(Debug)]
struct RelatedView {
    source: NamedSource<Arc<str>>,
    spot: Spot,
}

impl fmt::Display for RelatedView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "see {}", self.spot.loc.position())
    }
}

impl std::error::Error for RelatedView {}

impl Diagnostic for RelatedView {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.spot.label.clone()),
            span_of(&self.spot.loc),
        ))))
    }
}

/// The closest of `candidates` to `wanted`, when it is close enough to be a
/// plausible typo.
pub fn nearest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(wanted, c), c))
        .filter(|(d, c)| *d <= 3.max(c.len() / 3) && *d < c.len().max(wanted.len()))
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// `a, b, c` with each name in backticks; `(none)` when empty.
pub fn list(names: &[impl AsRef<str>]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    names
        .iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let file = SourceFile::new("a.toml", PathBuf::from("a.toml"), "ab\nçd = 1\n");
        assert_eq!(file.line_col(0), (1, 1));
        assert_eq!(file.line_col(3), (2, 1));
        // `d` sits after a two-byte character: byte 5, column 2.
        assert_eq!(file.line_col(5), (2, 2));
    }

    #[test]
    fn nearest_suggests_typos_not_strangers() {
        let keys = ["password_env", "password_file", "username"];
        assert_eq!(nearest("pasword_env", keys), Some("password_env"));
        assert_eq!(nearest("usernme", keys), Some("username"));
        assert_eq!(nearest("colour", keys), None);
    }
}
