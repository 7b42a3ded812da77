//! Compact, sorted label sets.
//!
//! A [`Labels`] value is exactly one heap allocation (a `Box<str>`, 16 bytes
//! inline), like Prometheus's `stringlabels` build. The buffer holds every
//! pair as
//!
//! ```text
//! len(name) name len(value) value   len(name) name len(value) value   ...
//! ```
//!
//! sorted by name, byte-wise. Lengths use a little-endian base-64 varint in
//! which every byte is ASCII (`0x00..=0x7F`: six payload bits, bit 6 set on
//! every byte but the last), so the whole buffer is valid UTF-8 and decoding
//! never needs `unsafe` nor a second UTF-8 validation: names and values are
//! sliced out with the checked [`str::get`]. Names and values shorter than 64
//! bytes cost one length byte each, shorter than 4096 bytes two.
//!
//! The encoding is canonical (one buffer per sequence of pairs), so equality
//! and `std::hash::Hash` work on the raw buffer; ordering follows Prometheus's
//! `labels.Compare`, and [`Labels::hash`] is Prometheus's `labels.Hash()`.

use std::cmp::Ordering;
use std::fmt;
use std::iter::FusedIterator;
use std::sync::OnceLock;

use xxhash_rust::xxh64::{xxh64, Xxh64};

/// The label that holds the metric name.
pub const METRIC_NAME: &str = "__name__";

/// Separator byte that Prometheus writes after every name and every value
/// when hashing (`labels.seps`); it never occurs in valid UTF-8.
const SEP: u8 = 0xff;

/// Size of the stack buffer used by [`hash_sorted_pairs`] before it falls
/// back to the streaming hasher (Prometheus uses a 1 KiB buffer too; the
/// result is the same either way).
const HASH_STACK_BUF: usize = 1024;

/// A sorted set of label name/value pairs in one heap allocation.
///
/// Built by [`Labels::from_pairs`] (sorts) or [`Labels::from_sorted_pairs`].
/// Neither validates names nor drops empty values or duplicate names: that is
/// the caller's job, as in Prometheus.
#[derive(Clone, PartialEq, Eq, Default, Hash)]
pub struct Labels {
    data: Box<str>,
}

impl Labels {
    /// The empty label set (no allocation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a label set from pairs in any order, sorting them by name
    /// (byte-wise, stable: pairs with equal names keep their input order).
    /// Nothing is validated or dropped.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Labels {
        let mut owned: Vec<(N, V)> = pairs.into_iter().collect();
        owned.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        Self::encode(owned.iter().map(|(n, v)| (n.as_ref(), v.as_ref())))
    }

    /// Builds a label set from pairs already sorted by name. The caller
    /// guarantees the order (checked with `debug_assert!` only).
    pub fn from_sorted_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
        let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
        debug_assert!(
            pairs.windows(2).all(|w| w[0].0 <= w[1].0),
            "Labels::from_sorted_pairs: pairs are not sorted by name"
        );
        Self::encode(pairs.iter().copied())
    }

    /// Appends sorted `pairs` to `out` in this type's internal encoding, so that a lookup can
    /// compare a borrowed label set with [`Labels::encoded`] in one `memcmp` (the head's hot
    /// path) and build the `Labels` with [`Labels::from_encoded`] only when it is new.
    pub fn encode_sorted_pairs_into<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        out: &mut String,
    ) {
        for (name, value) in pairs {
            put_len(out, name.len());
            out.push_str(name);
            put_len(out, value.len());
            out.push_str(value);
        }
    }

    /// The internal encoding (see [`Labels::encode_sorted_pairs_into`]).
    pub fn encoded(&self) -> &str {
        &self.data
    }

    /// A label set from bytes made by [`Labels::encode_sorted_pairs_into`].
    pub fn from_encoded(encoded: &str) -> Labels {
        Labels {
            data: encoded.into(),
        }
    }

    /// Encodes pairs in the given order into a buffer of exactly the right size.
    fn encode<'a, I>(pairs: I) -> Labels
    where
        I: Iterator<Item = (&'a str, &'a str)> + Clone,
    {
        let size: usize = pairs
            .clone()
            .map(|(n, v)| len_size(n.len()) + n.len() + len_size(v.len()) + v.len())
            .sum();
        if size == 0 {
            return Labels::new();
        }
        let mut buf = String::with_capacity(size);
        for (name, value) in pairs {
            put_len(&mut buf, name.len());
            buf.push_str(name);
            put_len(&mut buf, value.len());
            buf.push_str(value);
        }
        debug_assert_eq!(buf.len(), size);
        Labels {
            data: buf.into_boxed_str(),
        }
    }

    /// Iterates over the `(name, value)` pairs in name order.
    pub fn iter(&self) -> LabelsIter<'_> {
        LabelsIter { rest: &self.data }
    }

    /// The value of label `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        for (n, v) in self.iter() {
            match n.cmp(name) {
                Ordering::Less => continue,
                Ordering::Equal => return Some(v),
                Ordering::Greater => return None,
            }
        }
        None
    }

    /// Whether label `name` is present (even with an empty value).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The value of `__name__`, if present.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    /// Number of pairs. O(number of pairs): the count is not stored.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are no pairs. O(1).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Prometheus's `labels.Hash()`: xxhash64 (seed 0) of
    /// `name 0xff value 0xff` for every pair, in order.
    pub fn hash(&self) -> u64 {
        hash_sorted_pairs(self.iter())
    }

    /// Bytes this value owns on the heap (the encoded buffer); add
    /// `size_of::<Labels>()` (16) for the inline part.
    pub fn heap_size(&self) -> usize {
        self.data.len()
    }

    /// Whether this set equals the given pairs (compared in order, so they
    /// must be sorted the same way), without allocating.
    pub fn eq_sorted_pairs<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        let mut mine = self.iter();
        for (name, value) in pairs {
            match mine.next() {
                Some((n, v)) if n == name && v == value => {}
                _ => return false,
            }
        }
        mine.next().is_none()
    }
}

