//! Label matchers with Prometheus 2.42 semantics.
//!
//! A [`Matcher`] is `name op "value"` with `op` one of `=`, `!=`, `=~`, `!~`.
//! [`matches_labels`] applies a list of matchers to a series, treating a
//! missing label as the empty string (so `job=""` selects series without a
//! `job` label and `job=~".*"` matches every series).
//!
//! # Regular expressions
//!
//! Regex matchers are fully anchored: the pattern is compiled as
//! `^(?:PATTERN)$`, as Prometheus 2.42's `NewFastRegexMatcher` does
//! (`regexp.Compile("^(?:" + v + ")$")`). In Prometheus 2.x `.` does **not**
//! match `\n` unless the pattern says `(?s)`; Prometheus 3.0 changed that
//! (`^(?s:PATTERN)$`, prometheus/prometheus#14505). [`DOT_MATCHES_NEWLINE`]
//! selects the behaviour and is `false` (2.x).
//!
//! Cheap fast paths skip the regex engine and are tested to agree with it:
//! `.*`, `.+`, a literal without metacharacters (string equality), an
//! alternation of such literals (set membership), and `lit.*`, `.*lit`,
//! `.*lit.*`.
//!
//! ## Go RE2 compatibility
//!
//! Prometheus uses Go's `regexp` (via `github.com/grafana/regexp`, a fork
//! of Go's standard `regexp`). The `regex` crate is also RE2-like, but
//! differs in ways a user can hit, so every pattern is first translated by a
//! small tokenizer that mirrors Go's parser (module `re2`). What it changes:
//!
//! * Perl classes are ASCII-only in Go: `\d` → `[0-9]`, `\w` →
//!   `[0-9A-Za-z_]`, `\s` → `[\t\n\f\r ]` (no `\v`), and the negations;
//!   inside brackets they become nested classes (`[\d_]` → `[[0-9]_]`).
//!   The regex crate's `\d` would match `٣`, its `\s` `U+0085`/`U+00A0`.
//! * `\b`, `\B` are ASCII word boundaries in Go: → `(?-u:\b)`, `(?-u:\B)`
//!   (accepted by the regex crate in a `&str` regex).
//! * `\Q…\E` (the regex crate has none) → escaped literals.
//! * `\<`, `\>` are literal `<`, `>` in Go (any escaped ASCII punctuation is
//!   literal) but word-boundary assertions in the regex crate → literals.
//! * `{` that does not start a valid repetition (`a{`, `a{,3}`, `a{01}`) is a
//!   literal in Go; the regex crate rejects it or, for `a{01}`, repeats.
//! * Bracket members are re-emitted escaped, so the regex crate's set
//!   operations (`[a&&b]`, `--`, `~~`) and nested `[` do not apply: in Go
//!   they are plain characters. POSIX classes (`[[:alpha:]]`) become the
//!   ASCII ranges of Go's table.
//! * Octal escapes (`\012`, `\0`) are accepted by Go, not by the regex crate.
//! * `\pC`: Go's `C` is `Cc|Cf|Co|Cs`; the regex crate's also contains
//!   unassigned code points (`U+0378`). The regex crate has no `\p{Cs}`
//!   (surrogates cannot occur in a `&str`) → an empty class. `\p{^Greek}`
//!   (Go's negation) is not supported by the regex crate → `\P…`.
//! * Property names: grafana/regexp accepts only `Any`, the general
//!   categories and the script names, spelled exactly; the regex crate
//!   matches names loosely and knows more properties (`\p{greek}`,
//!   `\p{Alphabetic}`). Names are checked, scripts are compiled as
//!   `\p{sc=Name}`.
//! * `(?P<name>…)`: Go allows any `[A-Za-z0-9_]+` name and duplicates; it is
//!   compiled as a plain group. `(?<name>…)` is rejected, as by the
//!   grafana/regexp parser (newer Go releases accept it).
//! * Flags: Go knows only `i m s U`. `(?x)`, `(?u)`, `(?R)` are rejected;
//!   `(?)` and repeated flags (`(?ii)`) are accepted and normalized.
//! * Go rejects stacked repetition operators (`a**`, `a++`, `a*?*`,
//!   `a{2}{3}`), counts above 1000, unbalanced parentheses (`a)|(b`, which
//!   the `^(?:…)$` wrapper would otherwise hide) and escapes it does not
//!   know (`\C`, `\Z`, `\u0041`, `\e`, `\1`, `[\b]`); so does this module,
//!   with Go's error wording.
//! * A surrogate escape (`\x{D800}`) is accepted by Go and never matches;
//!   the regex crate rejects it → an empty class.
//!
//! Remaining differences (checked against Go's `regexp/syntax` source and
//! docs and against the regex crate):
//!
//! * Unicode versions: regex-syntax 0.8.11 uses Unicode 16.0.0; Go 1.16 to
//!   1.20 (current when Prometheus 2.42 was released) ship Unicode 13.0.0.
//!   `\p{…}` classes and `(?i)` folding of characters assigned since then
//!   differ, and script names added since then are accepted here only.
//! * Property names: upper-case or underscore variants and 4-letter script
//!   codes (`\p{GREEK}`, `\p{Grek}`) are still accepted here (the regex
//!   crate matches `sc=` values loosely) while Go rejects them.
//! * Size limits: the regex crate's default 10 MiB compiled-size limit
//!   rejects some patterns Go accepts, e.g. `\pL{1000}` (Go limits the
//!   program to ~3.3M instructions instead). Such patterns are reported as
//!   invalid.
//! * Nesting: the regex crate's default nest limit (250) rejects deeper
//!   nesting (300 nested groups) that Go accepts (Go allows a parse-tree
//!   height of 1000). Raising the limit is not safe: the regex crate's NFA
//!   compiler recurses and overflowed a 2 MiB thread stack at 1200 levels.
//! * A few structural corner cases are left to the regex crate's parser,
//!   e.g. Go accepts `a(?i)*` (the flag group is not an operand) where the
//!   regex crate reports a missing repetition operand.
//!
//! No difference, verified: `(?i)` is simple (one code point to one) case
//! folding in both, so `(?i)k` matches `U+212A KELVIN SIGN` and
//! `(?i)straße` does not match `STRASSE`; Perl and POSIX classes are folded
//! under `(?i)` in both (`(?i)\w` matches the Kelvin sign);
//! `$` without `(?m)` matches only at the end of the text (like `\z`, not
//! Perl's `\Z`); `\A`, `\z`, `(?m)`, `(?s)`, `(?U)` mean the same; `\C`, `\Z`
//! and `\e` are errors in both; empty alternatives (`a|`, `()`) are allowed
//! in both. `(?U)` only changes which match is preferred, which cannot change
//! the result of a fully anchored yes/no match.

