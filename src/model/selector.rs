//! PromQL series selectors (`match[]` of the admin and query APIs), parsed as Prometheus 2.42's
//! `parser.ParseMetricSelector` parses them.
//!
//! ```text
//! selector  = metric_name [ "{" matchers "}" ] | "{" matchers "}"
//! matchers  = empty | matcher { "," matcher } [ "," ]
//! matcher   = label_name ( "=" | "!=" | "=~" | "!~" ) string
//! ```
//!
//! [`parse_selector`] returns the label matchers in input order; a metric name written before
//! the braces becomes `__name__="name"`, **appended last**, as Prometheus's
//! `assembleVectorSelector` appends it (`foo{a="b"}` → `a="b"`, `__name__="foo"`).
//!
//! # What the lexer accepts (upstream `promql/parser/lex.go`)
//!
//! * Whitespace (space, `\t`, `\n`, `\r`) and `#` line comments may stand between any two
//!   tokens, also inside the braces.
//! * A metric name is `[a-zA-Z_:][a-zA-Z0-9_:]*`. Words are looked up case-insensitively among
//!   PromQL's keywords first; the grammar's `metric_identifier` rule then admits the aggregators
//!   (`sum`, `avg`, `count`, `min`, `max`, `group`, `stddev`, `stdvar`, `topk`, `bottomk`,
//!   `count_values`, `quantile`), `and`, `or`, `unless`, `by`, `without`, `offset`, `start` and
//!   `end` as metric names (kept as written, e.g. `SUM`), but not `bool`, `on`, `ignoring`,
//!   `group_left`, `group_right`, `atan2`, `inf` or `nan`.
//! * Inside braces every `[a-zA-Z_][a-zA-Z0-9_]*` word is a label name, keywords included
//!   (`on`, `by`, `bool`, `offset`, …); `:` is not allowed there.
//! * Strings are quoted with `"`, `'` or `` ` ``. In `"…"` and `'…'` the escapes are those of
//!   Go: `\a \b \f \n \r \t \v \\`, the string's own quote (`\"` or `\'`, not the other one),
//!   `\NNN` (three octal digits, ≤ 255), `\xNN`, `\uNNNN`, `\UNNNNNNNN` (a Unicode scalar
//!   value; surrogates are refused). Octal and `\x` escapes are bytes, the others code points.
//!   A quoted string cannot contain a raw newline. Backtick strings are raw: no escapes, any
//!   character but `` ` ``, newlines included.
//! * A literal U+FFFD inside a string is refused ("invalid UTF-8 rune"), as upstream's lexer,
//!   which cannot tell it from a decoding error, refuses it.
//!
//! # Errors
//!
//! Parsing stops at the first problem, which is the one Prometheus reports (it collects more,
//! but prints only the first). [`SelectorError`] displays as Prometheus's `ParseErr` does:
//! `LINE:COL: parse error: MESSAGE`, the column counted in bytes from 1. Messages follow
//! upstream's wording: lexer messages (`unexpected character inside braces: ':'`,
//! `unterminated quoted string`, `unknown escape sequence U+0063 'c'`, …) and grammar messages
//! (`unexpected identifier "b" in label matching, expected string`; after a complete selector
//! just `unexpected "["`, `unexpected <op:+>`, `unexpected <offset>`).
//!
//! # Where this differs from `ParseMetricSelector` (on purpose)
//!
//! * **Empty selectors are refused.** If every matcher matches the empty string (`{}`,
//!   `{job=""}`, `{job=~".*"}`, `{job!="x"}`), the selector is refused with upstream's
//!   `vector selector must contain at least one non-empty matcher`. Upstream applies that rule to
//!   selectors inside PromQL expressions (`checkAST`) and to `match[]` of `/series` and
//!   `/labels` (`match[] must contain at least one non-empty matcher`), but 2.42's
//!   `delete_series` calls `ParseMetricSelector`, which does not check it, so there
//!   `{job=~".*"}` deletes every series. For a delete API that is a foot-gun.
//! * **String values must be UTF-8.** Byte escapes (`\xNN`, `\NNN`) that do not form valid
//!   UTF-8 (`"\xff"`) are refused; upstream accepts them and builds a label value that no
//!   cairn series can have (cairn's labels are UTF-8). Byte escapes that do form UTF-8
//!   (`"\xc3\xa9"` = `é`) are accepted.
//! * Not differences: `foo{__name__="bar"}` is accepted and yields both `__name__` matchers
//!   (upstream's "metric name must not be set twice" is also a `checkAST` rule that
//!   `ParseMetricSelector` skips); invalid regexes are reported with [`Matcher::new`]'s wording
//!   (Go RE2 semantics, see [`super::matcher`]) rather than Go's `error parsing regexp: …`.

