//! The change feed that keeps several trackers on one database coherent: every committed
//! write appends one row (what changed, serialized), and every tracker follows the rows
//! other trackers appended. Ids come from the database and are committed in id order (see
//! `tracker::db::changes`), so a follower that has read up to id N never misses one below.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Changes {
    Table,
    Id,
    Origin,
    Payload,
    AtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Changes::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Changes::Id))
                    .col(string_len(Changes::Origin, 32))
                    .col(text(Changes::Payload))
                    .col(big_integer(Changes::AtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_changes_at_ms")
                    .table(Changes::Table)
                    .col(Changes::AtMs)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Changes::Table).to_owned())
            .await
    }
}
