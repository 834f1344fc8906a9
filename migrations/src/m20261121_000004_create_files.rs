//! Files by content id, with the whole manifest (chunk hashes packed 32 bytes each), so
//! the tracker can hand out a chunk map without asking any peer.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Files {
    Table,
    Id,
    Name,
    Size,
    Sha256,
    Type,
    ChunkSize,
    ChunkCount,
    ChunkHashes,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Files::Table)
                    .if_not_exists()
                    .col(string_len(Files::Id, 64).primary_key())
                    .col(text(Files::Name))
                    .col(big_integer(Files::Size))
                    .col(string_len(Files::Sha256, 64))
                    .col(string_len(Files::Type, 16))
                    .col(integer(Files::ChunkSize))
                    .col(integer(Files::ChunkCount))
                    .col(blob(Files::ChunkHashes))
                    .col(big_integer(Files::CreatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Files::Table).to_owned())
            .await
    }
}