use std::fmt;

use super::labels::{write_go_quoted, Labels};
use super::re2;

/// Whether `.` matches `\n` in regex matchers. cairn anchors as `^(?s:PATTERN)$`, Prometheus
/// 3.x's behaviour (prometheus/prometheus#14505); Prometheus 2.x compiled `^(?:PATTERN)$`, so
/// there `.*` did not match a label value containing a newline. Only such values differ.
pub const DOT_MATCHES_NEWLINE: bool = true;

/// The operator of a [`Matcher`]. Discriminants are the remote-read
/// protobuf's `LabelMatcher.Type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum MatchType {
    /// `=`
    Equal = 0,
    /// `!=`
    NotEqual = 1,
    /// `=~`
    Regex = 2,
    /// `!~`
    NotRegex = 3,
}

impl MatchType {
    /// The type for a remote-read protobuf value, if known.
    pub fn from_i32(value: i32) -> Option<Self> {
        match value {
            0 => Some(Self::Equal),
            1 => Some(Self::NotEqual),
            2 => Some(Self::Regex),
            3 => Some(Self::NotRegex),
            _ => None,
        }
    }

    /// The PromQL operator: `=`, `!=`, `=~` or `!~`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::NotEqual => "!=",
            Self::Regex => "=~",
            Self::NotRegex => "!~",
        }
    }

    /// Whether the value is a regular expression.
    pub fn is_regex(self) -> bool {
        matches!(self, Self::Regex | Self::NotRegex)
    }

    /// The opposite operator (`=` ↔ `!=`, `=~` ↔ `!~`).
    pub fn inverse(self) -> Self {
        match self {
            Self::Equal => Self::NotEqual,
            Self::NotEqual => Self::Equal,
            Self::Regex => Self::NotRegex,
            Self::NotRegex => Self::Regex,
        }
    }
}

impl TryFrom<i32> for MatchType {
    type Error = MatcherError;

    fn try_from(value: i32) -> Result<Self, MatcherError> {
        Self::from_i32(value).ok_or(MatcherError::InvalidMatchType(value))
    }
}

impl fmt::Display for MatchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a matcher could not be built.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatcherError {
    /// The value of a `=~`/`!~` matcher is not a valid (Go RE2) regex.
    #[error("invalid regular expression {pattern:?}: {reason}")]
    InvalidRegex {
        /// The pattern as given.
        pattern: String,
        /// What is wrong, worded like Go's `regexp/syntax` where possible.
        reason: String,
    },
    /// A remote-read matcher type outside 0..=3.
    #[error("unknown matcher type {0}")]
    InvalidMatchType(i32),
}

