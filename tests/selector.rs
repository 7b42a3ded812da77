//! `parse_selector` against Prometheus 2.42's `ParseMetricSelector`.
//!
//! The table's cases come, where marked `upstream`, from Prometheus's
//! `promql/parser/parse_test.go` (the `testExpr` "Test Vector selector", "Preprocessors" and
//! "String quoting and escape sequence interpretation" sections, `TestParseSeries` and
//! `TestExtractSelectors`, 2.4x), wrapped in a selector where upstream tests a bare string.
//! Upstream checks those through `ParseExpr`; where `ParseMetricSelector` (what the admin API
//! calls) or cairn's choices differ, the case says so. The other cases follow upstream's
//! `lex.go` and `generated_parser.y`.
//!
//! The property tests fuzz arbitrary and mutated inputs (no panic, well-formed errors) and check
//! that any selector rendered from random matchers, with every quoting and escape style and
//! random whitespace and comments, parses back to those matchers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cairn::model::{parse_selector, MatchType, Matcher, SelectorErrorKind};
use proptest::prelude::*;

const EQ: MatchType = MatchType::Equal;
const NE: MatchType = MatchType::NotEqual;
const RE: MatchType = MatchType::Regex;
const NRE: MatchType = MatchType::NotRegex;

enum Want {
    /// The matchers, in order: (operator, label name, value).
    Matchers(&'static [(MatchType, &'static str, &'static str)]),
    /// A substring of the error's `Display`.
    Error(&'static str),
}

use Want::{Error as E, Matchers as M};

const EMPTY: &str = "vector selector must contain at least one non-empty matcher";

#[rustfmt::skip]
const CASES: &[(&str, &str, Want)] = &[
    // --- upstream parse_test.go, "Test Vector selector" ---
    ("upstream", "foo", M(&[(EQ, "__name__", "foo")])),
    ("upstream: an aggregator is a metric name", "min", M(&[(EQ, "__name__", "min")])),
    ("upstream: name matcher last", r#"foo:bar{a="bc"}"#, M(&[(EQ, "a", "bc"), (EQ, "__name__", "foo:bar")])),
    ("upstream", "foo{NaN='bc'}", M(&[(EQ, "NaN", "bc"), (EQ, "__name__", "foo")])),
    ("upstream", "foo{bar='}'}", M(&[(EQ, "bar", "}"), (EQ, "__name__", "foo")])),
    ("upstream", r#"foo{a="b", foo!="bar", test=~"test", bar!~"baz"}"#,
        M(&[(EQ, "a", "b"), (NE, "foo", "bar"), (RE, "test", "test"), (NRE, "bar", "baz"), (EQ, "__name__", "foo")])),
    ("upstream: trailing comma", r#"foo{a="b", foo!="bar", test=~"test", bar!~"baz",}"#,
        M(&[(EQ, "a", "b"), (NE, "foo", "bar"), (RE, "test", "test"), (NRE, "bar", "baz"), (EQ, "__name__", "foo")])),
    ("upstream", "{", E("1:2: parse error: unexpected end of input inside braces")),
    ("upstream", "}", E("1:1: parse error: unexpected character: '}'")),
    ("upstream", "some{", E("1:6: parse error: unexpected end of input inside braces")),
    ("upstream", "some}", E("1:5: parse error: unexpected character: '}'")),
    ("upstream", "some_metric{a=b}", E(r#"1:15: parse error: unexpected identifier "b" in label matching, expected string"#)),
    ("upstream", r#"some_metric{a:b="b"}"#, E("1:14: parse error: unexpected character inside braces: ':'")),
    ("upstream", r#"foo{a*"b"}"#, E("1:6: parse error: unexpected character inside braces: '*'")),
    ("upstream", r#"foo{a>="b"}"#, E("1:6: parse error: unexpected character inside braces: '>'")),
    // Upstream's input has a raw 0xff byte; a &str cannot, and Go's lexer treats U+FFFD alike.
    ("upstream", "some_metric{a=\"\u{FFFD}\"}", E("1:15: parse error: invalid UTF-8 rune")),
    ("upstream", "foo{gibberish}", E(r#"1:14: parse error: unexpected "}" in label matching, expected label matching operator"#)),
    ("upstream", "foo{1}", E("1:5: parse error: unexpected character inside braces: '1'")),
    ("upstream", "{}", E(EMPTY)),
    ("upstream", r#"{x=""}"#, E(EMPTY)),
    ("upstream", r#"{x=~".*"}"#, E(EMPTY)),
    ("upstream", r#"{x!~".+"}"#, E(EMPTY)),
    ("upstream", r#"{x!="a"}"#, E(EMPTY)),
    ("upstream ParseExpr refuses (checkAST), ParseMetricSelector accepts",
        r#"foo{__name__="bar"}"#, M(&[(EQ, "__name__", "bar"), (EQ, "__name__", "foo")])),
    ("upstream", "foo{__name__= =}", E(r#"1:15: parse error: unexpected "=" in label matching, expected string"#)),
    ("upstream", "foo{,}", E(r#"1:5: parse error: unexpected "," in label matching, expected identifier or "}""#)),
    ("upstream", r#"foo{__name__ == "bar"}"#, E(r#"1:15: parse error: unexpected "=" in label matching, expected string"#)),
    ("upstream", r#"foo{__name__="bar" lol}"#, E(r#"1:20: parse error: unexpected identifier "lol" in label matching, expected "," or "}""#)),
    // --- upstream, "Preprocessors": start and end do not mask metric names ---
    ("upstream", "start", M(&[(EQ, "__name__", "start")])),
    ("upstream", "end", M(&[(EQ, "__name__", "end")])),
    ("upstream", r#"start{end="foo"}"#, M(&[(EQ, "end", "foo"), (EQ, "__name__", "start")])),
    ("upstream", r#"end{start="foo"}"#, M(&[(EQ, "start", "foo"), (EQ, "__name__", "end")])),
    ("upstream", "start()", E(r#"1:6: parse error: unexpected "(""#)),
    ("upstream", "end()", E(r#"1:4: parse error: unexpected "(""#)),
    // --- upstream TestParseSeries (escaped Unicode in label values) ---
    ("upstream", r#"my_metric{a="\u70ac"}"#, M(&[(EQ, "a", "炬"), (EQ, "__name__", "my_metric")])),
    ("upstream", r#"my_metric{a="\u70ac = torch"}"#, M(&[(EQ, "a", "炬 = torch"), (EQ, "__name__", "my_metric")])),
    // --- upstream TestExtractSelectors: a selector written with __name__ inside ---
    ("upstream", r#"{bar="baz", __name__="foo"}"#, M(&[(EQ, "bar", "baz"), (EQ, "__name__", "foo")])),
    // --- upstream, "String quoting and escape sequence interpretation" ---
    ("upstream", r#"{a="double-quoted string \" with escaped quote"}"#, M(&[(EQ, "a", "double-quoted string \" with escaped quote")])),
    ("upstream", r"{a='single-quoted string \' with escaped quote'}", M(&[(EQ, "a", "single-quoted string ' with escaped quote")])),
    ("upstream", "{a=`backtick-quoted string`}", M(&[(EQ, "a", "backtick-quoted string")])),
    ("upstream without the \\xFF\\377 bytes (see the UTF-8 cases)",
        r#"{a="\a\b\f\n\r\t\v\\\" - \u1234\U00010111\U0001011111☺"}"#,
        M(&[(EQ, "a", "\u{7}\u{8}\u{c}\n\r\t\u{b}\\\" - \u{1234}\u{10111}\u{10111}11☺")])),
    ("upstream without the \\xFF\\377 bytes", r"{a='\a\b\f\n\r\t\v\\\' - \u1234\U00010111\U0001011111☺'}",
        M(&[(EQ, "a", "\u{7}\u{8}\u{c}\n\r\t\u{b}\\' - \u{1234}\u{10111}\u{10111}11☺")])),
    ("upstream: raw strings keep backslashes", r#"{a=`\a\b\f\n\r\t\v\\\"\' - \xFF\377\u1234\U00010111\U0001011111☺`}"#,
        M(&[(EQ, "a", r#"\a\b\f\n\r\t\v\\\"\' - \xFF\377\u1234\U00010111\U0001011111☺"#)])),
    ("upstream", "{a=`\\``}", E("1:7: parse error: unterminated raw string")),
    ("upstream", r#"{a="\"#, E("1:4: parse error: escape sequence not terminated")),
    ("upstream", r#"{a="\c"}"#, E("1:4: parse error: unknown escape sequence U+0063 'c'")),
    ("upstream", r#"{a="\x."}"#, E("1:4: parse error: illegal character U+002E '.' in escape sequence")),
    // --- cairn: bytes that are not UTF-8 are refused (upstream accepts them) ---
    ("upstream accepts; cairn labels are UTF-8", r#"{a="\xFF\377"}"#, E(r#"1:4: parse error: error unquoting string "\"\\xFF\\377\"": escape sequences do not form valid UTF-8"#)),
    ("byte escapes that form UTF-8", r#"{a="\xc3\xa9", b='\303\251'}"#, M(&[(EQ, "a", "é"), (EQ, "b", "é")])),
    ("code point escapes", r#"{a="\u00e9\U0001F600\x41\101"}"#, M(&[(EQ, "a", "é😀AA")])),
    ("surrogate", r#"{a="\uD800"}"#, E("1:4: parse error: escape sequence is an invalid Unicode code point")),
    ("beyond U+10FFFF", r#"{a="\U00110000"}"#, E("escape sequence is an invalid Unicode code point")),
    ("octal above 255", r#"{a="\400"}"#, E("escape sequence is an invalid Unicode code point")),
    ("the other quote is not an escape", r#"{a="\'"}"#, E("1:4: parse error: unknown escape sequence U+0027 '''")),
    ("the other quote is a plain character", r#"{a='"', b="'"}"#, M(&[(EQ, "a", "\""), (EQ, "b", "'")])),
    ("a raw newline ends a quoted string", "{a=\"b\n\"}", E("1:4: parse error: unterminated quoted string")),
    ("raw strings may span lines", "{a=`b\nc`}", M(&[(EQ, "a", "b\nc")])),
    ("unterminated", r#"{a="b}"#, E("1:4: parse error: unterminated quoted string")),
    ("a literal U+FFFD in a raw string", "{a=`\u{FFFD}`}", E("1:4: parse error: invalid UTF-8 rune")),
    // --- anything after the selector (upstream grammar: `start EOF`) ---
    ("range", "up[5m]", E(r#"1:3: parse error: unexpected "[""#)),
    ("function", "rate(up[5m])", E(r#"1:5: parse error: unexpected "(""#)),
    ("binary operator", "up + 1", E("1:4: parse error: unexpected <op:+>")),
    ("offset", "up offset 5m", E("1:4: parse error: unexpected <offset>")),
    ("@ modifier", r#"up{a="b"} @ 1603774568"#, E("1:11: parse error: unexpected <op:@>")),
    ("aggregation", "sum(up)", E(r#"1:4: parse error: unexpected "(""#)),
    ("set operator", "up or down", E("1:4: parse error: unexpected <op:or>")),
    ("two names", "up down", E(r#"1:4: parse error: unexpected identifier "down""#)),
    ("a string", r#"up "x""#, E(r#"1:4: parse error: unexpected string "\"x\"""#)),
    ("two selectors", r#"{a="b"}{c="d"}"#, E(r#"1:8: parse error: unexpected "{""#)),
    ("a closing parenthesis", "up)", E("1:4: parse error: unexpected right parenthesis ')'")),
    ("a comparison", "up == 1", E("1:4: parse error: unexpected <op:==>")),
    ("=~ outside braces", "up =~ 1", E("1:4: parse error: unexpected character after '=': '~'")),
    // --- empty and whitespace-only input ---
    ("empty", "", E("1:1: parse error: unexpected end of input")),
    ("blanks", " \t ", E("1:4: parse error: unexpected end of input")),
    ("only a comment", "# just a comment\n\n", E("3:1: parse error: unexpected end of input")),
    // --- names: keywords inside braces are label names; some are not metric names ---
    ("keywords as label names", r#"{on="a", by="b", bool="c", offset="d", sum="e", group_left="f"}"#,
        M(&[(EQ, "on", "a"), (EQ, "by", "b"), (EQ, "bool", "c"), (EQ, "offset", "d"), (EQ, "sum", "e"), (EQ, "group_left", "f")])),
    ("keywords kept as written", r#"SUM{By="x"}"#, M(&[(EQ, "By", "x"), (EQ, "__name__", "SUM")])),
    ("metric_identifier takes by, offset, without", "by", M(&[(EQ, "__name__", "by")])),
    ("offset as a name", r#"offset{a="b"}"#, M(&[(EQ, "a", "b"), (EQ, "__name__", "offset")])),
    ("bool is not a metric name", "bool", E("1:1: parse error: unexpected <bool>")),
    ("on is not a metric name", r#"on{a="b"}"#, E("1:1: parse error: unexpected <on>")),
    ("atan2 is not a metric name", "atan2", E("1:1: parse error: unexpected <op:atan2>")),
    ("Inf is a number", "Inf", E(r#"1:1: parse error: unexpected number "Inf""#)),
    ("a colon is a metric name", ":", M(&[(EQ, "__name__", ":")])),
    ("a digit cannot start a name", "1up", E("1:1: parse error: bad number or duration syntax")),
    // --- whitespace and comments between tokens ---
    ("blanks everywhere", " up {  a = \"b\" ,\n\tc =~ 'd' , } ", M(&[(EQ, "a", "b"), (RE, "c", "d"), (EQ, "__name__", "up")])),
    ("comments", "up # the metric\n{ # matchers\n a=\"b\" # value\n} # end", M(&[(EQ, "a", "b"), (EQ, "__name__", "up")])),
    ("empty braces after a name", "up{}", M(&[(EQ, "__name__", "up")])),
    // --- operators and matchers ---
    ("missing }", r#"up{a="b""#, E("1:9: parse error: unexpected end of input inside braces")),
    ("==", r#"{a=="b"}"#, E(r#"1:4: parse error: unexpected "=" in label matching, expected string"#)),
    ("~ alone", r#"{a~"b"}"#, E("1:3: parse error: unexpected character inside braces: '~'")),
    ("! alone", r#"{a!"b"}"#, E("1:3: parse error: unexpected character after '!' inside braces: '\"'")),
    ("! at the end", "{a!", E("1:3: parse error: unexpected character after '!' inside braces: '\u{FFFD}'")),
    ("no operator", r#"{a "b"}"#, E(r#"1:4: parse error: unexpected string "\"b\"" in label matching, expected label matching operator"#)),
    ("no comma", r#"{a="b" c="d"}"#, E(r#"1:8: parse error: unexpected identifier "c" in label matching, expected "," or "}""#)),
    ("two commas", r#"{a="b",,}"#, E(r#"1:8: parse error: unexpected "," in label matching, expected identifier or "}""#)),
    ("operator first", r#"{=~"b"}"#, E(r#"1:2: parse error: unexpected <op:=~> in label matching, expected identifier or "}""#)),
    ("nested braces", r#"{a="b", {"#, E("1:9: parse error: unexpected left brace '{'")),
    ("long strings are cut", r#"{a="b" "abcdefghijkl"}"#, E(r#"unexpected string "\"abcdefghi"... in label matching"#)),
    ("regexes", r#"{__name__=~"up|down", job!~"x.*"}"#, M(&[(RE, "__name__", "up|down"), (NRE, "job", "x.*")])),
    ("one non-empty matcher is enough", r#"{a="", b=~".*", c!="x", d=~".+"}"#, M(&[(EQ, "a", ""), (RE, "b", ".*"), (NE, "c", "x"), (RE, "d", ".+")])),
    ("the metric name is non-empty", r#"up{job=~".*"}"#, M(&[(RE, "job", ".*"), (EQ, "__name__", "up")])),
    ("an invalid regex", r#"{a=~"("}"#, E("1:2: parse error: invalid regular expression")),
    ("an invalid negated regex", r#"up{a!~"a**"}"#, E("1:4: parse error: invalid regular expression \"a**\"")),
    ("positions count lines", "up{\n  a=~\"(\"\n}", E("2:3: parse error: invalid regular expression")),
    ("an equality value is not a regex", r#"{a="("}"#, M(&[(EQ, "a", "(")])),
];

#[test]
fn table_of_selectors_matches_upstream() {
    assert!(CASES.len() >= 40);
    for (what, input, want) in CASES {
        let got = parse_selector(input);
        match (want, got) {
            (Want::Matchers(expected), Ok(matchers)) => {
                let got: Vec<(MatchType, &str, &str)> = matchers
                    .iter()
                    .map(|m| (m.kind, m.name.as_str(), m.value.as_str()))
                    .collect();
                assert_eq!(&got, expected, "{what}: {input:?}");
            }
            (Want::Error(substring), Err(err)) => {
                let msg = err.to_string();
                assert!(
                    msg.contains(substring),
                    "{what}: {input:?}: error {msg:?} lacks {substring:?}"
                );
                assert_eq!(
                    msg.split(": parse error: ").next(),
                    Some(format!("{}:{}", err.line, err.column).as_str()),
                    "{what}"
                );
                assert!(err.offset <= input.len(), "{what}");
            }
            (Want::Matchers(_), Err(err)) => panic!("{what}: {input:?}: unexpected error {err}"),
            (Want::Error(substring), Ok(m)) => {
                panic!("{what}: {input:?}: parsed as {m:?}, expected error {substring:?}")
            }
        }
    }
}

#[test]
fn errors_say_what_kind_of_problem_it_is() {
    let kind = |input: &str| parse_selector(input).unwrap_err().kind;
    assert_eq!(kind(r#"{a=""}"#), SelectorErrorKind::EmptySelector);
    assert!(matches!(
        kind(r#"{a=~"("}"#),
        SelectorErrorKind::InvalidMatcher(_)
    ));
    assert!(matches!(
        kind(r#"{a="\xff"}"#),
        SelectorErrorKind::InvalidUtf8 { .. }
    ));
    assert!(matches!(kind("{"), SelectorErrorKind::Lex(_)));
    assert_eq!(
        kind("up{a}"),
        SelectorErrorKind::Unexpected {
            found: "\"}\"".to_owned(),
            context: Some("label matching"),
            expected: Some("label matching operator"),
        }
    );
    let err = parse_selector("x{}\n  {}").unwrap_err();
    assert_eq!((err.offset, err.line, err.column), (6, 2, 3));
    assert_eq!(err.to_string(), "2:3: parse error: unexpected \"{\"");
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(boxed.to_string().starts_with("2:3: "));
}

#[test]
fn parsed_matchers_select_what_they_say() {
    use cairn::model::{matches_labels, Labels};
    let ms = parse_selector(r#"http_requests_total{job=~"api|web", code!="500"}"#).unwrap();
    let hit = Labels::from_pairs([
        ("__name__", "http_requests_total"),
        ("job", "web"),
        ("code", "200"),
    ]);
    let miss = Labels::from_pairs([
        ("__name__", "http_requests_total"),
        ("job", "web"),
        ("code", "500"),
    ]);
    let other = Labels::from_pairs([("__name__", "up"), ("job", "web")]);
    assert!(matches_labels(&ms, &hit));
    assert!(!matches_labels(&ms, &miss));
    assert!(!matches_labels(&ms, &other));
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// Valid selectors to mutate.
const VALID: &[&str] = &[
    r#"up{job="api", instance=~"10\\.0\\..*"}"#,
    r#"{__name__=~"node_.+", env!='dev',}"#,
    "a:b:c{x!~`y|z`}",
    "sum # comment\n{ on = \"\\u00e9\\x41\\101\" }",
    r#"{a="\"quoted\" \\ back", b='it\'s'}"#,
];

/// Characters that matter to the lexer.
const INTERESTING: &[char] = &[
    '{', '}', '"', '\'', '`', '\\', '=', '!', '~', ',', '#', '\n', ' ', ':', '_', 'a', '0', '7',
    'x', 'u', 'U', '(', ')', '[', ']', '.', '+', '-', '@', 'é', '\u{FFFD}', '\u{0}',
];

/// Checks what holds for every result.
fn check_result(input: &str) -> Result<(), TestCaseError> {
    match parse_selector(input) {
        Ok(matchers) => {
            prop_assert!(!matchers.is_empty(), "{:?}", input);
            prop_assert!(matchers.iter().any(|m| !m.matches_empty()), "{:?}", input);
            for m in &matchers {
                let name = m.name.as_str();
                let valid_label = name
                    .chars()
                    .next()
                    .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
                    && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
                prop_assert!(valid_label, "label name {:?} from {:?}", name, input);
            }
        }
        Err(err) => {
            prop_assert!(err.offset <= input.len(), "{:?}: {}", input, err);
            prop_assert!(input.is_char_boundary(err.offset));
            let msg = err.to_string();
            let prefix = format!("{}:{}: parse error: ", err.line, err.column);
            prop_assert!(msg.starts_with(&prefix), "{:?}", msg);
            prop_assert!(msg.len() > prefix.len(), "{:?}", msg);
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Quoting {
    Double,
    Single,
    HexBytes,
    OctalBytes,
    CodePoints,
    Raw,
}

/// Writes `value` as a PromQL string literal.
fn render_value(value: &str, quoting: Quoting) -> String {
    let mut out = String::new();
    match quoting {
        Quoting::Double | Quoting::Single => {
            let q = if matches!(quoting, Quoting::Double) {
                '"'
            } else {
                '\''
            };
            out.push(q);
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\u{FFFD}' => out.push_str("\\uFFFD"),
                    c if c == q => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            out.push(q);
        }
        Quoting::HexBytes => {
            out.push('"');
            for b in value.bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
            out.push('"');
        }
        Quoting::OctalBytes => {
            out.push('\'');
            for b in value.bytes() {
                out.push_str(&format!("\\{b:03o}"));
            }
            out.push('\'');
        }
        Quoting::CodePoints => {
            out.push('"');
            for c in value.chars() {
                let u = u32::from(c);
                if u < 0x10000 {
                    out.push_str(&format!("\\u{u:04X}"));
                } else {
                    out.push_str(&format!("\\U{u:08x}"));
                }
            }
            out.push('"');
        }
        Quoting::Raw if !value.contains(['`', '\u{FFFD}']) => {
            out.push('`');
            out.push_str(value);
            out.push('`');
        }
        Quoting::Raw => return render_value(value, Quoting::Double),
    }
    out
}

fn quoting() -> impl Strategy<Value = Quoting> {
    prop::sample::select(vec![
        Quoting::Double,
        Quoting::Single,
        Quoting::HexBytes,
        Quoting::OctalBytes,
        Quoting::CodePoints,
        Quoting::Raw,
    ])
}

fn label_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_][a-zA-Z0-9_]{0,6}",
        prop::sample::select(vec![
            "on", "by", "bool", "offset", "sum", "Inf", "nan", "__name__", "start"
        ])
        .prop_map(String::from),
    ]
}

/// Words the grammar refuses as metric names.
const NOT_METRIC_NAMES: &[&str] = &[
    "bool",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "inf",
    "nan",
];

fn metric_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,8}",
        prop::sample::select(vec![
            "sum",
            "by",
            "offset",
            "Without",
            "start",
            "and",
            "count_values"
        ])
        .prop_map(String::from),
    ]
    .prop_filter("a keyword the grammar refuses", |n| {
        !NOT_METRIC_NAMES.contains(&n.to_ascii_lowercase().as_str())
    })
}

fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter),
        "[a-z\"'`\\\\\n\r\t é{}#,=]{0,8}",
        "[ -~]{0,8}",
    ]
}

/// A matcher: operator, label, value. Regex values come from a list of valid patterns.
fn matcher() -> impl Strategy<Value = (MatchType, String, String)> {
    let regex = prop::sample::select(vec![
        ".*", ".+", "", "a|b", "(?i)foo", r"x\d+", "é.*", "[a-z]+", r"\\", "`", "'\"",
    ]);
    prop_oneof![
        (
            prop::sample::select(vec![EQ, NE]),
            label_name(),
            any_value()
        ),
        (
            prop::sample::select(vec![RE, NRE]),
            label_name(),
            regex.prop_map(String::from)
        ),
    ]
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", " ", "\t", "\n", "\r\n", " # note {}\n"])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(input in any::<String>()) {
        check_result(&input)?;
    }

    #[test]
    fn token_soup_never_panics(input in prop::collection::vec(prop::sample::select(INTERESTING), 0..24)) {
        check_result(&String::from_iter(input))?;
    }

    #[test]
    fn mutated_selectors_never_panic(
        base in prop::sample::select(VALID),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, prop::sample::select(INTERESTING)), 1..5),
    ) {
        let mut chars: Vec<char> = base.chars().collect();
        for (at, op, c) in edits {
            let i = at.index(chars.len() + 1);
            match op {
                0 => chars.insert(i, c),
                1 if i < chars.len() => { chars.remove(i); }
                _ if i < chars.len() => chars[i] = c,
                _ => chars.push(c),
            }
        }
        check_result(&String::from_iter(chars))?;
    }

    #[test]
    fn rendered_selectors_parse_back(
        name in prop::option::of(metric_name()),
        matchers in prop::collection::vec((matcher(), quoting()), 0..5),
        braces_when_no_matchers in any::<bool>(),
        trailing_comma in any::<bool>(),
        seps in prop::collection::vec(separator(), 64),
    ) {
        let mut seps = seps.into_iter().cycle();
        let mut sep = move || seps.next().unwrap_or("");
        let mut input = String::new();
        input.push_str(sep());
        if let Some(name) = &name {
            input.push_str(name);
            input.push_str(sep());
        }
        if name.is_none() || !matchers.is_empty() || braces_when_no_matchers {
            input.push('{');
            for (i, ((kind, label, value), q)) in matchers.iter().enumerate() {
                if i > 0 {
                    input.push(',');
                }
                input.push_str(sep());
                input.push_str(label);
                input.push_str(sep());
                input.push_str(kind.as_str());
                input.push_str(sep());
                input.push_str(&render_value(value, *q));
                input.push_str(sep());
            }
            if trailing_comma && !matchers.is_empty() {
                input.push(',');
                input.push_str(sep());
            }
            input.push('}');
            input.push_str(sep());
        }

        let mut expected: Vec<Matcher> = matchers
            .iter()
            .map(|((kind, label, value), _)| Matcher::new(*kind, label.as_str(), value.as_str()).unwrap())
            .collect();
        if let Some(name) = &name {
            expected.push(Matcher::new(EQ, "__name__", name.as_str()).unwrap());
        }
        let got = parse_selector(&input);
        if expected.iter().all(Matcher::matches_empty) {
            let err = got.unwrap_err();
            prop_assert_eq!(err.kind, SelectorErrorKind::EmptySelector, "{:?}", input);
        } else {
            prop_assert_eq!(got.unwrap(), expected, "{:?}", input);
        }
    }

    #[test]
    fn refused_keywords_are_not_metric_names(
        word in prop::sample::select(NOT_METRIC_NAMES),
        upper in any::<bool>(),
    ) {
        let word = if upper { word.to_ascii_uppercase() } else { word.to_owned() };
        let err = parse_selector(&format!("{word}{{a=\"b\"}}")).unwrap_err();
        prop_assert_eq!(err.offset, 0);
        prop_assert!(err.to_string().starts_with("1:1: parse error: unexpected "), "{}", err);
        // The same word is a fine label name.
        let ms = parse_selector(&format!("{{{word}=\"b\"}}")).unwrap();
        prop_assert_eq!(ms[0].name.as_str(), word.as_str());
    }
}
