//! Translation of Go RE2 syntax (what Prometheus's `regexp` accepts) into
//! the `regex` crate's syntax, so that a pattern means the same thing here as
//! in Prometheus 2.42 (Go `regexp/syntax` with the `Perl` flags, as vendored
//! by `github.com/grafana/regexp`).
//!
//! It is a single-pass tokenizer that mirrors Go's parser at the lexical
//! level: every escape, class member and flag group is validated the way Go
//! validates it (so patterns Go rejects are rejected with Go's wording) and
//! re-emitted in an unambiguous Rust form. Structure (missing repeat
//! arguments and the like) is left to the `regex` crate's parser. See the
//! module docs of [`super::matcher`] for the list of translations and of the
//! differences that remain.

use std::fmt::Write as _;

/// Go's limit on a counted repetition `x{n,m}` (`n, m <= 1000`).
const MAX_REPEAT: i64 = 1000;

/// A class body that matches nothing (used for surrogate code points, which
/// Go accepts in escapes but which can never occur in a Rust `&str`).
const EMPTY_CLASS: &str = r"[^\x{0}-\x{10FFFF}]";

/// Go's Unicode general categories (`unicode.Categories`); `C` and `Cs`
/// are special cased: Go's `C` has no unassigned code points (`Cn`) while
/// the regex crate's `\pC` includes them, and the regex crate has no `Cs`.
const CATEGORIES: &[&str] = &[
    "Cc", "Cf", "Co", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N", "Nd", "Nl",
    "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So", "Z", "Zl",
    "Zp", "Zs",
];

/// Go's ASCII classes `[:name:]`, as class bodies (from the table in Go's
/// `regexp/syntax` docs).
const POSIX_CLASSES: &[(&str, &str)] = &[
    ("alnum", "0-9A-Za-z"),
    ("alpha", "A-Za-z"),
    ("ascii", r"\x{0}-\x{7F}"),
    ("blank", r"\x{9}\x{20}"),
    ("cntrl", r"\x{0}-\x{1F}\x{7F}"),
    ("digit", "0-9"),
    ("graph", r"\x{21}-\x{7E}"),
    ("lower", "a-z"),
    ("print", r"\x{20}-\x{7E}"),
    (
        "punct",
        r"\x{21}-\x{2F}\x{3A}-\x{40}\x{5B}-\x{60}\x{7B}-\x{7E}",
    ),
    ("space", r"\x{9}-\x{D}\x{20}"),
    ("upper", "A-Z"),
    ("word", "0-9A-Za-z_"),
    ("xdigit", "0-9A-Fa-f"),
];

/// Go's Perl classes, which are ASCII-only: `(escape letter, negated, body)`.
fn perl_class(c: char) -> Option<(bool, &'static str)> {
    match c {
        'd' => Some((false, "0-9")),
        'D' => Some((true, "0-9")),
        's' => Some((false, r"\x{9}\x{A}\x{C}\x{D}\x{20}")),
        'S' => Some((true, r"\x{9}\x{A}\x{C}\x{D}\x{20}")),
        'w' => Some((false, "0-9A-Za-z_")),
        'W' => Some((true, "0-9A-Za-z_")),
        _ => None,
    }
}

/// Translates a Go RE2 pattern into an equivalent `regex` crate pattern
/// (not anchored; the caller wraps it). The error is the reason, worded like
/// Go's `regexp/syntax` errors.
pub(crate) fn translate(pattern: &str) -> Result<String, String> {
    let mut t = Translator {
        src: pattern,
        pos: 0,
        out: String::with_capacity(pattern.len() + 16),
        depth: 0,
    };
    t.run()?;
    Ok(t.out)
}

fn error(code: &str, expr: &str) -> String {
    format!("{code}: `{expr}`")
}

struct Translator<'a> {
    src: &'a str,
    pos: usize,
    out: String,
    /// Open groups, to reject unbalanced `)` like Go does (the caller's
    /// `^(?:…)$` wrapper would otherwise hide `a)|(b`).
    depth: usize,
}

