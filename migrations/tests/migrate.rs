//! The whole migration history applies, rolls back and re-applies on a real SQLite file.

use migrations::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::Database;

#[tokio::test]
async fn should_apply_roll_back_and_reapply_every_migration() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let db = Database::connect(&url).await.unwrap();
    Migrator::up(&db, None).await.unwrap();
    let manager = migrations::SchemaManager::new(&db);
    for table in [
        "users",
        "sessions",
        "peers",
        "files",
        "holdings",
        "tasks",
        "tracker_keys",
    ] {
        assert!(manager.has_table(table).await.unwrap(), "{table}");
    }
    Migrator::down(&db, None).await.unwrap();
    assert!(!manager.has_table("files").await.unwrap());
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(
        Migrator::get_pending_migrations(&db).await.unwrap().len(),
        0
    );
}
