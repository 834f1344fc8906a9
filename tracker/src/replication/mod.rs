//! Replication: keeping `--replication N` live copies of every chunk on distinct peers.
//!
//! - [`policy`]: the pure placement rules (who receives a copy, whose surplus copy goes).
//! - [`tasks`]: the in-memory task table with its indexes, back-off and leases.
//!
//! The planner, the delivery over the `Tasks` stream and task completion live in
//! `app::replication`, because they work on the tracker's in-memory index.

pub mod policy;
pub mod tasks;

pub use tasks::TaskTable;