impl<'a> Translator<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn since(&self, start: usize) -> &'a str {
        self.src.get(start..self.pos).unwrap_or("")
    }

    fn run(&mut self) -> Result<(), String> {
        // Start of the repetition operator just before the current token, if
        // the previous token was one (Go rejects `a**`, `a+?+`, `a{2}{3}`).
        let mut last_repeat: Option<usize> = None;
        while let Some(c) = self.peek() {
            let start = self.pos;
            let mut repeat = None;
            match c {
                '(' if self.rest().starts_with("(?") => self.group_flags()?,
                '(' => {
                    self.bump();
                    self.depth += 1;
                    self.out.push('(');
                }
                ')' => {
                    if self.depth == 0 {
                        return Err(error("unexpected )", self.src));
                    }
                    self.bump();
                    self.depth -= 1;
                    self.out.push(')');
                }
                '|' | '^' | '$' | '.' => {
                    self.bump();
                    self.out.push(c);
                }
                '[' => self.class()?,
                '*' | '+' | '?' => {
                    self.bump();
                    self.finish_repeat(start, last_repeat)?;
                    repeat = Some(start);
                }
                '{' => match parse_repeat(self.rest()) {
                    Some((min, max, len)) => {
                        self.pos += len;
                        if min > MAX_REPEAT || max > MAX_REPEAT || (max >= 0 && min > max) {
                            return Err(error("invalid repeat count", self.since(start)));
                        }
                        self.finish_repeat(start, last_repeat)?;
                        repeat = Some(start);
                    }
                    None => {
                        // Not a valid repetition: Go takes `{` literally.
                        self.bump();
                        self.out.push_str(r"\{");
                    }
                },
                '\\' => self.escape()?,
                _ => {
                    self.bump();
                    push_literal(&mut self.out, u32::from(c));
                }
            }
            last_repeat = repeat;
        }
        if self.depth > 0 {
            return Err(error("missing closing )", self.src));
        }
        Ok(())
    }

    /// After a repetition operator at `start` (already consumed, except the
    /// lazy `?`): checks nesting and copies it out.
    fn finish_repeat(&mut self, start: usize, last_repeat: Option<usize>) -> Result<(), String> {
        if self.peek() == Some('?') {
            self.bump();
        }
        if let Some(prev) = last_repeat {
            let expr = self.src.get(prev..self.pos).unwrap_or("");
            return Err(error("invalid nested repetition operator", expr));
        }
        let op = self.since(start);
        if op.starts_with('{') {
            // Re-emit normalized (Go and Rust agree on the meaning).
            if let Some((min, max, len)) = parse_repeat(op) {
                let lazy = if op.len() > len { "?" } else { "" };
                match max {
                    -1 => write!(self.out, "{{{min},}}{lazy}"),
                    m if m == min => write!(self.out, "{{{min}}}{lazy}"),
                    m => write!(self.out, "{{{min},{m}}}{lazy}"),
                }
                .map_err(|e| e.to_string())?;
                return Ok(());
            }
        }
        self.out.push_str(op);
        Ok(())
    }

    /// `(?…`: a named group `(?P<name>`, or flags `(?imsU-imsU)` /
    /// `(?flags:`. Everything else (`(?<name>`, `(?x)`, `(?#…)`, `(?=`) is
    /// an error, as in the grafana/regexp parser used by Prometheus 2.42.
    fn group_flags(&mut self) -> Result<(), String> {
        let start = self.pos;
        let rest = self.rest();
        if rest.len() > 4 && rest.starts_with("(?P<") {
            let Some(end) = rest.find('>') else {
                return Err(error("invalid named capture", rest));
            };
            let name = rest.get(4..end).unwrap_or("");
            if name.is_empty() || !name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()) {
                return Err(error(
                    "invalid named capture",
                    rest.get(..=end).unwrap_or(rest),
                ));
            }
            // Names are irrelevant for matching; a plain group avoids the
            // regex crate's stricter name rules (Go allows `(?P<1>`) and
            // its duplicate-name check.
            self.pos += end + 1;
            self.depth += 1;
            self.out.push('(');
            return Ok(());
        }

        self.pos += 2; // "(?"
        let mut set = String::new();
        let mut clear = String::new();
        let mut negated = false;
        let mut saw_flag = false;
        while let Some(c) = self.bump() {
            match c {
                'i' | 'm' | 's' | 'U' => {
                    let (add, remove) = if negated {
                        (&mut clear, &mut set)
                    } else {
                        (&mut set, &mut clear)
                    };
                    remove.retain(|f| f != c);
                    if !add.contains(c) {
                        add.push(c);
                    }
                    saw_flag = true;
                }
                '-' if !negated => {
                    negated = true;
                    saw_flag = false;
                }
                // Go: a `-` must be followed by at least one flag.
                ':' | ')' if !negated || saw_flag => {
                    let flags = if clear.is_empty() {
                        set
                    } else {
                        format!("{set}-{clear}")
                    };
                    if c == ':' {
                        self.depth += 1;
                        self.out.push_str("(?");
                        self.out.push_str(&flags);
                        self.out.push(':');
                    } else if !flags.is_empty() {
                        self.out.push_str("(?");
                        self.out.push_str(&flags);
                        self.out.push(')');
                    }
                    return Ok(());
                }
                _ => break,
            }
        }
        Err(error(
            "invalid or unsupported Perl syntax",
            self.since(start),
        ))
    }

    /// A backslash outside a class.
    fn escape(&mut self) -> Result<(), String> {
        let start = self.pos;
        self.bump(); // '\'
        let Some(c) = self.peek() else {
            return Err(error("trailing backslash at end of expression", ""));
        };
        match c {
            'A' | 'z' => {
                self.bump();
                self.out.push('\\');
                self.out.push(c);
            }
            // Go's word boundary is ASCII-only.
            'b' | 'B' => {
                self.bump();
                self.out.push_str("(?-u:\\");
                self.out.push(c);
                self.out.push(')');
            }
            'C' => {
                self.bump();
                return Err(error("invalid escape sequence", self.since(start)));
            }
            'Q' => {
                // \Q…\E (or to the end): all literal. The regex crate has no \Q.
                self.bump();
                let rest = self.rest();
                let (lit, used) = match rest.find("\\E") {
                    Some(i) => (rest.get(..i).unwrap_or(""), i + 2),
                    None => (rest, rest.len()),
                };
                for ch in lit.chars() {
                    push_literal(&mut self.out, u32::from(ch));
                }
                self.pos += used;
            }
            'p' | 'P' => {
                let (negated, body) = self.unicode_class(start)?;
                push_class(&mut self.out, negated, &body);
            }
            _ => {
                if let Some((negated, body)) = perl_class(c) {
                    self.bump();
                    push_class(&mut self.out, negated, body);
                } else {
                    self.pos = start;
                    let cp = self.single_escape()?;
                    push_literal(&mut self.out, cp);
                }
            }
        }
        Ok(())
    }

    /// Go's `parseEscape` at a backslash: a single code point (which may be a
    /// surrogate; the caller deals with that).
    fn single_escape(&mut self) -> Result<u32, String> {
        let start = self.pos;
        self.bump(); // '\'
        let Some(c) = self.bump() else {
            return Err(error("trailing backslash at end of expression", ""));
        };
        let invalid = |t: &Self| Err(error("invalid escape sequence", t.since(start)));
        match c {
            // Escaped punctuation is always itself (`\_` too).
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok(u32::from(c)),
            '1'..='7' | '0' => {
                // A lone non-zero digit would be a backreference: unsupported.
                if c != '0' && !matches!(self.peek(), Some('0'..='7')) {
                    return invalid(self);
                }
                let mut value = c.to_digit(8).unwrap_or(0);
                for _ in 1..3 {
                    match self.peek().and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            value = value * 8 + d;
                            self.bump();
                        }
                        None => break,
                    }
                }
                Ok(value)
            }
            'x' => {
                let Some(first) = self.bump() else {
                    return invalid(self);
                };
                if first == '{' {
                    let mut value: u32 = 0;
                    let mut digits = 0;
                    loop {
                        match self.bump() {
                            Some('}') if digits > 0 => return Ok(value),
                            Some(d) => match d.to_digit(16) {
                                Some(v) => {
                                    value = value * 16 + v;
                                    digits += 1;
                                    if value > 0x10_FFFF {
                                        return invalid(self);
                                    }
                                }
                                None => return invalid(self),
                            },
                            None => return invalid(self),
                        }
                    }
                }
                let second = self.bump();
                match (first.to_digit(16), second.and_then(|s| s.to_digit(16))) {
                    (Some(x), Some(y)) => Ok(x * 16 + y),
                    _ => invalid(self),
                }
            }
            'a' => Ok(0x07),
            'f' => Ok(0x0c),
            'n' => Ok(0x0a),
            'r' => Ok(0x0d),
            't' => Ok(0x09),
            'v' => Ok(0x0b),
            _ => invalid(self),
        }
    }

    /// `\pN`, `\p{Name}`, `\PN`, `\P{Name}`, `\p{^Name}` at `start` (the
    /// backslash). Returns `(negated, class body)`. grafana/regexp accepts
    /// `Any`, the general categories and the script names, spelled exactly;
    /// names of other shapes are rejected here and scripts are looked up as
    /// `sc=Name`, so the regex crate rejects non-script properties such as
    /// `Alphabetic`.
    fn unicode_class(&mut self, start: usize) -> Result<(bool, String), String> {
        self.pos = start + 1;
        let mut negated = self.bump() == Some('P');
        let name = match self.bump() {
            Some('{') => {
                let rest = self.rest();
                let Some(end) = rest.find('}') else {
                    return Err(error(
                        "invalid character class range",
                        self.src.get(start..).unwrap_or(""),
                    ));
                };
                self.pos += end + 1;
                rest.get(..end).unwrap_or("")
            }
            Some(_) | None => self.src.get(start + 2..self.pos).unwrap_or(""),
        };
        let seq = self.since(start);
        let name = match name.strip_prefix('^') {
            Some(stripped) => {
                negated = !negated;
                stripped
            }
            None => name,
        };
        let body = if name == "Any" {
            r"\x{0}-\x{10FFFF}".to_string()
        } else if name == "C" {
            // Go's C is Cc|Cf|Co|Cs; surrogates (Cs) never occur in a `&str`
            // and the regex crate has no Cs table.
            r"\p{Cc}\p{Cf}\p{Co}".to_string()
        } else if name == "Cs" {
            EMPTY_CLASS.to_string()
        } else if CATEGORIES.contains(&name) {
            format!(r"\p{{{name}}}")
        } else if name.starts_with(|c: char| c.is_ascii_uppercase())
            && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
        {
            format!(r"\p{{sc={name}}}")
        } else {
            return Err(error("invalid character class range", seq));
        };
        Ok((negated, body))
    }

    /// A bracketed class, mirroring Go's `parseClass`. Every member is
    /// re-emitted escaped, so the regex crate's class set operations
    /// (`&&`, `--`, `~~`) and nested `[` never apply.
    fn class(&mut self) -> Result<(), String> {
        let class_start = self.pos;
        self.bump(); // '['
        let mut body = String::new();
        let negated = self.peek() == Some('^');
        if negated {
            self.bump();
        }
        let mut first = true; // `]` is a literal as the first member
        loop {
            let rest = self.rest();
            match rest.chars().next() {
                None => {
                    return Err(error(
                        "missing closing ]",
                        self.src.get(class_start..).unwrap_or(""),
                    ));
                }
                Some(']') if !first => {
                    self.bump();
                    break;
                }
                _ => {}
            }
            first = false;

            // POSIX class [:alpha:] / [:^alpha:]. Like Go, look for ":]"
            // anywhere after, and reject unknown names.
            if rest.len() > 2 && rest.starts_with("[:") {
                if let Some(i) = rest.get(2..).and_then(|r| r.find(":]")) {
                    let whole = rest.get(..i + 4).unwrap_or(rest);
                    let inner = whole.get(2..whole.len() - 2).unwrap_or("");
                    let (neg, name) = match inner.strip_prefix('^') {
                        Some(n) => (true, n),
                        None => (false, inner),
                    };
                    let Some((_, class_body)) = POSIX_CLASSES.iter().find(|(n, _)| *n == name)
                    else {
                        return Err(error("invalid character class range", whole));
                    };
                    push_class(&mut body, neg, class_body);
                    self.pos += whole.len();
                    continue;
                }
            }

            if rest.starts_with("\\p") || rest.starts_with("\\P") {
                let (neg, class_body) = self.unicode_class(self.pos)?;
                push_class(&mut body, neg, &class_body);
                continue;
            }

            if let Some((neg, class_body)) = rest
                .strip_prefix('\\')
                .and_then(|r| r.chars().next())
                .and_then(perl_class)
            {
                self.pos += 2;
                push_class(&mut body, neg, class_body);
                continue;
            }

            // A single character or a range.
            let range_start = self.pos;
            let lo = self.class_char(class_start)?;
            let mut hi = lo;
            let rest = self.rest();
            if rest.len() >= 2
                && rest.starts_with('-')
                && !rest.get(1..).unwrap_or("").starts_with(']')
            {
                self.bump();
                hi = self.class_char(class_start)?;
                if hi < lo {
                    return Err(error(
                        "invalid character class range",
                        self.since(range_start),
                    ));
                }
            }
            push_range(&mut body, lo, hi);
        }
        push_class(&mut self.out, negated, &body);
        Ok(())
    }

    /// One class member character (Go's `parseClassChar`).
    fn class_char(&mut self, class_start: usize) -> Result<u32, String> {
        match self.peek() {
            None => Err(error(
                "missing closing ]",
                self.src.get(class_start..).unwrap_or(""),
            )),
            Some('\\') => self.single_escape(),
            Some(c) => {
                self.bump();
                Ok(u32::from(c))
            }
        }
    }
}

