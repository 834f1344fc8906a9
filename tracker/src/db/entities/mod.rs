//! SeaORM entities, one per table (see `migrations/README.md`). They never leave `db`.

pub mod changes;
pub mod collections;
pub mod files;
pub mod holdings;
pub mod leases;
pub mod peers;
pub mod sessions;
pub mod tasks;
pub mod tracker_keys;
pub mod users;
