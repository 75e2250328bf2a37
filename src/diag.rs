//! Problems found in declarations, with the place they were found.
//!
//! Every error a user can fix by editing a file is a [`Problem`]: a stable
//! code, a message, a `help` that says how to fix it, and the file spans it is
//! about. Problems render as miette diagnostics (with source snippets) for
//! people and as flat JSON records for CI.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteError,
    MietteSpanContents, SourceCode, SourceSpan, SpanContents,
};
use serde::Serialize;

/// The most characters of one quoted value a message shows; a longer one
/// is cut to a prefix and `…`. A value can be megabytes long, and a message
/// that repeats it for every node it breaks multiplies that.
pub const QUOTE_MAX: usize = 60;

/// The most characters of a whole message or help, for values that are
/// not quoted.
const MESSAGE_MAX: usize = 2000;

/// The most names a list in a message shows.
const LIST_MAX: usize = 50;

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

    /// Byte offsets where lines start.
    fn line_starts(&self) -> &[usize] {
        self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let starts = self.line_starts();
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
            message: bounded_owned(message.into()),
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

    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = bounded_owned(message.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(bounded_owned(help.into()));
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
        // Bounded again: a message may have been set after `new`.
        ProblemRecord {
            code: self.code,
            message: bounded(&self.message).into_owned(),
            file,
            line,
            column,
            help: self.help.as_deref().map(|h| bounded(h).into_owned()),
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
    source: Option<Snippet>,
    related: Vec<RelatedView>,
}

impl<'a> ProblemView<'a> {
    fn new(problem: &'a Problem) -> Self {
        let shown = problem.at.as_ref().filter(|at| showable(&at.loc));
        let mut related: Vec<RelatedView> = problem
            .at
            .iter()
            .filter(|_| shown.is_none())
            .map(RelatedView::new)
            .collect();
        related.extend(
            problem
                .also
                .iter()
                .filter(|spot| !shown.is_some_and(|at| in_snippet(at, spot)))
                .map(RelatedView::new),
        );
        Self {
            problem,
            source: shown.map(|at| Snippet(Arc::clone(&at.loc.file))),
            related,
        }
    }
}

/// Whether `spot` is labelled in the snippet of `at`.
fn in_snippet(at: &Spot, spot: &Spot) -> bool {
    Arc::ptr_eq(&at.loc.file, &spot.loc.file) && showable(&spot.loc)
}

/// The most bytes a snippet shows, and the most a line of it may have.
const SNIPPET_MAX: usize = 16 * 1024;
const SNIPPET_LINE_MAX: usize = 2000;

/// Whether the lines a snippet of `loc` shows (its own and one either side)
/// are few and short enough to print. A snippet costs the lines it shows;
/// one of a line of megabytes, printed again for every problem on that
/// line, would be all of the output. A place not shown is still named.
fn showable(loc: &Loc) -> bool {
    let file = &loc.file;
    let starts = file.line_starts();
    let len = file.text.len();
    let line_of = |offset: usize| starts.partition_point(|&s| s <= offset.min(len)) - 1;
    let first = line_of(loc.span.start).saturating_sub(1);
    let last = (line_of(loc.span.end) + 1).min(starts.len() - 1);
    let line_end = |line: usize| starts.get(line + 1).copied().unwrap_or(len);
    line_end(last) - starts[first] <= SNIPPET_MAX
        && (first..=last).all(|line| line_end(line) - starts[line] <= SNIPPET_LINE_MAX)
}

/// A file as miette reads it for a snippet. The lines around a span are
/// found through the file's line index, so a snippet costs the lines it
/// shows: miette's own reading of a `str` scans from the file's start, and
/// printing many problems of one large file took time quadratic in them.
#[derive(Debug)]
struct Snippet(Arc<SourceFile>);

impl SourceCode for Snippet {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let file = &self.0;
        let starts = file.line_starts();
        if span.offset() > file.text.len() {
            return Err(MietteError::OutOfBounds);
        }
        // A span past the end of the text (a label at its very end) is cut
        // at the end, where miette would fail or panic.
        let span = &SourceSpan::new(
            span.offset().into(),
            span.len().min(file.text.len() - span.offset()),
        );
        let offset = span.offset();
        let line = starts.partition_point(|&start| start <= offset) - 1;
        // miette reads from a line before the first it shows as it would
        // from the file's start (one more than it shows, so that an empty
        // span reads the same), and its lines are numbered from there.
        let first = line.saturating_sub(context_lines_before + 1);
        let base = starts[first];
        let local = SourceSpan::new((span.offset() - base).into(), span.len());
        let window: &'a [u8] = &file.text.as_bytes()[base..];
        let inner = window.read_span(&local, context_lines_before, context_lines_after)?;
        let read = *inner.span();
        Ok(Box::new(
            MietteSpanContents::new_named(
                file.name.clone(),
                inner.data(),
                SourceSpan::new((read.offset() + base).into(), read.len()),
                inner.line() + first,
                inner.column(),
                inner.line_count() + first,
            )
            .with_language("toml"),
        ))
    }
}

impl fmt::Display for ProblemView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bounded(&self.problem.message))
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
            .as_deref()
            .map(|h| Box::new(bounded(h)) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        let at = self.problem.at.as_ref()?;
        let mut labels = vec![LabeledSpan::new_primary_with_span(
            Some(at.label.clone()),
            span_of(&at.loc),
        )];
        for spot in &self.problem.also {
            if in_snippet(at, spot) {
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

/// A place shown apart from the main snippet: in another file, or with
/// lines too long to show (then only named).
#[derive(Debug)]
struct RelatedView {
    source: Option<Snippet>,
    spot: Spot,
}

impl RelatedView {
    fn new(spot: &Spot) -> Self {
        Self {
            source: showable(&spot.loc).then(|| Snippet(Arc::clone(&spot.loc.file))),
            spot: spot.clone(),
        }
    }
}

impl fmt::Display for RelatedView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Some(_) => write!(f, "see {}", self.spot.loc.position()),
            None => write!(
                f,
                "{}: {} (the lines are too long to show)",
                self.spot.loc.position(),
                shorten(&self.spot.label, QUOTE_MAX)
            ),
        }
    }
}