/// A label matcher: `name`, operator `kind`, `value`.
///
/// Build it with [`Matcher::new`]; the public fields are for reading (the
/// compiled regex and [`Matcher::matches_empty`] are derived from them when
/// built and are not updated if the fields are changed afterwards).
#[derive(Clone, Debug)]
pub struct Matcher {
    /// The operator.
    pub kind: MatchType,
    /// The label name.
    pub name: String,
    /// The value, or the regex pattern as given (not anchored).
    pub value: String,
    pattern: Option<Pattern>,
    matches_empty: bool,
}

impl Matcher {
    /// Builds a matcher, compiling the pattern of `=~`/`!~` matchers.
    pub fn new(
        kind: MatchType,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Matcher, MatcherError> {
        let name = name.into();
        let value = value.into();
        let pattern = if kind.is_regex() {
            Some(Pattern::new(&value)?)
        } else {
            None
        };
        let mut m = Matcher {
            kind,
            name,
            value,
            pattern,
            matches_empty: false,
        };
        m.matches_empty = m.matches("");
        Ok(m)
    }

    /// Whether the label value `s` satisfies this matcher (pass `""` for a
    /// missing label).
    pub fn matches(&self, s: &str) -> bool {
        match self.kind {
            MatchType::Equal => s == self.value,
            MatchType::NotEqual => s != self.value,
            MatchType::Regex => self.pattern_matches(s),
            MatchType::NotRegex => !self.pattern_matches(s),
        }
    }

    fn pattern_matches(&self, s: &str) -> bool {
        match &self.pattern {
            Some(p) => p.matches(s),
            // Only if `kind` was changed after construction.
            None => s == self.value,
        }
    }

    /// Whether the matcher matches the empty string, i.e. also selects
    /// series that lack the label. Precomputed.
    pub fn matches_empty(&self) -> bool {
        self.matches_empty
    }

    /// The matcher with the opposite operator.
    pub fn inverse(&self) -> Matcher {
        Matcher {
            kind: self.kind.inverse(),
            name: self.name.clone(),
            value: self.value.clone(),
            pattern: self.pattern.clone(),
            matches_empty: !self.matches_empty,
        }
    }

    /// Whether a regex matcher is evaluated without the regex engine
    /// (literal, set, `.*`-style fast path).
    pub fn is_fast_path(&self) -> bool {
        !matches!(self.pattern, Some(Pattern::Regex(_)))
    }
}

impl PartialEq for Matcher {
    /// Matchers are equal when kind, name and value are.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.name == other.name && self.value == other.value
    }
}

impl Eq for Matcher {}

impl fmt::Display for Matcher {
    /// Prometheus's `Matcher.String()`: `name="value"`, `name!="value"`,
    /// `name=~"re"`, `name!~"re"` with Go `%q` quoting of the value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        f.write_str(self.kind.as_str())?;
        write_go_quoted(f, &self.value)
    }
}

/// Whether a series with `labels` satisfies every matcher (a missing label
/// is seen as `""`). An empty list matches everything.
pub fn matches_labels(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
}

/// A compiled regex matcher: a fast path or the full regex.
#[derive(Clone, Debug)]
enum Pattern {
    /// A pattern without metacharacters: string equality.
    Literal(Box<str>),
    /// `lit1|lit2|…`: sorted, deduplicated members.
    Set(Box<[Box<str>]>),
    /// `.*` or (`nonempty`) `.+`.
    Dots { nonempty: bool },
    /// `lit.*`
    Prefix(Box<str>),
    /// `.*lit`
    Suffix(Box<str>),
    /// `.*lit.*` (`lit` without `\n` unless dot matches newline).
    Contains(Box<str>),
    /// Anything else.
    Regex(regex::Regex),
}

/// Go's `regexp.QuoteMeta` special characters.
const META: &[char] = &[
    '\\', '.', '+', '*', '?', '(', ')', '|', '[', ']', '{', '}', '^', '$',
];

/// Whether `s` means itself as a Go regex (Go: `QuoteMeta(s) == s`).
fn is_literal(s: &str) -> bool {
    !s.contains(META)
}

/// Whether `s` can be consumed by a run of `.`.
fn dots_match(s: &str) -> bool {
    DOT_MATCHES_NEWLINE || !s.contains('\n')
}

impl Pattern {
    fn new(pattern: &str) -> Result<Self, MatcherError> {
        match Self::fast(pattern) {
            Some(p) => Ok(p),
            None => compile_regex(pattern).map(Pattern::Regex),
        }
    }