/// Go's `parseRepeat` on text starting with `{`: `{n}`, `{n,}` or `{n,m}`
/// with no leading zeros. Returns `(min, max, bytes)` with `max == -1` for
/// "unbounded"; `None` when the `{` is a literal. Numbers are saturated, so a
/// huge count still fails the caller's `<= 1000` check, as in Go.
fn parse_repeat(s: &str) -> Option<(i64, i64, usize)> {
    let b = s.as_bytes();
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut i = 1;
    let (min, used) = parse_int(b.get(i..)?)?;
    i += used;
    let max = match b.get(i)? {
        b',' => {
            i += 1;
            if *b.get(i)? == b'}' {
                -1
            } else {
                let (max, used) = parse_int(b.get(i..)?)?;
                i += used;
                max
            }
        }
        _ => min,
    };
    if b.get(i) != Some(&b'}') {
        return None;
    }
    Some((min, max, i + 1))
}

/// Go's `parseInt`: decimal digits, no leading zeros (saturating).
fn parse_int(b: &[u8]) -> Option<(i64, usize)> {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || (digits >= 2 && b.first() == Some(&b'0')) {
        return None;
    }
    let n = b.iter().take(digits).fold(0i64, |n, d| {
        (n * 10 + i64::from(d - b'0')).min(1_000_000_000)
    });
    Some((n, digits))
}

