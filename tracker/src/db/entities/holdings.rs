//! The `holdings` table.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "holdings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub peer_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub file_id: String,
    pub kind: i16,
    pub have: Vec<u8>,
    pub updated_at: i64,
    pub verified: Vec<u8>,
    pub name: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