use std::fmt;

use super::labels::{go_quote, METRIC_NAME};
use super::matcher::{MatchType, Matcher, MatcherError};

/// Parses a PromQL series selector (`up`, `up{job="api"}`, `{__name__=~"node_.*", env!="dev"}`)
/// into label matchers, as Prometheus 2.42's `ParseMetricSelector` does, and refuses selectors
/// whose every matcher matches the empty string. See the [module docs](self).
pub fn parse_selector(input: &str) -> Result<Vec<Matcher>, SelectorError> {
    Parser {
        input,
        lex: Lexer::new(input),
    }
    .parse()
}

/// Why a selector was refused, and where. Displays as `LINE:COL: parse error: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SelectorError {
    /// Byte offset in the input where the problem starts.
    pub offset: usize,
    /// Line of `offset`, from 1.
    pub line: usize,
    /// Column of `offset` in bytes, from 1 (as Prometheus counts).
    pub column: usize,
    /// What is wrong.
    pub kind: SelectorErrorKind,
}

impl SelectorError {
    fn new(input: &str, offset: usize, kind: SelectorErrorKind) -> Self {
        let before = input.get(..offset).unwrap_or(input);
        let line = 1 + before.matches('\n').count();
        let column = match before.rfind('\n') {
            Some(newline) => offset - newline,
            None => offset + 1,
        };
        SelectorError {
            offset,
            line,
            column,
            kind,
        }
    }
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: parse error: {}",
            self.line, self.column, self.kind
        )
    }
}

impl std::error::Error for SelectorError {}

/// What is wrong with a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SelectorErrorKind {
    /// The input cannot be split into tokens here: a character PromQL does not know, an
    /// unterminated string, a bad escape sequence. Worded like Prometheus's lexer.
    Lex(String),
    /// A token the grammar does not allow here, described as Prometheus describes it
    /// (`identifier "b"`, `"}"`, `<op:+>`, `end of input`).
    Unexpected {
        /// The token found.
        found: String,
        /// Where in the grammar (`label matching`), if inside the braces.
        context: Option<&'static str>,
        /// What would have been accepted, if inside the braces.
        expected: Option<&'static str>,
    },
    /// A quoted string whose escapes do not decode to UTF-8 (Prometheus accepts these).
    InvalidUtf8 {
        /// The string literal as written, Go-quoted.
        literal: String,
    },
    /// The matcher could not be built: an invalid regular expression.
    InvalidMatcher(MatcherError),
    /// Every matcher matches the empty string, so the selector would select every series.
    EmptySelector,
}

impl fmt::Display for SelectorErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lex(msg) => f.write_str(msg),
            Self::Unexpected {
                found,
                context,
                expected,
            } => {
                write!(f, "unexpected {found}")?;
                if let Some(context) = context {
                    write!(f, " in {context}")?;
                }
                if let Some(expected) = expected {
                    write!(f, ", expected {expected}")?;
                }
                Ok(())
            }
            Self::InvalidUtf8 { literal } => write!(
                f,
                "error unquoting string {literal}: escape sequences do not form valid UTF-8"
            ),
            Self::InvalidMatcher(err) => err.fmt(f),
            Self::EmptySelector => {
                f.write_str("vector selector must contain at least one non-empty matcher")
            }
        }
    }
}

