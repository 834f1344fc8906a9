use argon2 as _;
use axum as _;
use clap as _;
use sea_orm as _;
fn main() {}
