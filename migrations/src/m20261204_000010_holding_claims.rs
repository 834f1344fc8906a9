//! What the tracker knows of a holding beyond the peer's claim: `verified`, the bitfield of
//! the chunks an audit has seen the peer serve (only those count as copies), and `name`,
//! the name its sharer gave the file (each sharer names content on its own).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Holdings {
    Table,
    Verified,
    Name,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Holdings::Table)
                    .add_column_if_not_exists(blob(Holdings::Verified).default(Vec::<u8>::new()))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Holdings::Table)
                    .add_column_if_not_exists(string_len_null(Holdings::Name, 4096))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Holdings::Name, Holdings::Verified] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Holdings::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
