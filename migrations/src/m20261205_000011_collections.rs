//! Collections (shared folders): the listing of each file the tracker knows as one, the
//! file's whole content, checked against its manifest when it was announced. A row lives
//! as long as its `files` row: the tracker deletes both together.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Collections {
    Table,
    FileId,
    Listing,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Collections::Table)
                    .if_not_exists()
                    .col(string_len(Collections::FileId, 64).primary_key())
                    .col(blob(Collections::Listing))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Collections::Table).to_owned())
            .await
    }
}
