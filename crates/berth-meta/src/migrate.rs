//! Embedded, versioned schema migrations, one SQL file per backend per version.

use sqlx::{AnyPool, Row};

use crate::{Backend, MetaError, Result};

struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: include_str!("../migrations/0001_core.sqlite.sql"),
        postgres: include_str!("../migrations/0001_core.postgres.sql"),
    },
    // Written in the SQL both dialects accept.
    Migration {
        version: 2,
        sqlite: include_str!("../migrations/0002_ecr.sql"),
        postgres: include_str!("../migrations/0002_ecr.sql"),
    },
    Migration {
        version: 3,
        sqlite: include_str!("../migrations/0003_policies.sql"),
        postgres: include_str!("../migrations/0003_policies.sql"),
    },
    Migration {
        version: 4,
        sqlite: include_str!("../migrations/0004_audit.sqlite.sql"),
        postgres: include_str!("../migrations/0004_audit.postgres.sql"),
    },
    Migration {
        version: 5,
        sqlite: include_str!("../migrations/0005_iam.sql"),
        postgres: include_str!("../migrations/0005_iam.sql"),
    },
    Migration {
        version: 6,
        sqlite: include_str!("../migrations/0006_lifecycle.sql"),
        postgres: include_str!("../migrations/0006_lifecycle.sql"),
    },
    Migration {
        version: 7,
        sqlite: include_str!("../migrations/0007_gc.sql"),
        postgres: include_str!("../migrations/0007_gc.sql"),
    },
    Migration {
        version: 8,
        sqlite: include_str!("../migrations/0008_scan.sql"),
        postgres: include_str!("../migrations/0008_scan.sql"),
    },
    Migration {
        version: 9,
        sqlite: include_str!("../migrations/0009_scan_jobs.sql"),
        postgres: include_str!("../migrations/0009_scan_jobs.sql"),
    },
    Migration {
        version: 10,
        sqlite: include_str!("../migrations/0010_layer_scans.sqlite.sql"),
        postgres: include_str!("../migrations/0010_layer_scans.postgres.sql"),
    },
    Migration {
        version: 11,
        sqlite: include_str!("../migrations/0011_gc_indexes.sql"),
        postgres: include_str!("../migrations/0011_gc_indexes.sql"),
    },
    Migration {
        version: 12,
        sqlite: include_str!("../migrations/0012_jobs_events.sqlite.sql"),
        postgres: include_str!("../migrations/0012_jobs_events.postgres.sql"),
    },
    Migration {
        version: 13,
        sqlite: include_str!("../migrations/0013_upload_state.sqlite.sql"),
        postgres: include_str!("../migrations/0013_upload_state.postgres.sql"),
    },
    Migration {
        version: 14,
        sqlite: include_str!("../migrations/0014_sealing.sqlite.sql"),
        postgres: include_str!("../migrations/0014_sealing.postgres.sql"),
    },
    Migration {
        version: 15,
        sqlite: include_str!("../migrations/0015_kms.sqlite.sql"),
        postgres: include_str!("../migrations/0015_kms.postgres.sql"),
    },
    Migration {
        version: 16,
        sqlite: include_str!("../migrations/0016_replication.sql"),
        postgres: include_str!("../migrations/0016_replication.sql"),
    },
    Migration {
        version: 17,
        sqlite: include_str!("../migrations/0017_pull_through.sql"),
        postgres: include_str!("../migrations/0017_pull_through.sql"),
    },
    Migration {
        version: 18,
        sqlite: include_str!("../migrations/0018_secret_versions.sql"),
        postgres: include_str!("../migrations/0018_secret_versions.sql"),
    },
];

pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    let mut tx = pool.begin().await?;
    if backend == Backend::Postgres {
        // Several nodes may start at once; one migrates, the others wait here.
        sqlx::query("SELECT pg_advisory_xact_lock(7348211)").execute(&mut *tx).await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS berth_schema (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: i64 =
        sqlx::query("SELECT COALESCE(MAX(version), 0) FROM berth_schema").fetch_one(&mut *tx).await?.try_get(0)?;
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > newest {
        return Err(MetaError::Migration(format!(
            "database schema version {current} is newer than this binary's ({newest}); upgrade berth"
        )));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let sql = match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(stmt)
                .execute(&mut *tx)
                .await
                .map_err(|e| MetaError::Migration(format!("version {}: {e}", m.version)))?;
        }
        sqlx::query("INSERT INTO berth_schema (version, applied_at) VALUES ($1, $2)")
            .bind(m.version)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = m.version, "applied metadata migration");
    }
    let applied = MIGRATIONS.iter().any(|m| m.version > current);
    tx.commit().await?;
    // Migrations may bulk-load rows (0007 makes every blob a collection candidate): give the
    // planner statistics for them now rather than at the next autovacuum.
    if applied && backend == Backend::Postgres {
        sqlx::query("ANALYZE").execute(pool).await?;
    }
    Ok(())
}