/// Keyword classes of upstream's `lex.go`, which decide how a keyword token is described.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeywordClass {
    /// `and`, `or`, `unless`, `atan2`: `<op:and>`.
    Operator,
    /// `sum`, `avg`, …: `<aggr:sum>`.
    Aggregator,
    /// `by`, `offset`, `bool`, …: `<by>`.
    Keyword,
    /// `start`, `end`: `"start"`.
    Preprocessor,
}

/// Prometheus 2.42's keywords (`key` in `lex.go`; `inf` and `nan` are numbers), their class,
/// and whether the grammar's `metric_identifier` rule takes them as a metric name.
const KEYWORDS: &[(&str, KeywordClass, bool)] = &[
    ("and", KeywordClass::Operator, true),
    ("or", KeywordClass::Operator, true),
    ("unless", KeywordClass::Operator, true),
    ("atan2", KeywordClass::Operator, false),
    ("sum", KeywordClass::Aggregator, true),
    ("avg", KeywordClass::Aggregator, true),
    ("count", KeywordClass::Aggregator, true),
    ("min", KeywordClass::Aggregator, true),
    ("max", KeywordClass::Aggregator, true),
    ("group", KeywordClass::Aggregator, true),
    ("stddev", KeywordClass::Aggregator, true),
    ("stdvar", KeywordClass::Aggregator, true),
    ("topk", KeywordClass::Aggregator, true),
    ("bottomk", KeywordClass::Aggregator, true),
    ("count_values", KeywordClass::Aggregator, true),
    ("quantile", KeywordClass::Aggregator, true),
    ("offset", KeywordClass::Keyword, true),
    ("by", KeywordClass::Keyword, true),
    ("without", KeywordClass::Keyword, true),
    ("on", KeywordClass::Keyword, false),
    ("ignoring", KeywordClass::Keyword, false),
    ("group_left", KeywordClass::Keyword, false),
    ("group_right", KeywordClass::Keyword, false),
    ("bool", KeywordClass::Keyword, false),
    ("start", KeywordClass::Preprocessor, true),
    ("end", KeywordClass::Preprocessor, true),
];

/// Token kinds, as far as a selector needs to tell them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Eof,
    /// `[a-zA-Z_][a-zA-Z0-9_]*` outside braces (not a keyword), any such word inside braces.
    Identifier,
    /// A word with a `:`, outside braces.
    MetricIdentifier,
    /// A keyword outside braces, and whether it may be a metric name.
    Keyword(KeywordClass, bool),
    Number,
    Duration,
    /// A string literal; the item's `value` holds its decoded bytes.
    Str,
    LeftBrace,
    RightBrace,
    LeftParen,
    LeftBracket,
    Comma,
    /// `=`, `!=`, `=~`, `!~`.
    Match(MatchType),
    /// Any other operator (`+`, `==`, `<=`, `@`, …).
    Op,
}

#[derive(Debug)]
struct Item<'a> {
    kind: Kind,
    /// Byte offset of the token.
    pos: usize,
    /// The token as written.
    text: &'a str,
    /// The decoded value of a string literal.
    value: Vec<u8>,
}

impl Item<'_> {
    /// Upstream's `Item.desc()`: how the token is named in "unexpected …" messages.
    fn describe(&self) -> String {
        let text = self.text;
        match self.kind {
            Kind::Eof => "end of input".to_owned(),
            Kind::Identifier => format!("identifier {}", go_quote(text)),
            Kind::MetricIdentifier => format!("metric identifier {}", go_quote(text)),
            Kind::Number => format!("number {}", short_quote(text)),
            Kind::Duration => format!("duration {}", short_quote(text)),
            Kind::Str => format!("string {}", short_quote(text)),
            Kind::Keyword(KeywordClass::Operator, _) | Kind::Op => format!("<op:{text}>"),
            Kind::Match(kind) if kind != MatchType::Equal => format!("<op:{text}>"),
            Kind::Keyword(KeywordClass::Aggregator, _) => format!("<aggr:{text}>"),
            Kind::Keyword(KeywordClass::Keyword, _) => format!("<{text}>"),
            Kind::Keyword(KeywordClass::Preprocessor, _)
            | Kind::Match(_)
            | Kind::LeftBrace
            | Kind::RightBrace
            | Kind::LeftParen
            | Kind::LeftBracket
            | Kind::Comma => short_quote(text),
        }
    }
}