impl std::error::Error for RelatedView {}

impl Diagnostic for RelatedView {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some(self.spot.label.clone()),
            span_of(&self.spot.loc),
        ))))
    }
}

/// The closest of `candidates` to `wanted`, when it is close enough to be a
/// plausible typo.
pub fn nearest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted_chars = wanted.chars().count();
    candidates
        .into_iter()
        .filter_map(|c| {
            let most = 3.max(c.len() / 3);
            // The distance is at least the difference in length: a long
            // value is no typo of a short name, and is not compared.
            if wanted_chars.abs_diff(c.chars().count()) > most {
                return None;
            }
            let d = strsim::damerau_levenshtein(wanted, c);
            (d <= most && d < c.len().max(wanted.len())).then_some((d, c))
        })
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// `s`, or its first `max` characters and `…` when it is longer.
pub fn shorten(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}…", &s[..cut])),
    }
}

/// A message with every backticked value cut to [`QUOTE_MAX`] characters
/// and the whole to [`MESSAGE_MAX`].
fn bounded(text: &str) -> Cow<'_, str> {
    let long_quote = text
        .split('`')
        .skip(1)
        .step_by(2)
        .any(|quoted| quoted.len() > QUOTE_MAX);
    if !long_quote && text.len() <= MESSAGE_MAX {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(&shorten(part, QUOTE_MAX));
        } else {
            out.push_str(part);
        }
    }
    Cow::Owned(shorten(&out, MESSAGE_MAX).into_owned())
}

