//! Replication work: one row per task the tracker assigned to a peer (fetch a chunk, drop
//! replica chunks), written before the task is delivered so a restarted tracker carries on.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Tasks {
    Table,
    Id,
    PeerId,
    Kind,
    FileId,
    Chunks,
    State,
    Attempts,
    NextAttemptAt,
    LeaseUntil,
    LastError,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tasks::Table)
                    .if_not_exists()
                    // Ids are assigned by the tracker (it plans in memory), not by the database.
                    .col(big_integer(Tasks::Id).primary_key())
                    .col(string_len(Tasks::PeerId, 32))
                    .col(small_integer(Tasks::Kind))
                    .col(string_len(Tasks::FileId, 64))
                    .col(text(Tasks::Chunks))
                    .col(small_integer(Tasks::State))
                    .col(integer(Tasks::Attempts))
                    .col(big_integer(Tasks::NextAttemptAt))
                    .col(big_integer_null(Tasks::LeaseUntil))
                    .col(text_null(Tasks::LastError))
                    .col(big_integer(Tasks::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_tasks_peer_id")
                    .table(Tasks::Table)
                    .col(Tasks::PeerId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Tasks::Table).to_owned())
            .await
    }
}