    /// The fast path for `pattern`, if it has one.
    fn fast(pattern: &str) -> Option<Self> {
        match pattern {
            ".*" => return Some(Pattern::Dots { nonempty: false }),
            ".+" => return Some(Pattern::Dots { nonempty: true }),
            _ => {}
        }
        if is_literal(pattern) {
            return Some(Pattern::Literal(pattern.into()));
        }
        if pattern.contains('|') && pattern.split('|').all(is_literal) {
            let mut set: Vec<Box<str>> = pattern.split('|').map(Box::from).collect();
            set.sort_unstable();
            set.dedup();
            return Some(Pattern::Set(set.into_boxed_slice()));
        }
        let usable = |lit: &str| !lit.is_empty() && is_literal(lit);
        if let Some(mid) = pattern
            .strip_prefix(".*")
            .and_then(|r| r.strip_suffix(".*"))
        {
            if usable(mid) && (DOT_MATCHES_NEWLINE || !mid.contains('\n')) {
                return Some(Pattern::Contains(mid.into()));
            }
        }
        if let Some(lit) = pattern.strip_suffix(".*") {
            if usable(lit) {
                return Some(Pattern::Prefix(lit.into()));
            }
        }
        if let Some(lit) = pattern.strip_prefix(".*") {
            if usable(lit) {
                return Some(Pattern::Suffix(lit.into()));
            }
        }
        None
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Pattern::Literal(lit) => s == &**lit,
            Pattern::Set(set) => set.binary_search_by(|m| (**m).cmp(s)).is_ok(),
            Pattern::Dots { nonempty } => !(*nonempty && s.is_empty()) && dots_match(s),
            Pattern::Prefix(lit) => s.strip_prefix(&**lit).is_some_and(dots_match),
            Pattern::Suffix(lit) => s.strip_suffix(&**lit).is_some_and(dots_match),
            Pattern::Contains(lit) => dots_match(s) && s.contains(&**lit),
            Pattern::Regex(re) => re.is_match(s),
        }
    }
}

/// Translates a Go RE2 pattern and compiles it anchored, without fast paths.
fn compile_regex(pattern: &str) -> Result<regex::Regex, MatcherError> {
    let invalid = |reason: String| MatcherError::InvalidRegex {
        pattern: pattern.to_string(),
        reason,
    };
    let translated = re2::translate(pattern).map_err(invalid)?;
    let anchored = if DOT_MATCHES_NEWLINE {
        format!("^(?s:{translated})$")
    } else {
        format!("^(?:{translated})$")
    };
    regex::Regex::new(&anchored).map_err(|e| invalid(regex_error_reason(&e)))
}