/// Go's `%.10q...` for long token texts, `%q` for short ones (`Item.String()`).
fn short_quote(text: &str) -> String {
    if text.len() > 10 {
        let head: String = text.chars().take(10).collect();
        format!("{}...", go_quote(&head))
    } else {
        go_quote(text)
    }
}

/// Go's `strconv.QuoteRune` (`%q` of a rune).
fn quote_rune(c: char) -> String {
    let quoted = go_quote(c.encode_utf8(&mut [0u8; 4]));
    let inner = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted);
    match c {
        '"' => "'\"'".to_owned(),
        '\'' => "'\\''".to_owned(),
        _ => format!("'{inner}'"),
    }
}

/// Go's `%#U`: `U+0063 'c'`, or `U+000A` for a rune that is not printable.
fn unicode_name(c: char) -> String {
    let quoted = go_quote(c.encode_utf8(&mut [0u8; 4]));
    let printable = matches!(c, '"' | '\\') || quoted.chars().count() == 3;
    if printable {
        format!("U+{:04X} '{c}'", u32::from(c))
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

/// What Go's lexer reports for the end of input where it wanted a rune (`%q` of `eof`).
const EOF_RUNE: char = '\u{FFFD}';

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

fn is_alpha(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_alphanumeric(c: char) -> bool {
    is_alpha(c) || c.is_ascii_digit()
}

/// A lexer error: message and byte offset (upstream reports the start of the token).
struct LexError {
    pos: usize,
    msg: String,
}

fn lex_error(pos: usize, msg: impl Into<String>) -> LexError {
    LexError {
        pos,
        msg: msg.into(),
    }
}

/// The subset of upstream's lexer a selector reaches: the top-level state (enough to name the
/// first token after a selector) and the inside of braces.
struct Lexer<'a> {
    input: &'a str,
    pos: usize,
    /// Width of the last rune read by [`Lexer::next_rune`], for [`Lexer::backup`].
    width: usize,
    brace_open: bool,
}

impl<'a> Lexer<'a> {
    fn new(input: &'a str) -> Self {
        Lexer {
            input,
            pos: 0,
            width: 0,
            brace_open: false,
        }
    }

    fn rest(&self) -> &'a str {
        self.input.get(self.pos..).unwrap_or("")
    }

    fn text(&self, start: usize) -> &'a str {
        self.input.get(start..self.pos).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Reads a rune (`None` at the end), remembering its width for one [`Lexer::backup`].
    fn next_rune(&mut self) -> Option<char> {
        let c = self.peek();
        self.width = c.map_or(0, char::len_utf8);
        self.pos += self.width;
        c
    }

    fn backup(&mut self) {
        self.pos = self.pos.saturating_sub(self.width);
        self.width = 0;
    }

    fn accept(&mut self, valid: &str) -> bool {
        if self.next_rune().is_some_and(|c| valid.contains(c)) {
            return true;
        }
        self.backup();
        false
    }

    fn accept_run(&mut self, valid: &str) {
        while self.accept(valid) {}
    }

    fn item(&self, kind: Kind, start: usize) -> Item<'a> {
        Item {
            kind,
            pos: start,
            text: self.text(start),
            value: Vec::new(),
        }
    }

    /// Skips whitespace and `#` comments (which run to the end of the line).
    fn skip_space(&mut self) {
        loop {
            let rest = self.rest();
            if rest.starts_with('#') {
                let len = rest.find(['\r', '\n']).unwrap_or(rest.len());
                self.pos += len;
            } else if self.peek().is_some_and(is_space) {
                self.next_rune();
            } else {
                return;
            }
        }
    }

    fn next_item(&mut self) -> Result<Item<'a>, LexError> {
        self.skip_space();
        let start = self.pos;
        if self.brace_open {
            self.inside_braces(start)
        } else {
            self.statements(start)
        }
    }

    /// Upstream's `lexStatements`, reduced to the first token after a selector.
    fn statements(&mut self, start: usize) -> Result<Item<'a>, LexError> {
        let Some(c) = self.next_rune() else {
            return Ok(self.item(Kind::Eof, start));
        };
        let kind = match c {
            ',' => Kind::Comma,
            '*' | '/' | '%' | '+' | '-' | '^' | '@' => Kind::Op,
            '=' => match self.peek() {
                Some('=') => {
                    self.next_rune();
                    Kind::Op
                }
                Some('~') => return Err(lex_error(start, "unexpected character after '=': '~'")),
                _ => Kind::Match(MatchType::Equal),
            },
            '!' => match self.next_rune() {
                Some('=') => Kind::Match(MatchType::NotEqual),
                other => {
                    let found = quote_rune(other.unwrap_or(EOF_RUNE));
                    return Err(lex_error(
                        start,
                        format!("unexpected character after '!': {found}"),
                    ));
                }
            },
            '<' | '>' => {
                if self.peek() == Some('=') {
                    self.next_rune();
                }
                Kind::Op
            }
            c if c.is_ascii_digit()
                || (c == '.' && self.peek().is_some_and(|d| d.is_ascii_digit())) =>
            {
                self.pos = start;
                return self.number_or_duration(start);
            }
            '"' | '\'' => return self.string(start, c),
            '`' => return self.raw_string(start),
            c if is_alpha(c) || c == ':' => {
                self.pos = start;
                return Ok(self.keyword_or_identifier(start));
            }
            '(' => Kind::LeftParen,
            // Upstream emits the parenthesis, then finds the depth negative: the error is
            // reported after it.
            ')' => return Err(lex_error(self.pos, "unexpected right parenthesis ')'")),
            '{' => {
                self.brace_open = true;
                Kind::LeftBrace
            }
            '[' => Kind::LeftBracket,
            ']' => return Err(lex_error(start, "unexpected right bracket ']'")),
            c => {
                let found = quote_rune(c);
                return Err(lex_error(start, format!("unexpected character: {found}")));
            }
        };
        Ok(self.item(kind, start))
    }

    /// Upstream's `lexInsideBraces`.
    fn inside_braces(&mut self, start: usize) -> Result<Item<'a>, LexError> {
        let Some(c) = self.next_rune() else {
            return Err(lex_error(start, "unexpected end of input inside braces"));
        };
        let kind = match c {
            c if is_alpha(c) => {
                while self.peek().is_some_and(is_alphanumeric) {
                    self.next_rune();
                }
                Kind::Identifier
            }
            ',' => Kind::Comma,
            '"' | '\'' => return self.string(start, c),
            '`' => return self.raw_string(start),
            '=' => {
                if self.peek() == Some('~') {
                    self.next_rune();
                    Kind::Match(MatchType::Regex)
                } else {
                    Kind::Match(MatchType::Equal)
                }
            }
            '!' => match self.next_rune() {
                Some('~') => Kind::Match(MatchType::NotRegex),
                Some('=') => Kind::Match(MatchType::NotEqual),
                other => {
                    let found = quote_rune(other.unwrap_or(EOF_RUNE));
                    return Err(lex_error(
                        start,
                        format!("unexpected character after '!' inside braces: {found}"),
                    ));
                }
            },
            '{' => return Err(lex_error(start, "unexpected left brace '{'")),
            '}' => {
                self.brace_open = false;
                Kind::RightBrace
            }
            c => {
                let found = quote_rune(c);
                return Err(lex_error(
                    start,
                    format!("unexpected character inside braces: {found}"),
                ));
            }
        };
        Ok(self.item(kind, start))
    }

    /// Upstream's `lexKeywordOrIdentifier` (outside braces).
    fn keyword_or_identifier(&mut self, start: usize) -> Item<'a> {
        while self.peek().is_some_and(|c| is_alphanumeric(c) || c == ':') {
            self.next_rune();
        }
        let word = self.text(start).to_ascii_lowercase();
        let kind = if word == "inf" || word == "nan" {
            Kind::Number
        } else if let Some(&(_, class, metric_name)) = KEYWORDS.iter().find(|(k, ..)| *k == word) {
            Kind::Keyword(class, metric_name)
        } else if word.contains(':') {
            Kind::MetricIdentifier
        } else {
            Kind::Identifier
        };
        self.item(kind, start)
    }

    /// Upstream's `lexNumberOrDuration`; only used to name a token after a selector.
    fn number_or_duration(&mut self, start: usize) -> Result<Item<'a>, LexError> {
        if self.scan_number() {
            return Ok(self.item(Kind::Number, start));
        }
        if self.accept_remaining_duration() {
            self.backup();
            return Ok(self.item(Kind::Duration, start));
        }
        let text = go_quote(self.text(start));
        Err(lex_error(
            start,
            format!("bad number or duration syntax: {text}"),
        ))
    }

    fn scan_number(&mut self) -> bool {
        let mut digits = "0123456789";
        if self.accept("0") && self.accept("xX") {
            digits = "0123456789abcdefABCDEF";
        }
        self.accept_run(digits);
        if self.accept(".") {
            self.accept_run(digits);
        }
        if self.accept("eE") {
            self.accept("+-");
            self.accept_run("0123456789");
        }
        !self.peek().is_some_and(is_alphanumeric)
    }

    fn accept_remaining_duration(&mut self) -> bool {
        if !self.accept("smhdwy") {
            return false;
        }
        self.accept("s");
        while self.accept("0123456789") {
            self.accept_run("0123456789");
            if !self.accept("smhdw") {
                return false;
            }
            self.accept("s");
        }
        !self.next_rune().is_some_and(is_alphanumeric)
    }

    /// Upstream's `lexString`/`lexEscape` for a `"…"` or `'…'` string; also decodes it, as
    /// `strutil.Unquote` would (the lexer has already refused what `Unquote` refuses).
    fn string(&mut self, start: usize, quote: char) -> Result<Item<'a>, LexError> {
        let mut value = Vec::new();
        loop {
            match self.next_rune() {
                None | Some('\n') => return Err(lex_error(start, "unterminated quoted string")),
                Some('\\') => self.escape(start, quote, &mut value)?,
                Some('\u{FFFD}') => return Err(lex_error(start, "invalid UTF-8 rune")),
                Some(c) if c == quote => break,
                Some(c) => value.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes()),
            }
        }
        let mut item = self.item(Kind::Str, start);
        item.value = value;
        Ok(item)
    }

    /// One escape sequence; the backslash has been read.
    fn escape(&mut self, start: usize, quote: char, value: &mut Vec<u8>) -> Result<(), LexError> {
        let Some(c) = self.next_rune() else {
            return Err(lex_error(start, "escape sequence not terminated"));
        };
        let simple = match c {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            c if c == quote => u8::try_from(c).ok(),
            _ => None,
        };
        if let Some(byte) = simple {
            value.push(byte);
            return Ok(());
        }
        // (digits, base, max, whether the value is a byte rather than a code point)
        let (mut n, base, max, is_byte, mut digit) = match c {
            '0'..='7' => (3, 8, 0xff, true, Some(c)),
            'x' => (2, 16, 0xff, true, self.next_rune()),
            'u' => (4, 16, 0x10_ffff, false, self.next_rune()),
            'U' => (8, 16, 0x10_ffff, false, self.next_rune()),
            c => {
                let name = unicode_name(c);
                return Err(lex_error(start, format!("unknown escape sequence {name}")));
            }
        };
        let mut x: u64 = 0;
        loop {
            let d = digit.and_then(|c| c.to_digit(16)).unwrap_or(16);
            if d >= base {
                return Err(match digit {
                    None => lex_error(start, "escape sequence not terminated"),
                    Some(c) => {
                        let name = unicode_name(c);
                        lex_error(
                            start,
                            format!("illegal character {name} in escape sequence"),
                        )
                    }
                });
            }
            x = x * u64::from(base) + u64::from(d);
            n -= 1;
            if n == 0 {
                break;
            }
            digit = self.next_rune();
        }
        let invalid = || lex_error(start, "escape sequence is an invalid Unicode code point");
        if x > max || (0xd800..0xe000).contains(&x) {
            return Err(invalid());
        }
        if is_byte {
            value.push(u8::try_from(x).map_err(|_| invalid())?);
        } else {
            let c = u32::try_from(x)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(invalid)?;
            value.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes());
        }
        Ok(())
    }

    /// Upstream's `lexRawString`.
    fn raw_string(&mut self, start: usize) -> Result<Item<'a>, LexError> {
        loop {
            match self.next_rune() {
                None => return Err(lex_error(start, "unterminated raw string")),
                Some('\u{FFFD}') => return Err(lex_error(start, "invalid UTF-8 rune")),
                Some('`') => break,
                Some(_) => {}
            }
        }
        let mut item = self.item(Kind::Str, start);
        let inner = item
            .text
            .strip_prefix('`')
            .and_then(|t| t.strip_suffix('`'))
            .unwrap_or("");
        item.value = inner.as_bytes().to_vec();
        Ok(item)
    }
}