/// Appends `n` in the ASCII-only base-64 varint.
fn put_len(out: &mut String, mut n: usize) {
    loop {
        let low = (n & 0x3f) as u8;
        n >>= 6;
        if n == 0 {
            out.push(char::from(low));
            return;
        }
        out.push(char::from(low | 0x40));
    }
}

/// Number of bytes `put_len` writes for `n`.
fn len_size(mut n: usize) -> usize {
    let mut size = 1;
    n >>= 6;
    while n != 0 {
        size += 1;
        n >>= 6;
    }
    size
}

/// Reads a varint from the front of `bytes`: `(value, bytes used)`, or `None`
/// if it is truncated, not ASCII or does not fit a `usize`.
fn get_len(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value: usize = 0;
    let mut shift: u32 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x80 || shift >= usize::BITS {
            return None;
        }
        let low = usize::from(b & 0x3f);
        let part = low.checked_shl(shift)?;
        if part >> shift != low {
            return None; // bits would be lost
        }
        value |= part;
        if b & 0x40 == 0 {
            return Some((value, i + 1));
        }
        shift += 6;
    }
    None
}

/// Splits one length-prefixed string off the front of `rest`.
fn take_str(rest: &str) -> Option<(&str, &str)> {
    let (len, used) = get_len(rest.as_bytes())?;
    let end = used.checked_add(len)?;
    Some((rest.get(used..end)?, rest.get(end..)?))
}

/// Iterator over the pairs of a [`Labels`], in name order.
#[derive(Clone, Debug)]
pub struct LabelsIter<'a> {
    rest: &'a str,
}

impl<'a> Iterator for LabelsIter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let decoded = take_str(self.rest)
            .and_then(|(name, rest)| take_str(rest).map(|(value, rest)| (name, value, rest)));
        match decoded {
            Some((name, value, rest)) => {
                self.rest = rest;
                Some((name, value))
            }
            None => {
                // Unreachable for buffers built by this module; stop cleanly.
                self.rest = "";
                None
            }
        }
    }
}

impl FusedIterator for LabelsIter<'_> {}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a str, &'a str);
    type IntoIter = LabelsIter<'a>;

    fn into_iter(self) -> LabelsIter<'a> {
        self.iter()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Labels {
    /// Same as [`Labels::from_pairs`].
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        Labels::from_pairs(iter)
    }
}

