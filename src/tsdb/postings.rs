//! Prometheus's `PostingsForMatchers`, shared by the head's in-memory postings and the blocks'
//! index: a matcher that matches `""` also selects series without its label, so it is applied
//! by removing the series whose value fails it; the others are intersected, smallest first.
//! Only when every matcher matches `""` (or there is none) does the result start from every
//! series.

use crate::model::{MatchType, Matcher};

/// Where postings come from: ascending series IDs per label pair.
pub trait PostingsSource {
    type Id: Ord + Copy;
    type Error;
    /// Series with `name="value"`.
    fn exact(&self, name: &str, value: &str) -> Result<Vec<Self::Id>, Self::Error>;
    /// Series whose `name` has a value satisfying `pred` (union over those values).
    fn matching(
        &self,
        name: &str,
        pred: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<Self::Id>, Self::Error>;
    /// Every series.
    fn all(&self) -> Result<Vec<Self::Id>, Self::Error>;
}

/// Series matching every matcher, ascending.
pub fn for_matchers<S: PostingsSource>(
    src: &S,
    matchers: &[Matcher],
) -> Result<Vec<S::Id>, S::Error> {
    let mut include: Vec<Vec<S::Id>> = Vec::new();
    let mut exclude: Vec<S::Id> = Vec::new();
    for m in matchers {
        if m.matches_empty() {
            exclude.extend(match m.kind {
                MatchType::NotEqual => src.exact(&m.name, &m.value)?,
                _ => src.matching(&m.name, &|v| !m.matches(v))?,
            });
        } else {
            let list = match m.kind {
                MatchType::Equal => src.exact(&m.name, &m.value)?,
                _ => src.matching(&m.name, &|v| m.matches(v))?,
            };
            if list.is_empty() {
                return Ok(Vec::new());
            }
            include.push(list);
        }
    }
    include.sort_by_key(Vec::len);
    let mut it = include.into_iter();
    let mut base = match it.next() {
        Some(first) => first,
        None => src.all()?,
    };
    for other in it {
        base = intersect(&base, &other);
    }
    if !exclude.is_empty() {
        exclude.sort_unstable();
        exclude.dedup();
        base.retain(|r| exclude.binary_search(r).is_err());
    }
    Ok(base)
}

/// Intersection of two ascending lists.
pub fn intersect<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        match x.cmp(&y) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(x);
                i += 1;
                j += 1;
            }
        }
    }
    out
}
