//! Collections of representations at rest: where the shards are, what the manifest says, writing a shard
//! atomically and reading shards back. Nothing here knows about models; the collector
//! ([`crate::collect`]) is one user, sparse-autoencoder training another.

pub mod layout;
pub mod manifest;
pub mod reader;
pub mod shard_io;
pub mod sources;

pub use manifest::Manifest;
pub use reader::{Collection, ShardState, ShardStatus, ShardTensors, StreamOptions, TokenStream};