/// [`bounded`], keeping the string when it already is.
fn bounded_owned(text: String) -> String {
    match bounded(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

/// `a, b, c` with each name in backticks; `(none)` when empty.
/// Past [`LIST_MAX`] names, the rest are counted; each name is cut to
/// [`QUOTE_MAX`] characters.
pub fn list(names: &[impl AsRef<str>]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    let mut out = names
        .iter()
        .take(LIST_MAX)
        .map(|n| format!("`{}`", shorten(n.as_ref(), QUOTE_MAX)))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LIST_MAX {
        out.push_str(&format!(" and {} more", names.len() - LIST_MAX));
    }
    out
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
    fn a_snippet_reads_what_miette_reads_from_the_whole_text() {
        for text in [
            "a\nbb\n\nccc\n",
            "x = 1\r\ny = 2\r\nz\r\n",
            "",
            "single",
            "é\nçà\n",
        ] {
            let file = SourceFile::new("a.toml", PathBuf::from("a.toml"), text);
            let snippet = Snippet(Arc::clone(&file));
            for offset in 0..=text.len() + 1 {
                for len in [0, 1, 3] {
                    for context in [0, 1, 2] {
                        let span = SourceSpan::new(offset.into(), len);
                        let ours = snippet.read_span(&span, context, context);
                        if offset + len > text.len() {
                            // miette's own reading fails or panics there.
                            assert_eq!(ours.is_err(), offset > text.len());
                            continue;
                        }
                        let theirs = text.read_span(&span, context, context);
                        let case = format!("{text:?} at {offset}+{len}, context {context}");
                        match (ours, theirs) {
                            (Ok(ours), Ok(theirs)) => {
                                assert_eq!(ours.data(), theirs.data(), "{case}");
                                assert_eq!(ours.span(), theirs.span(), "{case}");
                                assert_eq!(ours.line(), theirs.line(), "{case}");
                                assert_eq!(ours.column(), theirs.column(), "{case}");
                                assert_eq!(ours.line_count(), theirs.line_count(), "{case}");
                                assert_eq!(ours.name(), Some("a.toml"));
                            }
                            (ours, theirs) => assert_eq!(ours.is_err(), theirs.is_err(), "{case}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn long_quoted_values_are_cut_at_a_character_boundary() {
        let long = "é".repeat(100);
        let problem = Problem::new("rivet::test", format!("node `{long}` and `short`"))
            .help(format!("see `{long}`"));
        let cut = format!("`{}…`", "é".repeat(QUOTE_MAX));
        assert_eq!(problem.message, format!("node {cut} and `short`"));
        assert_eq!(problem.help.as_deref(), Some(format!("see {cut}").as_str()));
        assert_eq!(shorten("abc", 3), "abc");
        let names: Vec<String> = (0..60).map(|i| format!("n{i}")).collect();
        assert!(list(&names).ends_with("`n49` and 10 more"));
    }

    #[test]
    fn a_place_on_a_line_too_long_to_show_is_named_instead() {
        let text = format!("a = 1\n\n\nb = \"{}\"\n", "x".repeat(10_000));
        let file = SourceFile::new("a.toml", PathBuf::from("a.toml"), text);
        let problem = Problem::new("rivet::test", "bad")
            .at(&Loc::new(&file, 8..9), "this key")
            .also(&Loc::new(&file, 0..1), "and this one");
        let rendered = problem.render_plain();
        assert!(rendered.len() < 1000, "{} bytes", rendered.len());
        assert!(
            rendered.contains("a.toml:4:1: this key (the lines are too long to show)"),
            "{rendered}"
        );
        assert!(rendered.contains("see a.toml:1:1"), "{rendered}");
    }

    #[test]
    fn nearest_suggests_typos_not_strangers() {
        let keys = ["password_env", "password_file", "username"];
        assert_eq!(nearest("pasword_env", keys), Some("password_env"));
        assert_eq!(nearest("usernme", keys), Some("username"));
        assert_eq!(nearest("colour", keys), None);
    }
}