/// Prometheus `labels.Hash()` of borrowed pairs (in the order given), without
/// allocating; equals [`Labels::hash`] of the same pairs.
pub fn hash_sorted_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut buf = [0u8; HASH_STACK_BUF];
    let mut len = 0;
    let mut pairs = pairs.into_iter();
    while let Some((name, value)) = pairs.next() {
        let need = name.len() + value.len() + 2;
        if len + need > buf.len() {
            // Large label set: stream everything from here on.
            let mut hasher = Xxh64::new(0);
            hasher.update(&buf[..len]);
            for (n, v) in std::iter::once((name, value)).chain(pairs) {
                hasher.update(n.as_bytes());
                hasher.update(&[SEP]);
                hasher.update(v.as_bytes());
                hasher.update(&[SEP]);
            }
            return hasher.digest();
        }
        for part in [name.as_bytes(), &[SEP], value.as_bytes(), &[SEP]] {
            buf[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
    }
    xxh64(&buf[..len], 0)
}

impl Ord for Labels {
    /// Prometheus `labels.Compare`: pair by pair, name then value, byte-wise;
    /// when one set is a prefix of the other, the shorter sorts first.
    fn cmp(&self, other: &Self) -> Ordering {
        if self.data == other.data {
            return Ordering::Equal;
        }
        self.iter().cmp(other.iter())
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Labels {
    /// Prometheus `Labels.String()`: `{__name__="up", job="x"}`, values
    /// quoted like Go's `%q`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
            f.write_str("=")?;
            write_go_quoted(f, value)?;
        }
        f.write_str("}")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Quotes `s` like Go's `strconv.Quote` (`%q`): double quotes, `\"` and
/// `\\`, printable runes as they are, `\a \b \f \n \r \t \v`, other
/// non-printables as `\xHH`, `\uHHHH` or `\UHHHHHHHH`.
pub fn go_quote(s: &str) -> String {
    struct Quoted<'a>(&'a str);
    impl fmt::Display for Quoted<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_go_quoted(f, self.0)
        }
    }
    Quoted(s).to_string()
}

/// Writes `s` quoted as [`go_quote`] does.
pub(crate) fn write_go_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c != '"' && c != '\\' && go_is_print(c) {
            continue;
        }
        f.write_str(&s[start..i])?;
        start = i + c.len_utf8();
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\u{07}' => f.write_str("\\a")?,
            '\u{08}' => f.write_str("\\b")?,
            '\u{0c}' => f.write_str("\\f")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            '\u{0b}' => f.write_str("\\v")?,
            c if c < ' ' || c == '\u{7f}' => write!(f, "\\x{:02x}", u32::from(c))?,
            c if u32::from(c) < 0x10000 => write!(f, "\\u{:04x}", u32::from(c))?,
            c => write!(f, "\\U{:08x}", u32::from(c))?,
        }
    }
    f.write_str(&s[start..])?;
    f.write_char('"')
}

/// Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and
/// the ASCII space. Non-Latin-1 runes are classified with the regex crate's
/// Unicode tables (the Unicode version may differ slightly from Go's).
fn go_is_print(c: char) -> bool {
    let u = u32::from(c);
    if u <= 0xff {
        return (0x20..=0x7e).contains(&u) || ((0xa1..=0xff).contains(&u) && u != 0xad);
    }
    static GRAPHIC: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let re = GRAPHIC.get_or_init(|| regex::Regex::new(r"\A[\p{L}\p{M}\p{N}\p{P}\p{S}]\z").ok());
    match re {
        Some(re) => {
            let mut buf = [0u8; 4];
            re.is_match(c.encode_utf8(&mut buf))
        }
        // Never happens (the pattern is constant); fall back to a rough rule.
        None => !c.is_control() && !c.is_whitespace(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;

    /// A table row's label pairs.
    type Pairs = Vec<(&'static str, &'static str)>;

    fn concat_for_hash(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in pairs {
            b.extend_from_slice(n.as_bytes());
            b.push(0xff);
            b.extend_from_slice(v.as_bytes());
            b.push(0xff);
        }
        b
    }

    #[test]
    fn from_pairs_sorts_by_name_and_round_trips_through_iter_and_get() {
        let l = Labels::from_pairs([("job", "api"), ("__name__", "up"), ("instance", "h:1")]);
        let got: Vec<_> = l.iter().collect();
        assert_eq!(
            got,
            vec![("__name__", "up"), ("instance", "h:1"), ("job", "api")]
        );
        assert_eq!(l.get("job"), Some("api"));
        assert_eq!(l.get("__name__"), Some("up"));
        assert_eq!(l.metric_name(), Some("up"));
        assert_eq!(l.get("missing"), None);
        assert_eq!(l.get(""), None);
        assert!(l.has("instance"));
        assert_eq!(l.len(), 3);
        assert!(!l.is_empty());
        let again = Labels::from_pairs(l.iter());
        assert_eq!(again, l);
        let owned: Labels = vec![("b".to_string(), "2".to_string()), ("a".into(), "1".into())]
            .into_iter()
            .collect();
        assert_eq!(owned, Labels::from_sorted_pairs([("a", "1"), ("b", "2")]));
    }

    #[test]
    fn names_sort_byte_wise_not_by_locale() {
        // Upper case (0x41..) sorts before '_' (0x5f) before lower case, and
        // non-ASCII (UTF-8 lead bytes >= 0xc2) sorts after all ASCII.
        let l = Labels::from_pairs([("é", "1"), ("b", "2"), ("_", "3"), ("B", "4"), ("a", "5")]);
        let names: Vec<_> = l.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["B", "_", "a", "b", "é"]);
    }

    #[test]
    fn empty_and_long_values_round_trip() {
        let long = "x".repeat(70_000);
        let mid = "y".repeat(64);
        let short = "z".repeat(63);
        let l = Labels::from_pairs([
            ("", ""),
            ("empty", ""),
            ("long", long.as_str()),
            ("mid", mid.as_str()),
            ("short", short.as_str()),
        ]);
        assert_eq!(l.get(""), Some(""));
        assert_eq!(l.get("empty"), Some(""));
        assert_eq!(l.get("long"), Some(long.as_str()));
        assert_eq!(l.get("mid"), Some(mid.as_str()));
        assert_eq!(l.get("short"), Some(short.as_str()));
        assert_eq!(l.len(), 5);
        // Length prefixes: 70_000 needs three 6-bit groups, 64 two, 63 one.
        let expected =
            (1 + 1) + (1 + 5 + 1) + (1 + 4 + 3 + 70_000) + (1 + 3 + 2 + 64) + (1 + 5 + 1 + 63);
        assert_eq!(l.heap_size(), expected);
    }

    #[test]
    fn empty_labels_behave() {
        let l = Labels::new();
        assert!(l.is_empty());
        assert_eq!(l.len(), 0);
        assert_eq!(l.iter().next(), None);
        assert_eq!(l.heap_size(), 0);
        assert_eq!(l.to_string(), "{}");
        assert_eq!(l, Labels::default());
        assert_eq!(l, Labels::from_pairs(Vec::<(&str, &str)>::new()));
        assert!(l.eq_sorted_pairs([]));
        // xxhash64 of no bytes, seed 0: the well-known constant.
        assert_eq!(l.hash(), 0xef46_db37_51d8_e999);
    }

    #[test]
    fn duplicates_are_kept_in_input_order() {
        let l = Labels::from_pairs([("a", "2"), ("b", "x"), ("a", "1")]);
        let got: Vec<_> = l.iter().collect();
        assert_eq!(got, vec![("a", "2"), ("a", "1"), ("b", "x")]);
    }

    #[test]
    fn hash_matches_prometheus_vectors() {
        // Expected values computed independently with the C xxHash library
        // (python `xxhash.xxh64_intdigest(concat, 0)`), where concat is
        // name 0xff value 0xff for every pair, as in Go's labels.Hash().
        let cases: Vec<(&str, Pairs, u64)> = vec![
            ("no labels", vec![], 0xef46db3751d8e999),
            ("a single pair", vec![("a", "b")], 0x608891b6a4fd3588),
            (
                "the up series",
                vec![
                    ("__name__", "up"),
                    ("instance", "localhost:9090"),
                    ("job", "prometheus"),
                ],
                0xf28c8afcd224e55f,
            ),
            (
                "non-ASCII values",
                vec![
                    ("__name__", "http_requests_total"),
                    ("path", "/é/日本"),
                    ("status", "200"),
                ],
                0x87d6867e5454c668,
            ),
        ];
        for (what, pairs, expected) in cases {
            let l = Labels::from_sorted_pairs(pairs.iter().copied());
            assert_eq!(l.hash(), expected, "{what}");
            assert_eq!(hash_sorted_pairs(pairs.iter().copied()), expected, "{what}");
            assert_eq!(xxh64(&concat_for_hash(&pairs), 0), expected, "{what}");
        }
    }

    #[test]
    fn hash_of_label_sets_over_one_kib_streams_to_the_same_value() {
        let long = "v".repeat(1500);
        let pairs = [("__name__", "x"), ("long", long.as_str())];
        let l = Labels::from_sorted_pairs(pairs);
        assert_eq!(l.hash(), 0x2bbd565f8f147ad1);
        // Streaming over many small updates equals the one-shot digest for
        // every split point around the 1 KiB stack buffer.
        for n in [
            1000usize, 1017, 1018, 1019, 1020, 1021, 1022, 1023, 1024, 1025,
        ] {
            let v = "z".repeat(n);
            let pairs = [("a", "1"), ("b", v.as_str()), ("c", "3")];
            assert_eq!(
                hash_sorted_pairs(pairs),
                xxh64(&concat_for_hash(&pairs), 0),
                "value of {n} bytes"
            );
        }
    }

    #[test]
    fn equal_sets_hash_equal_and_different_sets_differ() {
        let a = Labels::from_pairs([("job", "x"), ("__name__", "up")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        // Moving bytes between name and value must change the hash.
        let c = Labels::from_pairs([("ab", "c")]);
        let d = Labels::from_pairs([("a", "bc")]);
        assert_ne!(c, d);
        assert_ne!(c.hash(), d.hash());
        use std::collections::HashSet;
        let set: HashSet<Labels> = [a.clone(), b.clone(), c.clone()].into_iter().collect();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn eq_sorted_pairs_compares_without_allocating() {
        let l = Labels::from_pairs([("a", "1"), ("b", "2")]);
        let cases: Vec<(&str, Pairs, bool)> = vec![
            ("the same pairs", vec![("a", "1"), ("b", "2")], true),
            ("a different value", vec![("a", "1"), ("b", "3")], false),
            ("a missing pair", vec![("a", "1")], false),
            (
                "an extra pair",
                vec![("a", "1"), ("b", "2"), ("c", "3")],
                false,
            ),
            ("no pairs", vec![], false),
        ];
        for (what, pairs, expected) in cases {
            assert_eq!(l.eq_sorted_pairs(pairs.iter().copied()), expected, "{what}");
        }
    }

    #[test]
    fn ordering_follows_prometheus_compare() {
        let ls = |p: &[(&str, &str)]| Labels::from_sorted_pairs(p.iter().copied());
        let cases: Vec<(&str, Labels, Labels, Ordering)> = vec![
            (
                "a prefix sorts first",
                ls(&[("a", "1")]),
                ls(&[("a", "1"), ("b", "1")]),
                Ordering::Less,
            ),
            (
                "the empty set sorts first",
                ls(&[]),
                ls(&[("a", "")]),
                Ordering::Less,
            ),
            (
                "names compare before values",
                ls(&[("a", "9")]),
                ls(&[("b", "0")]),
                Ordering::Less,
            ),
            (
                "values break name ties",
                ls(&[("a", "1")]),
                ls(&[("a", "2")]),
                Ordering::Less,
            ),
            (
                "a shorter name that is a prefix sorts first",
                ls(&[("a", "z")]),
                ls(&[("aa", "a")]),
                Ordering::Less,
            ),
            (
                "comparison is byte-wise",
                ls(&[("a", "Z")]),
                ls(&[("a", "a")]),
                Ordering::Less,
            ),
            (
                "non-ASCII sorts after ASCII",
                ls(&[("a", "é")]),
                ls(&[("a", "z")]),
                Ordering::Greater,
            ),
            (
                "equal sets are equal",
                ls(&[("a", "1")]),
                ls(&[("a", "1")]),
                Ordering::Equal,
            ),
        ];
        for (what, a, b, expected) in cases {
            assert_eq!(a.cmp(&b), expected, "{what}");
            assert_eq!(b.cmp(&a), expected.reverse(), "{what} (reversed)");
        }
    }

    #[test]
    fn display_quotes_values_like_go() {
        let cases: Vec<(&str, Pairs, &str)> = vec![
            (
                "plain values",
                vec![("__name__", "up"), ("job", "x")],
                r#"{__name__="up", job="x"}"#,
            ),
            (
                "quotes and backslashes",
                vec![("a", r#"say "hi" \o/"#)],
                r#"{a="say \"hi\" \\o/"}"#,
            ),
            (
                "C escapes",
                vec![("a", "\u{7}\u{8}\u{c}\n\r\t\u{b}")],
                r#"{a="\a\b\f\n\r\t\v"}"#,
            ),
            (
                "other control bytes",
                vec![("a", "\u{0}\u{1b}\u{7f}")],
                r#"{a="\x00\x1b\x7f"}"#,
            ),
            (
                "printable non-ASCII",
                vec![("a", "é日本ü€")],
                r#"{a="é日本ü€"}"#,
            ),
            (
                "Latin-1 oddities",
                vec![("a", "\u{85}\u{a0}\u{ad}")],
                r#"{a="\u0085\u00a0\u00ad"}"#,
            ),
            (
                "format and separator runes",
                vec![("a", "\u{200b}\u{2028}\u{feff}")],
                r#"{a="\u200b\u2028\ufeff"}"#,
            ),
            (
                "astral private use and emoji",
                vec![("a", "\u{f0000}😀")],
                r#"{a="\U000f0000😀"}"#,
            ),
            ("empty value", vec![("a", "")], r#"{a=""}"#),
        ];
        for (what, pairs, expected) in cases {
            let l = Labels::from_sorted_pairs(pairs.iter().copied());
            assert_eq!(l.to_string(), expected, "{what}");
            assert_eq!(format!("{l:?}"), expected, "{what}");
        }
        assert_eq!(go_quote("a\"b"), r#""a\"b""#);
    }

    #[test]
    fn decoding_a_corrupt_buffer_stops_without_panicking() {
        let corrupt = [
            "\u{7f}",       // continuation with nothing after
            "\u{5}ab",      // length runs past the end
            "\u{1}a",       // name without a value
            "\u{1}a\u{3}é", // value length splits a UTF-8 sequence
            "\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{7f}\u{1}", // overflow
        ];
        for data in corrupt {
            let l = Labels { data: data.into() };
            assert_eq!(l.iter().count(), 0, "{data:?}");
            assert_eq!(l.get("a"), None);
        }
    }

    fn pairs_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
        // Tiny alphabets so prefixes and equal names are common.
        prop::collection::vec(("[ab_é]{0,3}", "[ab\u{0}\u{ff}é]{0,3}"), 0..5)
    }

    fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    proptest! {
        #[test]
        fn ord_agrees_with_comparing_sorted_pair_vectors(a in pairs_strategy(), b in pairs_strategy()) {
            let (va, vb) = (sorted(a.clone()), sorted(b.clone()));
            let (la, lb) = (Labels::from_pairs(a), Labels::from_pairs(b));
            prop_assert_eq!(la.cmp(&lb), va.cmp(&vb));
            prop_assert_eq!(la == lb, va == vb);
        }

        #[test]
        fn from_pairs_of_iter_round_trips(a in pairs_strategy()) {
            let l = Labels::from_pairs(a.clone());
            let back: Vec<(String, String)> =
                l.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
            prop_assert_eq!(&back, &sorted(a));
            prop_assert_eq!(Labels::from_pairs(l.iter()), l.clone());
            prop_assert_eq!(Labels::from_sorted_pairs(l.iter()), l.clone());
            prop_assert!(l.eq_sorted_pairs(back.iter().map(|(n, v)| (n.as_str(), v.as_str()))));
            prop_assert_eq!(l.hash(), xxh64(&concat_for_hash(
                &back.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect::<Vec<_>>()), 0));
            for (n, v) in &back {
                // get returns the first of duplicate names.
                let first = back.iter().find(|(m, _)| m == n).map(|(_, w)| w.as_str());
                prop_assert_eq!(l.get(n), first);
                let _ = v;
            }
        }
    }
}
