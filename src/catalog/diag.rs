//! Diagnostics: one problem in a catalog, with its location and a fix.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A position in the catalog file (1-based line and column, in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Span {
    pub line: usize,
    pub col: usize,
}

impl Span {
    pub const fn new(line: usize, col: usize) -> Self {
        Self { line, col }
    }
}

/// One problem found in a catalog: what is wrong, where, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub help: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if !self.help.is_empty() {
            write!(f, " — {}", self.help)?;
        }
        Ok(())
    }
}

impl Diagnostic {
    /// The diagnostic followed by the offending source line and a caret, as
    /// compilers print them on a terminal.
    pub fn render_with_snippet(&self, source: &str) -> String {
        let mut out = self.to_string();
        if let Some(text) = source.lines().nth(self.line.saturating_sub(1)) {
            let gutter = self.line.to_string();
            let pad = " ".repeat(gutter.len());
            let caret_pad: String = text
                .chars()
                .take(self.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!(
                "\n{pad} |\n{gutter} | {text}\n{pad} | {caret_pad}^"
            ));
        }
        out
    }
}

/// Collects every problem of one file, so that a run reports them all.
#[derive(Debug)]
pub struct Diagnostics {
    file: PathBuf,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            items: Vec::new(),
        }
    }

    pub fn error(&mut self, span: Span, message: impl Into<String>, help: impl Into<String>) {
        self.items.push(Diagnostic {
            file: self.file.clone(),
            line: span.line,
            column: span.col,
            message: message.into(),
            help: help.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The problems in file order.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|a| (a.line, a.column));
        self.items.dedup();
        self.items
    }
}

/// The closest candidate to `word`, when it is close enough to be a likely typo.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        // Optimal string alignment: an adjacent transposition is one edit, so
        // `nmae` is one step from `name`.
        .map(|c| (strsim::osa_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The "did you mean" clause of a help text, or a list of what is allowed.
pub fn suggestion(word: &str, candidates: &[&str]) -> String {
    match did_you_mean(word, candidates) {
        Some(c) => format!("did you mean `{c}`?"),
        None => format!("expected one of: {}", candidates.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(did_you_mean("tgas", &["tags", "targets"]), Some("tags"));
        assert_eq!(
            did_you_mean("imgaes", &["images", "version"]),
            Some("images")
        );
        assert_eq!(did_you_mean("nmae", &["name", "hash"]), Some("name"));
        assert_eq!(did_you_mean("zzzzzz", &["images", "version"]), None);
    }
}
