//! Peer nodes: who owns each peer id, where it listens, what storage it offers, and when it
//! was last heard from (liveness survives a tracker restart).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Peers {
    Table,
    Id,
    UserId,
    Addr,
    StorageQuota,
    StorageUsed,
    LastSeen,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Peers::Table)
                    .if_not_exists()
                    .col(string_len(Peers::Id, 32).primary_key())
                    .col(integer(Peers::UserId))
                    .col(string_len(Peers::Addr, 512))
                    .col(big_integer(Peers::StorageQuota))
                    .col(big_integer(Peers::StorageUsed))
                    .col(big_integer_null(Peers::LastSeen))
                    .col(big_integer(Peers::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_peers_user_id")
                    .table(Peers::Table)
                    .col(Peers::UserId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Peers::Table).to_owned())
            .await
    }
}
