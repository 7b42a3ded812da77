//! PLACEHOLDER until the real model lands (same API).
#![allow(missing_docs, clippy::all)]
use std::fmt;
#[derive(Clone, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);
impl Labels {
    pub fn new() -> Self {
        Labels(Vec::new())
    }
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Labels {
        let mut v: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(n, v)| (n.as_ref().to_string(), v.as_ref().to_string()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Labels(v)
    }
    pub fn from_sorted_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Labels {
        Labels(
            pairs
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(a, b)| (a.as_str(), b.as_str()))
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|p| p.0 == name).map(|p| p.1.as_str())
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn hash(&self) -> u64 {
        hash_sorted_pairs(self.iter())
    }
    pub fn heap_size(&self) -> usize {
        0
    }
    pub fn eq_sorted_pairs<'a>(&self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        let mut it = pairs.into_iter();
        for (a, b) in self.iter() {
            match it.next() {
                Some((c, d)) if a == c && b == d => {}
                _ => return false,
            }
        }
        it.next().is_none()
    }
}
pub fn hash_sorted_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for (n, v) in pairs {
        h.update(n.as_bytes());
        h.update(&[0xff]);
        h.update(v.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}
impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchType {
    Equal = 0,
    NotEqual = 1,
    Regex = 2,
    NotRegex = 3,
}
#[derive(Clone, Debug)]
pub struct Matcher {
    pub kind: MatchType,
    pub name: String,
    pub value: String,
    re: Option<regex::Regex>,
}
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error("bad regex {pattern}: {reason}")]
    InvalidRegex { pattern: String, reason: String },
}
impl Matcher {
    pub fn new(
        kind: MatchType,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Matcher, MatcherError> {
        let value = value.into();
        let re = match kind {
            MatchType::Regex | MatchType::NotRegex => {
                Some(regex::Regex::new(&format!("^(?s:{value})$")).map_err(|e| {
                    MatcherError::InvalidRegex {
                        pattern: value.clone(),
                        reason: e.to_string(),
                    }
                })?)
            }
            _ => None,
        };
        Ok(Matcher {
            kind,
            name: name.into(),
            value,
            re,
        })
    }
    pub fn matches(&self, s: &str) -> bool {
        match self.kind {
            MatchType::Equal => s == self.value,
            MatchType::NotEqual => s != self.value,
            MatchType::Regex => self.re.as_ref().map_or(false, |r| r.is_match(s)),
            MatchType::NotRegex => !self.re.as_ref().map_or(false, |r| r.is_match(s)),
        }
    }
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }
}
pub fn matches_labels(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers
        .iter()
        .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
}
