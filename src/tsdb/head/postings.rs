//! In-memory inverted index: label pair → sorted series refs, and matcher resolution with
//! Prometheus's semantics (`tsdb/querier.go` `PostingsForMatchers`).

use std::collections::HashMap;

use crate::model::Matcher;

/// Postings of the head. Guarded by one `RwLock` in `Head`: written only when a series is
/// created or removed, never on the per-sample path.
#[derive(Debug, Default)]
pub struct MemPostings {
    /// name → value → refs ascending.
    m: HashMap<Box<str>, HashMap<Box<str>, Vec<u64>>>,
    /// Every series, ascending (Prometheus's all-postings key `("", "")`).
    all: Vec<u64>,
}

fn insert_sorted(v: &mut Vec<u64>, r: u64) {
    // Refs are allocated in increasing order, so this is almost always a push.
    match v.last() {
        Some(&last) if last >= r => {
            if let Err(pos) = v.binary_search(&r) {
                v.insert(pos, r);
            }
        }
        _ => v.push(r),
    }
}

impl MemPostings {
    pub fn add<'a>(&mut self, sref: u64, labels: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (n, v) in labels {
            let values = match self.m.get_mut(n) {
                Some(values) => values,
                None => self.m.entry(n.into()).or_default(),
            };
            match values.get_mut(v) {
                Some(list) => insert_sorted(list, sref),
                None => {
                    values.insert(v.into(), vec![sref]);
                }
            }
        }
        insert_sorted(&mut self.all, sref);
    }

    /// Remove series (head truncation). Each affected list is filtered once, however many of
    /// its series go; empty lists and names are dropped.
    pub fn delete<'a>(
        &mut self,
        series: impl IntoIterator<Item = (u64, &'a crate::model::Labels)>,
    ) {
        let mut gone: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let mut touched: std::collections::HashSet<(&'a str, &'a str)> =
            std::collections::HashSet::new();
        for (sref, labels) in series {
            gone.insert(sref);
            touched.extend(labels.iter());
        }
        if gone.is_empty() {
            return;
        }
        for (n, v) in touched {
            let Some(values) = self.m.get_mut(n) else {
                continue;
            };
            if let Some(list) = values.get_mut(v) {
                list.retain(|r| !gone.contains(r));
                if list.is_empty() {
                    values.remove(v);
                }
            }
            if values.is_empty() {
                self.m.remove(n);
            }
        }
        self.all.retain(|r| !gone.contains(r));
    }

    pub fn all(&self) -> &[u64] {
        &self.all
    }

    pub fn get(&self, name: &str, value: &str) -> &[u64] {
        self.m
            .get(name)
            .and_then(|vs| vs.get(value))
            .map_or(&[], Vec::as_slice)
    }

    /// Label names, sorted.
    pub fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.m.keys().map(|k| k.to_string()).collect();
        v.sort_unstable();
        v
    }

    /// Values of `name`, sorted.
    pub fn label_values(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .m
            .get(name)
            .map(|vs| vs.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Refs of every series with a value of `m.name` for which `pred` holds, sorted, deduplicated.
    fn union_where(&self, name: &str, pred: impl Fn(&str) -> bool) -> Vec<u64> {
        let Some(values) = self.m.get(name) else {
            return Vec::new();
        };
        let mut lists: Vec<&[u64]> = values
            .iter()
            .filter(|(v, _)| pred(v))
            .map(|(_, l)| l.as_slice())
            .collect();
        match lists.len() {
            0 => Vec::new(),
            1 => lists.pop().map(<[u64]>::to_vec).unwrap_or_default(),
            _ => {
                let mut out: Vec<u64> = lists.concat();
                out.sort_unstable();
                out.dedup();
                out
            }
        }
    }

    /// Series matching all `matchers`, sorted by ref. A matcher against a missing label sees "".
    pub fn for_matchers(&self, matchers: &[Matcher]) -> Vec<u64> {
        match crate::tsdb::postings::for_matchers(self, matchers) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }
}

impl crate::tsdb::postings::PostingsSource for MemPostings {
    type Id = u64;
    type Error = std::convert::Infallible;
    fn exact(&self, name: &str, value: &str) -> Result<Vec<u64>, Self::Error> {
        Ok(self.get(name, value).to_vec())
    }
    fn matching(&self, name: &str, pred: &dyn Fn(&str) -> bool) -> Result<Vec<u64>, Self::Error> {
        Ok(self.union_where(name, pred))
    }
    fn all(&self) -> Result<Vec<u64>, Self::Error> {
        Ok(self.all.clone())
    }
}

pub use crate::tsdb::postings::intersect;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::{matches_labels, Labels, MatchType};

    fn m(kind: MatchType, n: &str, v: &str) -> Matcher {
        Matcher::new(kind, n, v).unwrap()
    }

    #[test]
    fn matchers_select_like_prometheus_including_missing_labels() {
        let series = [
            Labels::from_pairs([("__name__", "up"), ("job", "a"), ("instance", "1")]),
            Labels::from_pairs([("__name__", "up"), ("job", "b")]),
            Labels::from_pairs([("__name__", "up")]),
            Labels::from_pairs([("__name__", "down"), ("job", "a")]),
        ];
        let mut p = MemPostings::default();
        for (i, s) in series.iter().enumerate() {
            p.add(i as u64 + 1, s.iter());
        }
        use MatchType::*;
        let cases: Vec<(&str, Vec<Matcher>)> = vec![
            ("equal", vec![m(Equal, "job", "a")]),
            (
                "empty equal selects series without the label",
                vec![m(Equal, "job", "")],
            ),
            (
                "not equal keeps series without the label",
                vec![m(NotEqual, "job", "a")],
            ),
            ("not empty requires the label", vec![m(NotEqual, "job", "")]),
            (
                "regex dot star matches missing",
                vec![m(Equal, "__name__", "up"), m(Regex, "job", ".*")],
            ),
            ("regex dot plus needs a value", vec![m(Regex, "job", ".+")]),
            ("regex alternation with empty", vec![m(Regex, "job", "b|")]),
            ("negative regex", vec![m(NotRegex, "job", "a|b")]),
            ("unknown label equal", vec![m(Equal, "nope", "x")]),
            (
                "two matchers intersect",
                vec![m(Equal, "__name__", "up"), m(Regex, "instance", "1|2")],
            ),
        ];
        for (name, ms) in cases {
            let got = p.for_matchers(&ms);
            let want: Vec<u64> = series
                .iter()
                .enumerate()
                .filter(|(_, s)| matches_labels(&ms, s))
                .map(|(i, _)| i as u64 + 1)
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn out_of_order_refs_stay_sorted() {
        let mut p = MemPostings::default();
        p.add(5, [("a", "x")]);
        p.add(3, [("a", "x")]);
        p.add(4, [("a", "x")]);
        assert_eq!(p.get("a", "x"), &[3, 4, 5]);
        assert_eq!(p.all(), &[3, 4, 5]);
    }
}
