//! The data model shared by ingestion, storage and querying: label sets and
//! label matchers, with the semantics of Prometheus 2.42's `model/labels`.
//!
//! * [`Labels`]: a sorted label set stored in a single heap allocation
//!   (compact, like Prometheus's `stringlabels`), ordered like
//!   `labels.Compare`, hashed like `labels.Hash()` (xxhash64), printed like
//!   `Labels.String()`.
//! * [`Matcher`]: `=`, `!=`, `=~`, `!~` matchers. Regexes are Go RE2
//!   patterns, fully anchored, translated so that they behave as in Go (see
//!   [`matcher`] for the translation and the differences that remain).
//!   [`matches_labels`] applies matchers to a series, a missing label being
//!   `""`.
//! * [`parse_selector`]: PromQL series selectors (`up{job="api"}`, the `match[]`
//!   parameter) into matchers, as Prometheus 2.42's `ParseMetricSelector`.

pub mod labels;
pub mod matcher;
mod re2;
pub mod selector;

pub use labels::{go_quote, hash_sorted_pairs, Labels, LabelsIter, METRIC_NAME};
pub use matcher::{matches_labels, MatchType, Matcher, MatcherError, DOT_MATCHES_NEWLINE};
pub use selector::{parse_selector, SelectorError, SelectorErrorKind};
