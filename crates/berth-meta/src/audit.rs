//! The audit log: one row per recorded event, appended in batches, read back with filters.

use sqlx::Row;

use crate::{Meta, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    /// Unix milliseconds.
    pub event_time: i64,
    pub event_name: String,
    pub principal: Option<String>,
    pub source_ip: Option<String>,
    pub resource: Option<String>,
    /// `allow` or `deny`.
    pub decision: String,
    pub error: Option<String>,
    /// What else the event records (a lifecycle expiry: the rule that caused it).
    pub detail: Option<String>,
}

/// Which events to read; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub event_name: Option<String>,
    pub principal: Option<String>,
    /// Substring of the resource.
    pub resource: Option<String>,
    pub decision: Option<String>,
    /// Only events with a smaller id (paging backwards from the newest).
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Meta {
    pub async fn append_audit(&self, rows: Vec<AuditRow>) -> Result<()> {
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                for r in &rows {
                    sqlx::query(
                        "INSERT INTO audit_events (event_time, event_name, principal, source_ip, resource, decision, error, \
                         detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(r.event_time)
                    .bind(r.event_name.as_str())
                    .bind(r.principal.as_deref())
                    .bind(r.source_ip.as_deref())
                    .bind(r.resource.as_deref())
                    .bind(r.decision.as_str())
                    .bind(r.error.as_deref())
                    .bind(r.detail.as_deref())
                    .execute(&mut *c)
                    .await?;
                }
                Ok(())
            })
        }))
        .await
    }

    /// Events matching `f`, newest first.
    pub async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditRow>> {
        // `$n IS NULL OR ...` keeps one statement for every combination of filters.
        let rows = sqlx::query(
            "SELECT id, event_time, event_name, principal, source_ip, resource, decision, error, detail FROM audit_events \
             WHERE ($1 IS NULL OR event_time >= $1) AND ($2 IS NULL OR event_time < $2) \
             AND ($3 IS NULL OR event_name = $3) AND ($4 IS NULL OR principal = $4) \
             AND ($5 IS NULL OR resource LIKE '%' || $5 || '%') AND ($6 IS NULL OR decision = $6) \
             AND ($7 IS NULL OR id < $7) ORDER BY id DESC LIMIT $8",
        )
        .bind(f.since)
        .bind(f.until)
        .bind(f.event_name.as_deref())
        .bind(f.principal.as_deref())
        .bind(f.resource.as_deref())
        .bind(f.decision.as_deref())
        .bind(f.before_id)
        .bind(f.limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get(0)?,
                    event_time: r.try_get(1)?,
                    event_name: r.try_get(2)?,
                    principal: r.try_get(3)?,
                    source_ip: r.try_get(4)?,
                    resource: r.try_get(5)?,
                    decision: r.try_get(6)?,
                    error: r.try_get(7)?,
                    detail: r.try_get(8)?,
                })
            })
            .collect()
    }
}