/// Appends `[body]` or `[^body]`.
fn push_class(out: &mut String, negated: bool, body: &str) {
    out.push('[');
    if negated {
        out.push('^');
    }
    out.push_str(body);
    out.push(']');
}

fn is_surrogate(cp: u32) -> bool {
    (0xD800..=0xDFFF).contains(&cp)
}

/// Appends a literal code point outside a class.
fn push_literal(out: &mut String, cp: u32) {
    match char::from_u32(cp) {
        Some(c) => {
            if matches!(
                c,
                '\\' | '.'
                    | '+'
                    | '*'
                    | '?'
                    | '('
                    | ')'
                    | '|'
                    | '['
                    | ']'
                    | '{'
                    | '}'
                    | '^'
                    | '$'
                    | '#'
                    | '&'
                    | '-'
                    | '~'
            ) {
                out.push('\\');
            }
            out.push(c);
        }
        // A surrogate (Go accepts `\x{D800}`): matches nothing in UTF-8 text.
        None => out.push_str(EMPTY_CLASS),
    }
}

/// Appends the range `lo..=hi` as class members, minus surrogates.
fn push_range(body: &mut String, lo: u32, hi: u32) {
    let mut pieces = Vec::with_capacity(2);
    if lo <= 0xD7FF {
        pieces.push((lo, hi.min(0xD7FF)));
    }
    if hi >= 0xE000 {
        pieces.push((lo.max(0xE000), hi));
    }
    if pieces.is_empty() {
        debug_assert!(is_surrogate(lo) && is_surrogate(hi));
        body.push_str(EMPTY_CLASS);
        return;
    }
    for (lo, hi) in pieces {
        // Writing to a String cannot fail.
        let _ = if lo == hi {
            write!(body, r"\x{{{lo:X}}}")
        } else {
            write!(body, r"\x{{{lo:X}}}-\x{{{hi:X}}}")
        };
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn translations_are_as_expected() {
        let cases = [
            ("literal text passes through", "foo", "foo"),
            ("perl classes become ASCII classes", r"\d\D", r"[0-9][^0-9]"),
            (
                "word boundaries become ASCII",
                r"\bx\B",
                r"(?-u:\b)x(?-u:\B)",
            ),
            (
                "perl classes nest inside brackets",
                r"[\d_]",
                r"[[0-9]\x{5F}]",
            ),
            (
                "negated perl class inside negated bracket",
                r"[^\D]",
                r"[^[^0-9]]",
            ),
            ("escaped backslash stays literal", r"\\d", r"\\d"),
            ("quoted text is escaped", r"\Qa.b\E+", r"a\.b+"),
            ("unterminated quote runs to the end", r"\Q(x", r"\(x"),
            ("octal escapes become literals", r"\012\0", "\n\u{0}"),
            (
                "hex escapes become literals",
                r"\x41\x{1F600}",
                "A\u{1F600}",
            ),
            ("angle brackets are literal in Go", r"\<a\>", "<a>"),
            (
                "invalid repeat braces are literal",
                r"a{,3}b{01}c{",
                r"a\{,3\}b\{01\}c\{",
            ),
            (
                "valid repeats are normalized",
                r"a{2}b{2,}c{2,3}?",
                r"a{2}b{2,}c{2,3}?",
            ),
            (
                "set operations are literal in Go classes",
                r"[a&&b]",
                r"[\x{61}\x{26}\x{26}\x{62}]",
            ),
            (
                "posix classes become ranges",
                r"[[:^digit:]x]",
                r"[[^0-9]\x{78}]",
            ),
            (
                "the C category excludes unassigned",
                r"\pC",
                r"[\p{Cc}\p{Cf}\p{Co}]",
            ),
            (
                "surrogates are an empty class",
                r"\P{Cs}",
                r"[^[^\x{0}-\x{10FFFF}]]",
            ),
            (
                "scripts are looked up as scripts",
                r"\p{^Greek}",
                r"[^\p{sc=Greek}]",
            ),
            ("named groups become plain groups", r"(?P<1x>a)", "(a)"),
            ("empty flag groups vanish", "(?)a", "a"),
            ("repeated flags are normalized", "(?ii-i:a)", "(?-i:a)"),
            ("a leading bracket is a member", r"[]a]", r"[\x{5D}\x{61}]"),
            (
                "surrogates match nothing",
                r"\x{D800}",
                r"[^\x{0}-\x{10FFFF}]",
            ),
        ];
        for (what, go, rust) in cases {
            assert_eq!(translate(go).as_deref(), Ok(rust), "{what}");
        }
    }

    #[test]
    fn go_rejections_are_mirrored() {
        let cases = [
            (
                "nested star",
                "a**",
                "invalid nested repetition operator: `**`",
            ),
            (
                "possessive plus",
                "a++",
                "invalid nested repetition operator: `++`",
            ),
            (
                "lazy then star",
                "a*?*",
                "invalid nested repetition operator: `*?*`",
            ),
            (
                "repeat of a repeat",
                "a{2}{3}",
                "invalid nested repetition operator: `{2}{3}`",
            ),
            (
                "repeat count over 1000",
                "a{1001}",
                "invalid repeat count: `{1001}`",
            ),
            ("min above max", "a{3,2}", "invalid repeat count: `{3,2}`"),
            ("any-byte escape", r"\C", "invalid escape sequence: `\\C`"),
            (
                "unicode escape",
                r"\u0041",
                "invalid escape sequence: `\\u`",
            ),
            ("backreference", r"(a)\1", "invalid escape sequence: `\\1`"),
            (
                "backspace in a class",
                r"[\b]",
                "invalid escape sequence: `\\b`",
            ),
            ("upper-case Z", r"a\Z", "invalid escape sequence: `\\Z`"),
            (
                "trailing backslash",
                "a\\",
                "trailing backslash at end of expression: ``",
            ),
            ("unbalanced close", "a)|(b", "unexpected ): `a)|(b`"),
            ("unbalanced open", "(a", "missing closing ): `(a`"),
            ("unclosed class", "[a", "missing closing ]: `[a`"),
            (
                "reversed range",
                "[z-a]",
                "invalid character class range: `z-a`",
            ),
            (
                "unknown posix class",
                "[[:foo:]]",
                "invalid character class range: `[:foo:]`",
            ),
            (
                "lower-case property",
                r"\p{greek}",
                "invalid character class range: `\\p{greek}`",
            ),
            (
                "dotnet named group",
                "(?<n>a)",
                "invalid or unsupported Perl syntax: `(?<`",
            ),
            (
                "verbose flag",
                "(?x)a",
                "invalid or unsupported Perl syntax: `(?x`",
            ),
            (
                "dangling negation",
                "(?i-)a",
                "invalid or unsupported Perl syntax: `(?i-)`",
            ),
            (
                "bad capture name",
                "(?P<a-b>x)",
                "invalid named capture: `(?P<a-b>`",
            ),
        ];
        for (what, go, reason) in cases {
            assert_eq!(translate(go), Err(reason.to_string()), "{what}");
        }
    }

    #[test]
    fn parse_repeat_follows_go() {
        assert_eq!(parse_repeat("{3}"), Some((3, 3, 3)));
        assert_eq!(parse_repeat("{3,}x"), Some((3, -1, 4)));
        assert_eq!(parse_repeat("{3,5}"), Some((3, 5, 5)));
        assert_eq!(parse_repeat("{0}"), Some((0, 0, 3)));
        assert_eq!(parse_repeat("{}"), None);
        assert_eq!(parse_repeat("{,5}"), None);
        assert_eq!(parse_repeat("{05}"), None);
        assert_eq!(parse_repeat("{5"), None);
        assert_eq!(
            parse_repeat("{99999999999999999999}").map(|r| r.0),
            Some(1_000_000_000)
        );
        assert_eq!(
            translate("a{1,99999999999999999999}"),
            Err("invalid repeat count: `{1,99999999999999999999}`".to_string())
        );
    }
}