/// The `vector_selector` part of upstream's `generated_parser.y`, by recursive descent. Each
/// `unexpected` mirrors one of the grammar's `error` productions.
struct Parser<'a> {
    input: &'a str,
    lex: Lexer<'a>,
}

/// The grammar's context for errors inside braces.
const LABEL_MATCHING: Option<&str> = Some("label matching");

impl<'a> Parser<'a> {
    fn error(&self, offset: usize, kind: SelectorErrorKind) -> SelectorError {
        SelectorError::new(self.input, offset, kind)
    }

    fn next(&mut self) -> Result<Item<'a>, SelectorError> {
        self.lex
            .next_item()
            .map_err(|e| SelectorError::new(self.input, e.pos, SelectorErrorKind::Lex(e.msg)))
    }

    fn unexpected(
        &self,
        item: &Item<'_>,
        context: Option<&'static str>,
        expected: Option<&'static str>,
    ) -> SelectorError {
        self.error(
            item.pos,
            SelectorErrorKind::Unexpected {
                found: item.describe(),
                context,
                expected,
            },
        )
    }

    fn parse(mut self) -> Result<Vec<Matcher>, SelectorError> {
        let first = self.next()?;
        let start = first.pos;
        let mut matchers = Vec::new();
        let mut name = None;
        let after = match first.kind {
            Kind::Identifier | Kind::MetricIdentifier | Kind::Keyword(_, true) => {
                name = Some(first.text);
                let next = self.next()?;
                if next.kind == Kind::LeftBrace {
                    self.label_matchers(&mut matchers)?;
                    self.next()?
                } else {
                    next
                }
            }
            Kind::LeftBrace => {
                self.label_matchers(&mut matchers)?;
                self.next()?
            }
            _ => return Err(self.unexpected(&first, None, None)),
        };
        if after.kind != Kind::Eof {
            return Err(self.unexpected(&after, None, None));
        }
        if let Some(name) = name {
            let matcher = Matcher::new(MatchType::Equal, METRIC_NAME, name)
                .map_err(|e| self.error(start, SelectorErrorKind::InvalidMatcher(e)))?;
            matchers.push(matcher);
        }
        if matchers.iter().all(Matcher::matches_empty) {
            return Err(self.error(start, SelectorErrorKind::EmptySelector));
        }
        Ok(matchers)
    }

    /// The matchers after `{`, through the closing `}`.
    fn label_matchers(&mut self, out: &mut Vec<Matcher>) -> Result<(), SelectorError> {
        let mut item = self.next()?;
        if item.kind == Kind::RightBrace {
            return Ok(());
        }
        loop {
            if item.kind != Kind::Identifier {
                return Err(self.unexpected(&item, LABEL_MATCHING, Some("identifier or \"}\"")));
            }
            out.push(self.label_matcher(&item)?);
            let sep = self.next()?;
            match sep.kind {
                Kind::RightBrace => return Ok(()),
                Kind::Comma => {
                    item = self.next()?;
                    if item.kind == Kind::RightBrace {
                        return Ok(());
                    }
                }
                _ => return Err(self.unexpected(&sep, LABEL_MATCHING, Some("\",\" or \"}\""))),
            }
        }
    }

    /// `label op string`; the label has been read.
    fn label_matcher(&mut self, label: &Item<'_>) -> Result<Matcher, SelectorError> {
        let op = self.next()?;
        let Kind::Match(kind) = op.kind else {
            return Err(self.unexpected(&op, LABEL_MATCHING, Some("label matching operator")));
        };
        let value = self.next()?;
        if value.kind != Kind::Str {
            return Err(self.unexpected(&value, LABEL_MATCHING, Some("string")));
        }
        let pos = value.pos;
        let literal = value.text;
        let value = String::from_utf8(value.value).map_err(|_| {
            self.error(
                pos,
                SelectorErrorKind::InvalidUtf8 {
                    literal: go_quote(literal),
                },
            )
        })?;
        Matcher::new(kind, label.text, value)
            .map_err(|e| self.error(label.pos, SelectorErrorKind::InvalidMatcher(e)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn runes_are_quoted_and_named_like_go() {
        let quoted = [
            ('a', "'a'"),
            ('\'', r"'\''"),
            ('"', r#"'"'"#),
            ('\\', r"'\\'"),
            ('\n', r"'\n'"),
            ('\u{1}', r"'\x01'"),
            ('é', "'é'"),
            ('\u{FFFD}', "'\u{FFFD}'"),
            ('\u{200B}', r"'\u200b'"),
        ];
        for (c, want) in quoted {
            assert_eq!(quote_rune(c), want, "{c:?}");
        }
        let named = [
            ('c', "U+0063 'c'"),
            ('.', "U+002E '.'"),
            ('"', "U+0022 '\"'"),
            ('\\', "U+005C '\\'"),
            ('\n', "U+000A"),
            ('😀', "U+1F600 '😀'"),
        ];
        for (c, want) in named {
            assert_eq!(unicode_name(c), want, "{c:?}");
        }
    }

    #[test]
    fn long_token_texts_are_cut_to_ten_runes() {
        assert_eq!(short_quote("\"abc\""), r#""\"abc\"""#);
        assert_eq!(short_quote("\"abcdefghijk\""), r#""\"abcdefghi"..."#);
        assert_eq!(short_quote("\"ééééééééééé\""), r#""\"ééééééééé"..."#);
    }

    #[test]
    fn positions_count_lines_and_bytes_from_one() {
        let cases = [
            ("up", 0, 1, 1),
            ("up", 2, 1, 3),
            ("a\nbc", 3, 2, 2),
            ("a\nb\n", 4, 3, 1),
            ("é{", 2, 1, 3),
        ];
        for (input, offset, line, column) in cases {
            let err = SelectorError::new(input, offset, SelectorErrorKind::EmptySelector);
            assert_eq!(
                (err.line, err.column),
                (line, column),
                "{input:?} at {offset}"
            );
        }
    }

    #[test]
    fn tokens_after_a_selector_are_described_like_upstream() {
        let cases = [
            ("5", "number \"5\""),
            ("5m", "duration \"5m\""),
            ("1234567890123", "number \"1234567890\"..."),
            ("a:b", "metric identifier \"a:b\""),
            ("sum", "<aggr:sum>"),
            ("OFFSET", "<OFFSET>"),
            ("and", "<op:and>"),
            ("start", "\"start\""),
            ("NaN", "number \"NaN\""),
            ("!=", "<op:!=>"),
            ("==", "<op:==>"),
            ("=", "\"=\""),
            ("<=", "<op:<=>"),
            ("(", "\"(\""),
            ("", "end of input"),
        ];
        for (input, want) in cases {
            let item = Lexer::new(input).next_item().ok().unwrap();
            assert_eq!(item.describe(), want, "{input:?}");
        }
    }

    #[test]
    fn bad_numbers_report_what_upstream_consumed() {
        for (input, want) in [
            ("5mx", "bad number or duration syntax: \"5mx\""),
            ("0deadbeef", "bad number or duration syntax: \"0de\""),
            ("1y2", "bad number or duration syntax: \"1y2\""),
        ] {
            let Err(err) = Lexer::new(input).next_item() else {
                panic!("{input:?} lexed");
            };
            assert_eq!(err.msg, want);
            assert_eq!(err.pos, 0);
        }
    }
}
