//! Which peer holds which chunks of which file: one row per (peer, file) with a bitfield,
//! so a heartbeat-rate stream of chunk reports updates one small row.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Holdings {
    Table,
    PeerId,
    FileId,
    Kind,
    Have,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Holdings::Table)
                    .if_not_exists()
                    .col(string_len(Holdings::PeerId, 32))
                    .col(string_len(Holdings::FileId, 64))
                    .col(small_integer(Holdings::Kind))
                    .col(blob(Holdings::Have))
                    .col(big_integer(Holdings::UpdatedAt))
                    .primary_key(Index::create().col(Holdings::PeerId).col(Holdings::FileId))
                    .to_owned(),
            )
            .await?;
        // The primary key serves lookups by peer; forgetting a file looks up by file.
        manager
            .create_index(
                Index::create()
                    .name("idx_holdings_file_id")
                    .table(Holdings::Table)
                    .col(Holdings::FileId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Holdings::Table).to_owned())
            .await
    }
}
