//! The engine's error ([`DbError`]) and the vocabulary of housekeeping failures: below `db`
//! and `querier` (both return it), above the modules whose errors it carries.

use std::path::PathBuf;

use crate::tsdb::block::{BlockError, Ulid};
use crate::tsdb::chunkenc::DecodeError;
use crate::tsdb::fileutil::LockError;
use crate::tsdb::head::chunks::ChunkFileError;
use crate::tsdb::wal::WalError;

/// The points where a test may stop a housekeeping run as a crash would ([`Options::fault`](crate::tsdb::Options::fault)).
/// Every crash matrix iterates [`FaultPoint::ALL`] (by [`FaultPoint::step`]), so a new point
/// is tested as soon as it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// Head compaction: before raising the head's lower bound.
    RaiseMinValid,
    /// Before writing the head block.
    WriteBlock,
    /// After the block is durable, before readers see it.
    PublishBlock,
    /// Before truncating the head.
    TruncateHead,
    /// WAL truncation: before writing the checkpoint.
    Checkpoint,
    /// After the checkpoint, before deleting the segments it covers.
    TruncateWal,
    /// Before deleting older checkpoints.
    DeleteCheckpoints,
    /// A merge: before writing the merged block.
    MergeWrite,
    /// After the merged block is durable, before readers see it.
    MergePublish,
    /// After readers see the merged block, before its parents are deleted.
    MergeDeleteParents,
    /// Retention: before deleting the blocks it chose.
    RetentionDelete,
}

impl FaultPoint {
    pub const ALL: [FaultPoint; 11] = [
        FaultPoint::RaiseMinValid,
        FaultPoint::WriteBlock,
        FaultPoint::PublishBlock,
        FaultPoint::TruncateHead,
        FaultPoint::Checkpoint,
        FaultPoint::TruncateWal,
        FaultPoint::DeleteCheckpoints,
        FaultPoint::MergeWrite,
        FaultPoint::MergePublish,
        FaultPoint::MergeDeleteParents,
        FaultPoint::RetentionDelete,
    ];

    /// The housekeeping step the point lies in.
    pub fn step(self) -> Step {
        use FaultPoint as F;
        match self {
            F::RaiseMinValid | F::WriteBlock | F::PublishBlock | F::TruncateHead => {
                Step::HeadCompaction
            }
            F::Checkpoint | F::TruncateWal | F::DeleteCheckpoints => Step::WalTruncation,
            F::MergeWrite | F::MergePublish | F::MergeDeleteParents => Step::Merge,
            F::RetentionDelete => Step::Retention,
        }
    }

    pub fn as_str(self) -> &'static str {
        use FaultPoint as F;
        match self {
            F::RaiseMinValid => "raise-min-valid",
            F::WriteBlock => "write-block",
            F::PublishBlock => "publish-block",
            F::TruncateHead => "truncate-head",
            F::Checkpoint => "checkpoint",
            F::TruncateWal => "truncate-wal",
            F::DeleteCheckpoints => "delete-checkpoints",
            F::MergeWrite => "merge-write",
            F::MergePublish => "merge-publish",
            F::MergeDeleteParents => "merge-delete-parents",
            F::RetentionDelete => "retention-delete",
        }
    }
}

impl std::fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Chunks(#[from] ChunkFileError),
    #[error("chunk of series {series} is undecodable: {source}")]
    Decode { series: String, source: DecodeError },
    #[error("invalid option: {0}")]
    Options(String),
    /// The engine found its own state contradicting itself: a bug, never the input's fault.
    #[error("internal invariant broken (a bug in cairn; please report it): {0}")]
    Invariant(String),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(
        "block {path}: {source} (move the block out of the data directory to start without it)"
    )]
    OpenBlock { path: PathBuf, source: BlockError },
    #[error("injected fault at {0}")]
    Injected(FaultPoint),
    /// A block whose chunks this version cannot rewrite (native histograms): served as it
    /// is, left out of merges.
    #[error(
        "block {ulid} holds chunks of encoding {encoding} (native histograms), which this \
         version cannot rewrite: it is served as it is and left out of merges"
    )]
    Unmergeable { ulid: Ulid, encoding: u8 },
    /// More than one housekeeping step failed in one run; each is listed.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Steps(Vec<StepError>),
}

/// A housekeeping step ([`Db::housekeep`](crate::tsdb::Db::housekeep)); each runs every time whatever the others did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Head → blocks, head truncation.
    HeadCompaction,
    /// WAL checkpoint and deletion of the segments it covers.
    WalTruncation,
    /// Leveled (and tombstone-free) merges of blocks.
    Merge,
    /// Retention by time and size.
    Retention,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::HeadCompaction => "head compaction",
            Step::WalTruncation => "WAL truncation",
            Step::Merge => "block merge",
            Step::Retention => "retention",
        }
    }
}

/// A housekeeping step that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", .step.as_str())]
pub struct StepError {
    pub step: Step,
    #[source]
    pub error: DbError,
}

impl DbError {
    /// What retrying the same operation can bring.
    pub fn retry(&self) -> crate::tsdb::Retry {
        use crate::tsdb::Retry;
        match self {
            DbError::Io { .. } | DbError::Injected(_) => Retry::Maybe,
            DbError::Wal(e) => e.retry(),
            DbError::Chunks(e) => e.retry(),
            DbError::Block(e) => e.retry(),
            DbError::Steps(errors) => errors
                .iter()
                .map(|e| e.error.retry())
                .min_by_key(|r| match r {
                    Retry::Soon => 0,
                    Retry::Maybe => 1,
                    Retry::Never => 2,
                })
                .unwrap_or(Retry::Maybe),
            DbError::Lock(_)
            | DbError::Decode { .. }
            | DbError::Options(_)
            | DbError::Invariant(_)
            | DbError::OpenBlock { .. }
            | DbError::Unmergeable { .. } => Retry::Never,
        }
    }
}
