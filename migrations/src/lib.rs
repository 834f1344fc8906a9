//! The tracker's database schema as sea-orm-migration steps, one file per migration, so the
//! same history builds the schema on SQLite (the embedded default) and on PostgreSQL.
//!
//! The migrations are entity-free (schema builder only): the tracker's SeaORM entities live
//! in `tracker::db`, and the schema must not change when an entity is edited.
//! Timestamps are Unix milliseconds in `BIGINT` columns and sizes are signed 64-bit, because
//! PostgreSQL has no unsigned integers and both backends then store the same values.
//! `README.md` documents the tables.

pub use sea_orm_migration::prelude::*;

mod m20261121_000001_create_users;
mod m20261121_000002_create_sessions;
mod m20261121_000003_create_peers;
mod m20261121_000004_create_files;
mod m20261121_000005_create_holdings;
mod m20261122_000006_create_tasks;
mod m20261124_000007_create_tracker_keys;
mod m20261201_000008_create_changes;
mod m20261201_000009_create_leases;
mod m20261204_000010_holding_claims;
mod m20261205_000011_collections;

/// Every migration of the tracker's schema, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_create_users::Migration),
            Box::new(m20261121_000002_create_sessions::Migration),
            Box::new(m20261121_000003_create_peers::Migration),
            Box::new(m20261121_000004_create_files::Migration),
            Box::new(m20261121_000005_create_holdings::Migration),
            Box::new(m20261122_000006_create_tasks::Migration),
            Box::new(m20261124_000007_create_tracker_keys::Migration),
            Box::new(m20261201_000008_create_changes::Migration),
            Box::new(m20261201_000009_create_leases::Migration),
            Box::new(m20261204_000010_holding_claims::Migration),
            Box::new(m20261205_000011_collections::Migration),
        ]
    }
}
