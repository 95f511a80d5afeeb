//! Point-in-time recovery: the live WAL captured frame by frame ([`stream`]), kept as
//! segments of generations ([`segment`], [`generation`]), and replayed onto a snapshot
//! to rebuild the database as it was at any captured moment ([`replay`], [`pitr`]).

pub use atocore_wal::{format, replay, segment};
pub mod follow;
pub mod generation;
pub mod pitr;
pub mod stream;

pub use format::WalPosition;
pub use stream::{End, Start, StepReport, StreamOptions, Streamer};
