//! The events outbox: each change that other parts of the registry react to is written here in
//! the transaction that makes it, and consumers read it in order from their own cursor.
//!
//! Ids must grow in commit order, or a consumer could pass an id whose transaction commits
//! later. SQLite has one writer, so they do; on PostgreSQL each writer takes one transaction lock
//! before it draws an id, held until its commit, so ids and commits follow the same order. The
//! lock is taken last in the transaction, so it is held only for its commit.

use sqlx::{AnyConnection, Row};

use crate::{Meta, Result, now_ms};

/// What happened. Stored as the text of [`EventKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A manifest new to its repository was stored (by any path).
    ManifestStored,
    /// A tag now names a manifest it did not name before.
    TagMoved,
    /// A tag was removed (the image stays).
    TagDeleted,
    /// An image was deleted (by any path: a client, lifecycle, repository deletion).
    ImageDeleted,
    /// A scan of an image finished (with any outcome).
    ScanCompleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ManifestStored => "manifest_stored",
            EventKind::TagMoved => "tag_moved",
            EventKind::TagDeleted => "tag_deleted",
            EventKind::ImageDeleted => "image_deleted",
            EventKind::ScanCompleted => "scan_completed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "manifest_stored" => EventKind::ManifestStored,
            "tag_moved" => EventKind::TagMoved,
            "tag_deleted" => EventKind::TagDeleted,
            "image_deleted" => EventKind::ImageDeleted,
            "scan_completed" => EventKind::ScanCompleted,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub id: i64,
    /// Unknown kinds (written by a newer version) are `None`: consumers pass over them.
    pub kind: Option<EventKind>,
    /// The repository key.
    pub repo: String,
    pub digest: Option<String>,
    pub tag: Option<String>,
    /// JSON with what the kind needs besides (a cause, a status, the tags that went).
    pub detail: Option<String>,
    pub created_at: i64,
}

/// Lock that orders PostgreSQL writers of events (see the module comment).
const EVENT_ORDER_LOCK: i64 = 7348212;

/// Takes the event-order lock for the rest of the transaction (PostgreSQL; SQLite has one writer).
async fn order_events(c: &mut AnyConnection) -> Result<()> {
    if c.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(EVENT_ORDER_LOCK).execute(&mut *c).await?;
    }
    Ok(())
}

/// Writes an event about repository `repo_id` in the current transaction.
pub(crate) async fn record(
    c: &mut AnyConnection,
    kind: EventKind,
    repo_id: i64,
    digest: Option<&str>,
    tag: Option<&str>,
    detail: Option<&str>,
) -> Result<()> {
    order_events(c).await?;
    sqlx::query(
        "INSERT INTO events (kind, repo, digest, tag, detail, created_at) \
         SELECT $1, name, $2, $3, $4, $5 FROM repositories WHERE id = $6",
    )
    .bind(kind.as_str())
    .bind(digest)
    .bind(tag)
    .bind(detail)
    .bind(now_ms())
    .bind(repo_id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Writes an `image_deleted` event for every image of repository `repo_id` (before they go with it).
pub(crate) async fn record_repo_images_deleted(c: &mut AnyConnection, repo_id: i64, detail: &str) -> Result<()> {
    order_events(c).await?;
    sqlx::query(
        "INSERT INTO events (kind, repo, digest, tag, detail, created_at) \
         SELECT $1, r.name, m.digest, NULL, $2, $3 FROM manifests m JOIN repositories r ON r.id = m.repo_id \
         WHERE m.repo_id = $4 ORDER BY m.digest",
    )
    .bind(EventKind::ImageDeleted.as_str())
    .bind(detail)
    .bind(now_ms())
    .bind(repo_id)
    .execute(&mut *c)
    .await?;
    Ok(())
}

impl Meta {
    /// Events after id `position`, oldest first, at most `limit`.
    pub async fn events_after(&self, position: i64, limit: i64) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT id, kind, repo, digest, tag, detail, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(position)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    id: r.try_get(0)?,
                    kind: EventKind::parse(&r.try_get::<String, _>(1)?),
                    repo: r.try_get(2)?,
                    digest: r.try_get(3)?,
                    tag: r.try_get(4)?,
                    detail: r.try_get(5)?,
                    created_at: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// The newest event's id (0 when there is none).
    pub async fn last_event_id(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COALESCE(MAX(id), 0) FROM events").fetch_one(&self.read).await?.try_get(0)?)
    }

    /// The position of `consumer`'s cursor, creating it at `start` when it has none.
    pub async fn event_cursor(&self, consumer: &str, start: i64) -> Result<i64> {
        let consumer = consumer.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO event_cursors (consumer, position, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (consumer) DO NOTHING",
                )
                .bind(consumer.as_str())
                .bind(start)
                .bind(now_ms())
                .execute(&mut *c)
                .await?;
                let row = sqlx::query("SELECT position FROM event_cursors WHERE consumer = $1")
                    .bind(consumer.as_str())
                    .fetch_one(&mut *c)
                    .await?;
                Ok(row.try_get(0)?)
            })
        }))
        .await
    }

    /// Moves `consumer`'s cursor from `from` to `to`; false (nothing changed) when it was no
    /// longer at `from` — another node consumed the same events.
    pub async fn advance_event_cursor(&self, consumer: &str, from: i64, to: i64) -> Result<bool> {
        let consumer = consumer.to_string();
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE event_cursors SET position = $1, updated_at = $2 WHERE consumer = $3 AND position = $4",
                )
                .bind(to)
                .bind(now_ms())
                .bind(consumer.as_str())
                .bind(from)
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    /// Whether an event of one of `kinds` about image `digest` of `repo` is past `consumer`'s cursor
    /// (written, not consumed yet).
    pub async fn event_pending(&self, consumer: &str, kinds: &[EventKind], repo: &str, digest: &str) -> Result<bool> {
        if kinds.is_empty() {
            return Ok(false);
        }
        let marks: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "SELECT 1 FROM events e WHERE e.repo = $1 AND e.digest = $2 AND e.kind IN ({}) \
             AND e.id > COALESCE((SELECT position FROM event_cursors WHERE consumer = $3), 0) LIMIT 1",
            marks.join(", ")
        );
        // Only placeholders are formatted in; every value is bound.
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(repo).bind(digest).bind(consumer);
        for k in kinds {
            q = q.bind(k.as_str());
        }
        Ok(q.fetch_optional(&self.read).await?.is_some())
    }

    /// Deletes events written before `before` (ms) that every consumer has read. How many went.
    pub async fn prune_events(&self, before: i64) -> Result<u64> {
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "DELETE FROM events WHERE created_at < $1 \
                     AND id <= COALESCE((SELECT MIN(position) FROM event_cursors), 0)",
                )
                .bind(before)
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n)
            })
        }))
        .await
    }
}