/// A one-line reason from a regex crate error (its syntax errors are
/// multi-line, with the message on the last line as `error: …`).
fn regex_error_reason(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .unwrap_or(text.trim())
            .to_string(),
        regex::Error::CompiledTooBig(limit) => {
            format!("expression too large (compiled size over {limit} bytes)")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;
    use MatchType::{Equal, NotEqual, NotRegex, Regex};

    fn m(kind: MatchType, value: &str) -> Matcher {
        Matcher::new(kind, "l", value).unwrap()
    }

    /// (what, kind, value, input, expected)
    type Case = (&'static str, MatchType, &'static str, &'static str, bool);

    fn check(cases: &[Case]) {
        for &(what, kind, value, input, expected) in cases {
            let matcher = m(kind, value);
            assert_eq!(
                matcher.matches(input),
                expected,
                "{what}: {matcher} on {input:?}"
            );
            if kind.is_regex() {
                // The same answer from the full regex, bypassing fast paths.
                let re = compile_regex(value).unwrap();
                let full = if kind == Regex {
                    re.is_match(input)
                } else {
                    !re.is_match(input)
                };
                assert_eq!(
                    full, expected,
                    "{what} (full regex): {matcher} on {input:?}"
                );
            }
        }
    }

    #[test]
    fn equality_matchers_compare_whole_strings() {
        check(&[
            ("equal matches the same string", Equal, "foo", "foo", true),
            (
                "equal does not match a longer string",
                Equal,
                "foo",
                "foox",
                false,
            ),
            ("equal is case sensitive", Equal, "foo", "Foo", false),
            (
                "not-equal rejects the same string",
                NotEqual,
                "foo",
                "foo",
                false,
            ),
            (
                "not-equal accepts another string",
                NotEqual,
                "foo",
                "bar",
                true,
            ),
            ("equal to empty matches empty", Equal, "", "", true),
        ]);
    }

    #[test]
    fn regex_matchers_are_fully_anchored() {
        check(&[
            (
                "a literal regex does not match a longer string",
                Regex,
                "foo",
                "xfoo",
                false,
            ),
            (
                "a literal regex does not match a prefix",
                Regex,
                "foo",
                "foox",
                false,
            ),
            ("a literal regex matches itself", Regex, "foo", "foo", true),
            (
                "anchoring covers the whole alternation",
                Regex,
                "a|b",
                "ab",
                false,
            ),
            ("an alternation matches a member", Regex, "a|b", "b", true),
            (
                "a regex with an operator is anchored",
                Regex,
                "fo+",
                "foox",
                false,
            ),
            (
                "a regex with an operator matches",
                Regex,
                "fo+",
                "fooo",
                true,
            ),
            ("explicit anchors are harmless", Regex, "^foo$", "foo", true),
            ("an empty pattern matches only empty", Regex, "", "", true),
            ("an empty pattern rejects text", Regex, "", "a", false),
            ("not-regex inverts", NotRegex, "foo", "xfoo", true),
            ("not-regex rejects a match", NotRegex, "f.o", "fxo", false),
            (
                "a trailing empty alternative matches empty",
                Regex,
                "a|",
                "",
                true,
            ),
        ]);
    }

    #[test]
    fn dot_and_newlines_follow_prometheus_2() {
        let nl = DOT_MATCHES_NEWLINE;
        check(&[
            (
                "dot does not match a newline by default",
                Regex,
                "a.b",
                "a\nb",
                nl,
            ),
            (
                "dot-star does not cross a newline by default",
                Regex,
                ".*",
                "a\nb",
                nl,
            ),
            (
                "dot-plus does not cross a newline by default",
                Regex,
                ".+",
                "\n",
                nl,
            ),
            (
                "a prefix fast path respects newlines",
                Regex,
                "foo.*",
                "foo\n",
                nl,
            ),
            (
                "a suffix fast path respects newlines",
                Regex,
                ".*foo",
                "\nfoo",
                nl,
            ),
            (
                "a contains fast path respects newlines",
                Regex,
                ".*foo.*",
                "\nfoo",
                nl,
            ),
            (
                "the s flag makes dot match a newline",
                Regex,
                "(?s)a.b",
                "a\nb",
                true,
            ),
            (
                "the s flag makes dot-star match a newline",
                Regex,
                "(?s:.*)",
                "a\nb",
                true,
            ),
            ("a class can match a newline", Regex, "a[^x]b", "a\nb", true),
            (
                "an escaped newline is literal",
                Regex,
                r"a\nb",
                "a\nb",
                true,
            ),
            (
                "dollar is end of text, not before a final newline",
                Regex,
                "a$",
                "a\n",
                false,
            ),
            (
                "multi-line dollar matches before a newline",
                Regex,
                "(?m)a$\n",
                "a\n",
                true,
            ),
        ]);
    }

    #[test]
    fn perl_classes_are_ascii_only_like_go() {
        check(&[
            (
                "digit does not match an Arabic-Indic digit",
                Regex,
                r"\d",
                "\u{663}",
                false,
            ),
            (
                "digit matches ASCII digits",
                Regex,
                r"\d+",
                "0123456789",
                true,
            ),
            (
                "non-digit matches an Arabic-Indic digit",
                Regex,
                r"\D",
                "\u{663}",
                true,
            ),
            ("word does not match e-acute", Regex, r"\w", "é", false),
            (
                "word matches ASCII word characters",
                Regex,
                r"\w+",
                "aZ09_",
                true,
            ),
            ("non-word matches e-acute", Regex, r"\W", "é", true),
            (
                "space does not match next-line",
                Regex,
                r"\s",
                "\u{85}",
                false,
            ),
            (
                "space does not match no-break space",
                Regex,
                r"\s",
                "\u{a0}",
                false,
            ),
            (
                "space does not match vertical tab",
                Regex,
                r"\s",
                "\u{b}",
                false,
            ),
            (
                "space matches Go's five",
                Regex,
                r"\s+",
                "\t\n\u{c}\r ",
                true,
            ),
            (
                "non-space matches no-break space",
                Regex,
                r"\S",
                "\u{a0}",
                true,
            ),
            (
                "a class with digit and underscore",
                Regex,
                r"[\d_]+",
                "1_2",
                true,
            ),
            (
                "a class with digit rejects other digits",
                Regex,
                r"[\d_]+",
                "1\u{663}",
                false,
            ),
            (
                "a negated class of non-digits is digits",
                Regex,
                r"[^\D]",
                "5",
                true,
            ),
            (
                "a negated class of non-digits is ASCII",
                Regex,
                r"[^\D]",
                "\u{663}",
                false,
            ),
            (
                "a negated class of word rejects underscore",
                Regex,
                r"[^\w]",
                "_",
                false,
            ),
            (
                "an escaped backslash before d is literal",
                Regex,
                r"\\d",
                "\\d",
                true,
            ),
            (
                "an escaped backslash before d is not a digit",
                Regex,
                r"\\d",
                "5",
                false,
            ),
            ("word boundary is ASCII", Regex, r"\bé", "é", false),
            (
                "word boundary between words",
                Regex,
                r".*\bfoo\b.*",
                "a foo b",
                true,
            ),
            (
                "no word boundary inside a word",
                Regex,
                r".*\Boo\B.*",
                "afoob",
                true,
            ),
            ("posix alpha is ASCII", Regex, "[[:alpha:]]+", "abc", true),
            (
                "posix alpha rejects e-acute",
                Regex,
                "[[:alpha:]]",
                "é",
                false,
            ),
            (
                "posix space includes vertical tab",
                Regex,
                "[[:space:]]",
                "\u{b}",
                true,
            ),
        ]);
        // The same patterns with the regex crate's own (Unicode) classes
        // would match: that is what the translation prevents.
        let unicode = |p: &str, s: &str| regex::Regex::new(p).unwrap().is_match(s);
        assert!(unicode(r"^\d$", "\u{663}"));
        assert!(unicode(r"^\w$", "é"));
        assert!(unicode(r"^\s$", "\u{85}"));
        assert!(unicode(r"\bé", "é"));
    }

    #[test]
    fn go_syntax_is_honoured() {
        check(&[
            ("quoted text is literal", Regex, r"\Qa.b\E", "a.b", true),
            (
                "quoted text does not match any char",
                Regex,
                r"\Qa.b\E",
                "axb",
                false,
            ),
            ("angle brackets are literal", Regex, r"\<a\>", "<a>", true),
            ("an invalid brace is literal", Regex, "a{,3}", "a{,3}", true),
            (
                "a leading-zero count is literal",
                Regex,
                "a{01}",
                "a{01}",
                true,
            ),
            ("a counted repetition", Regex, "a{2,3}", "aaa", true),
            (
                "a counted repetition upper bound",
                Regex,
                "a{2,3}",
                "aaaa",
                false,
            ),
            (
                "ampersands in a class are members",
                Regex,
                "[a&&b]",
                "&",
                true,
            ),
            ("a class starting with bracket", Regex, "[]a]+", "]a", true),
            ("hex escape", Regex, r"\x41\x{42}", "AB", true),
            ("octal escape", Regex, r"\101", "A", true),
            (
                "the C category excludes unassigned code points",
                Regex,
                r"\pC",
                "\u{378}",
                false,
            ),
            (
                "the C category includes controls",
                Regex,
                r"\pC",
                "\u{1}",
                true,
            ),
            ("a script class", Regex, r"\p{Greek}+", "αβγ", true),
            ("a negated script class", Regex, r"\p{^Greek}", "a", true),
            ("a category class", Regex, r"\p{Lu}\pL*", "Élan", true),
            ("a named group", Regex, r"(?P<x>a)b", "ab", true),
            ("escaped punctuation", Regex, r"\-\_\#", "-_#", true),
            (
                "a surrogate escape matches nothing",
                Regex,
                r"a|\x{D800}",
                "a",
                true,
            ),
        ]);
    }

    #[test]
    fn case_insensitivity_uses_simple_folding() {
        check(&[
            ("i flag ignores case", Regex, "(?i)foo", "FoO", true),
            ("i flag scoped to a group", Regex, "(?i:f)oo", "FOO", false),
            (
                "i flag folds the Kelvin sign",
                Regex,
                "(?i)k",
                "\u{212a}",
                true,
            ),
            (
                "i flag folds a word class to the Kelvin sign",
                Regex,
                r"(?i)\w",
                "\u{212a}",
                true,
            ),
            (
                "i flag folds sharp s to capital sharp s",
                Regex,
                "(?i)straße",
                "STRAẞE",
                true,
            ),
            (
                "i flag does not expand sharp s",
                Regex,
                "(?i)straße",
                "STRASSE",
                false,
            ),
            (
                "i flag with a literal alternation",
                Regex,
                "(?i)a|b",
                "A",
                true,
            ),
        ]);
    }

    #[test]
    fn invalid_regexes_are_rejected_with_a_reason() {
        let cases = [
            ("an unclosed group", "("),
            ("an unbalanced close", "a)|(b"),
            ("a nested repetition", "a**"),
            ("an unclosed class", "[a"),
            ("a trailing backslash", "a\\"),
            ("a dotnet named group", "(?<n>a)"),
            ("an unsupported escape", r"\C"),
            ("a repeat count over 1000", "a{1001}"),
            ("a missing repetition operand", "*a"),
            ("an unknown property", r"\p{Foo}"),
            ("a non-script property", r"\p{Alphabetic}"),
            ("the verbose flag", "(?x)a"),
            ("a backreference", r"(a)\1"),
            ("an expression over the size limit", r"\pL{1000}"),
            (
                "nesting deeper than the regex crate's default limit",
                &format!("{}a{}", "(".repeat(300), ")".repeat(300)),
            ),
        ];
        for (what, pattern) in cases {
            for kind in [Regex, NotRegex] {
                match Matcher::new(kind, "l", pattern) {
                    Err(MatcherError::InvalidRegex { pattern: p, reason }) => {
                        assert_eq!(p, pattern, "{what}");
                        assert!(
                            !reason.is_empty() && !reason.contains('\n'),
                            "{what}: {reason:?}"
                        );
                    }
                    other => panic!("{what}: expected InvalidRegex, got {other:?}"),
                }
            }
        }
        // Equality matchers take any value.
        assert!(Matcher::new(Equal, "l", "(").is_ok());
        let err = Matcher::new(Regex, "l", "a**").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid regular expression \"a**\": invalid nested repetition operator: `**`"
        );
    }

    #[test]
    fn missing_labels_are_matched_as_empty() {
        let without_job = Labels::from_pairs([("__name__", "up")]);
        let with_job = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
        let with_empty_job = Labels::from_pairs([("__name__", "up"), ("job", "")]);
        let cases: Vec<(&str, Matcher, bool, bool)> = vec![
            (
                "job=\"\" selects series without job",
                Matcher::new(Equal, "job", "").unwrap(),
                true,
                false,
            ),
            (
                "job!=\"\" requires job",
                Matcher::new(NotEqual, "job", "").unwrap(),
                false,
                true,
            ),
            (
                "job=~\".*\" matches a missing job",
                Matcher::new(Regex, "job", ".*").unwrap(),
                true,
                true,
            ),
            (
                "job=~\".+\" does not match a missing job",
                Matcher::new(Regex, "job", ".+").unwrap(),
                false,
                true,
            ),
            (
                "job!~\".+\" matches only a missing job",
                Matcher::new(NotRegex, "job", ".+").unwrap(),
                true,
                false,
            ),
            (
                "job=\"api\" needs the value",
                Matcher::new(Equal, "job", "api").unwrap(),
                false,
                true,
            ),
            (
                "job!=\"api\" matches a missing job",
                Matcher::new(NotEqual, "job", "api").unwrap(),
                true,
                false,
            ),
            (
                "job=~\"api|\" matches missing or api",
                Matcher::new(Regex, "job", "api|").unwrap(),
                true,
                true,
            ),
        ];
        for (what, matcher, on_without, on_with) in cases {
            let ms = [matcher];
            assert_eq!(
                matches_labels(&ms, &without_job),
                on_without,
                "{what} (without job)"
            );
            assert_eq!(matches_labels(&ms, &with_job), on_with, "{what} (with job)");
            // An empty value is the same as a missing label.
            assert_eq!(
                matches_labels(&ms, &with_empty_job),
                on_without,
                "{what} (empty job)"
            );
            assert_eq!(ms[0].matches_empty(), on_without, "{what} (matches_empty)");
        }
        let both = [
            Matcher::new(Equal, "__name__", "up").unwrap(),
            Matcher::new(Regex, "job", "a.*").unwrap(),
        ];
        assert!(matches_labels(&both, &with_job));
        assert!(!matches_labels(&both, &without_job));
        assert!(matches_labels(&[], &without_job));
    }

    #[test]
    fn matches_empty_is_precomputed_per_kind() {
        let cases = [
            ("regex dot-star", Regex, ".*", true),
            ("regex dot-plus", Regex, ".+", false),
            ("regex literal", Regex, "foo", false),
            ("regex optional", Regex, "(foo)?", true),
            ("not-regex dot-plus", NotRegex, ".+", true),
            ("not-regex dot-star", NotRegex, ".*", false),
            ("equal empty", Equal, "", true),
            ("not-equal empty", NotEqual, "", false),
            ("not-equal value", NotEqual, "x", true),
        ];
        for (what, kind, value, expected) in cases {
            let matcher = m(kind, value);
            assert_eq!(matcher.matches_empty(), expected, "{what}");
            assert_eq!(
                matcher.inverse().matches_empty(),
                !expected,
                "{what} inverse"
            );
            assert_eq!(
                matcher.inverse().matches("zz"),
                !matcher.matches("zz"),
                "{what} inverse"
            );
        }
    }

    #[test]
    fn display_uses_promql_operators_and_go_quoting() {
        let cases = [
            (Equal, "job", "x", r#"job="x""#),
            (NotEqual, "job", "x", r#"job!="x""#),
            (Regex, "job", r"\d+", r#"job=~"\\d+""#),
            (NotRegex, "job", "a\nb\"", r#"job!~"a\nb\"""#),
            (Equal, "__name__", "é", r#"__name__="é""#),
        ];
        for (kind, name, value, expected) in cases {
            let matcher = Matcher::new(kind, name, value).unwrap();
            assert_eq!(matcher.to_string(), expected);
        }
    }

    #[test]
    fn match_type_maps_remote_read_values() {
        for (value, kind, op) in [
            (0, Equal, "="),
            (1, NotEqual, "!="),
            (2, Regex, "=~"),
            (3, NotRegex, "!~"),
        ] {
            assert_eq!(MatchType::from_i32(value), Some(kind));
            assert_eq!(MatchType::try_from(value), Ok(kind));
            assert_eq!(kind as i32, value);
            assert_eq!(kind.to_string(), op);
        }
        assert_eq!(MatchType::from_i32(4), None);
        assert_eq!(MatchType::from_i32(-1), None);
        assert_eq!(
            MatchType::try_from(7),
            Err(MatcherError::InvalidMatchType(7))
        );
    }

    #[test]
    fn fast_paths_are_chosen_where_expected() {
        let cases = [
            ("a literal", "foo", true),
            ("an alternation of literals", "a|b|c", true),
            ("dot-star", ".*", true),
            ("dot-plus", ".+", true),
            ("a prefix", "foo.*", true),
            ("a suffix", ".*foo", true),
            ("a contains", ".*foo.*", true),
            ("a character class", "[ab]", false),
            ("a case-insensitive literal", "(?i)foo", false),
            ("an escaped dot", r"a\.b", false),
            ("two dot-stars", ".*.*", false),
        ];
        for (what, pattern, fast) in cases {
            assert_eq!(m(Regex, pattern).is_fast_path(), fast, "{what}");
        }
        assert!(matches!(Pattern::fast("b|a|b"), Some(Pattern::Set(s)) if s.len() == 2));
    }

    proptest! {
        #[test]
        fn fast_paths_agree_with_the_full_regex(
            s in "[fo\nab|é.*]{0,6}",
            pattern in prop::sample::select(vec![
                "foo", "", "a|b|", "a|ab|abc|", ".*", ".+", "foo.*", ".*foo", ".*foo.*",
                "fo|o", ".*a.*", "é.*", ".*é", "a.b",
            ]),
        ) {
            let fast = Pattern::fast(pattern);
            let re = compile_regex(pattern).unwrap();
            if let Some(fast) = fast {
                prop_assert_eq!(fast.matches(&s), re.is_match(&s), "{:?} on {:?}", pattern, s);
            }
            // Inputs built from the pattern itself hit the interesting cases.
            for candidate in [pattern.to_string(), format!("{pattern}\n"), format!("x{pattern}"), s.clone() + pattern] {
                let matcher = Matcher::new(Regex, "l", pattern).unwrap();
                prop_assert_eq!(matcher.matches(&candidate), re.is_match(&candidate));
            }
        }

        #[test]
        fn arbitrary_patterns_never_panic(
            pattern in r"[\\()\[\]{}|*+?.^$:PQEpdDwsbBCxz0-9a,<>\-é]{0,12}",
            input in "[a0-9é\n]{0,4}",
        ) {
            if let Ok(matcher) = Matcher::new(Regex, "l", pattern) {
                let _ = matcher.matches(&input);
            }
        }

        #[test]
        fn the_common_subset_means_the_same_after_translation(
            pattern in "[ab.*+?|()]{1,8}",
            input in "[ab\n]{0,5}",
        ) {
            let raw = if DOT_MATCHES_NEWLINE {
                regex::Regex::new(&format!("^(?s:{pattern})$"))
            } else {
                regex::Regex::new(&format!("^(?:{pattern})$"))
            };
            if let (Ok(raw), Ok(ours)) = (raw, compile_regex(&pattern)) {
                prop_assert_eq!(ours.is_match(&input), raw.is_match(&input));
            }
        }
    }
}
