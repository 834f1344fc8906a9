//! The tracker's own keys: one row per named key. The first is `ticket`, the Ed25519 secret
//! that signs tickets; it is made by the first tracker to start and shared by every tracker
//! on the same database.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum TrackerKeys {
    Table,
    Name,
    Secret,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TrackerKeys::Table)
                    .if_not_exists()
                    .col(string_len(TrackerKeys::Name, 32).primary_key())
                    .col(blob(TrackerKeys::Secret))
                    .col(big_integer(TrackerKeys::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TrackerKeys::Table).to_owned())
            .await
    }
}
