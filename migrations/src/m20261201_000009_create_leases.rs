//! Named leases: which tracker holds a role (`planner`: replication planning, sweeps and
//! repair) and until when. Taken and renewed with one conditional UPDATE, so exactly one
//! tracker on a database holds a lease at a time.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Leases {
    Table,
    Name,
    Holder,
    ExpiresAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Leases::Table)
                    .if_not_exists()
                    .col(string_len(Leases::Name, 32).primary_key())
                    .col(string_len(Leases::Holder, 32))
                    .col(big_integer(Leases::ExpiresAtMs))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Leases::Table).to_owned())
            .await
    }
}
