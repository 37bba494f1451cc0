//! The jobs table: background work that survives restarts and spreads over nodes. A node claims a
//! due job for a lease it renews while it works; a job whose node died is claimed again once its
//! lease has passed. On PostgreSQL claims skip rows another node is claiming (`FOR UPDATE SKIP
//! LOCKED`); on SQLite the single writer serialises them.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::{Backend, Meta, Result, now_ms};

/// A job as claimed by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub id: i64,
    pub queue: String,
    pub unique_key: Option<String>,
    pub payload: String,
    /// Claims so far, this one included.
    pub attempts: i64,
    /// Changes each time the job is asked for again (see [`Meta::enqueue_job`]).
    pub generation: i64,
    /// Completed rounds of a periodic job before this one.
    pub runs: i64,
}

/// Why a singleton job could not be claimed, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotClaimed {
    /// Not due before this time (ms).
    NotDue(i64),
    /// Another node holds it until this time (ms).
    Held { by: String, until: i64 },
    /// No such job.
    Missing,
}

/// Jobs of one queue: how many wait or run, and how many of those a live lease holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    pub queued: i64,
    pub running: i64,
}

const JOB_COLS: &str = "id, queue, unique_key, payload, attempts, generation, runs";

fn job_row(r: &AnyRow) -> Result<JobRow> {
    Ok(JobRow {
        id: r.try_get(0)?,
        queue: r.try_get(1)?,
        unique_key: r.try_get(2)?,
        payload: r.try_get(3)?,
        attempts: r.try_get(4)?,
        generation: r.try_get(5)?,
        runs: r.try_get(6)?,
    })
}

/// Queues a job inside a transaction; see [`Meta::enqueue_job`] (and, `behind`,
/// [`Meta::enqueue_behind`]: a claim on the key is kept).
pub(crate) async fn enqueue_in(
    c: &mut AnyConnection,
    queue: &str,
    unique_key: Option<&str>,
    payload: &str,
    run_after: i64,
    behind: bool,
) -> Result<()> {
    let release = if behind { "" } else { "claimed_by = NULL, lease_until = NULL, " };
    let sql = format!(
        "INSERT INTO jobs (queue, unique_key, payload, run_after, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (unique_key) DO UPDATE SET payload = excluded.payload, run_after = excluded.run_after, \
         attempts = 0, {release}generation = jobs.generation + 1, created_at = excluded.created_at, last_error = NULL"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(queue)
        .bind(unique_key)
        .bind(payload)
        .bind(run_after)
        .bind(now_ms())
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Removes a finished job unless it was asked for again since it was claimed.
pub(crate) async fn finish_in(c: &mut AnyConnection, job: &JobRow) -> Result<bool> {
    let n = sqlx::query("DELETE FROM jobs WHERE id = $1 AND generation = $2")
        .bind(job.id)
        .bind(job.generation)
        .execute(&mut *c)
        .await?
        .rows_affected();
    Ok(n == 1)
}

impl Meta {
    /// Queues a job due at `run_after` (ms). A `unique_key` already queued is asked for again:
    /// its payload and due time are replaced, its attempts and claim cleared, so the newest
    /// request is the one that runs (a node still running the older one cannot finish it away).
    pub async fn enqueue_job(
        &self,
        queue: &str,
        unique_key: Option<&str>,
        payload: &str,
        run_after: i64,
    ) -> Result<()> {
        let (queue, key, payload) = (queue.to_string(), unique_key.map(str::to_string), payload.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move { enqueue_in(c, &queue, key.as_deref(), &payload, run_after, false).await })
        }))
        .await
    }

    /// Queues a job like [`Meta::enqueue_job`], except that a run already holding `unique_key`
    /// keeps its claim: the newer request is claimed once that run ends (its worker gives it
    /// back), so runs of one key never overlap and the newest request runs last.
    pub async fn enqueue_behind(&self, queue: &str, unique_key: &str, payload: &str, run_after: i64) -> Result<()> {
        let (queue, key, payload) = (queue.to_string(), unique_key.to_string(), payload.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move { enqueue_in(c, &queue, Some(&key), &payload, run_after, true).await })
        }))
        .await
    }

    /// Extends `node`'s claim on a job whatever its generation (see [`Meta::enqueue_behind`]).
    pub async fn renew_claim(&self, job: &JobRow, node: &str, until: i64) -> Result<bool> {
        let (id, node) = (job.id, node.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query("UPDATE jobs SET lease_until = $1 WHERE id = $2 AND claimed_by = $3")
                    .bind(until)
                    .bind(id)
                    .bind(node.as_str())
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    /// Ends `node`'s claim on a one-off job that failed: due again at `run_after` with `error`
    /// kept, unless it was asked for again meanwhile (then the newer request is due at once).
    pub async fn retry_job(&self, job: &JobRow, node: &str, run_after: i64, error: &str) -> Result<bool> {
        let (id, generation, node, error) = (job.id, job.generation, node.to_string(), error.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE jobs SET claimed_by = NULL, lease_until = NULL, \
                     run_after = CASE WHEN generation = $1 THEN $2 ELSE run_after END, \
                     last_error = CASE WHEN generation = $1 THEN $3 ELSE NULL END \
                     WHERE id = $4 AND claimed_by = $5",
                )
                .bind(generation)
                .bind(run_after)
                .bind(error.as_str())
                .bind(id)
                .bind(node.as_str())
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    /// Finishes a one-off job run by `node`: removed, unless it was asked for again meanwhile;
    /// then it is given back for the newer request to run. Whether it was removed.
    pub async fn complete_job(&self, job: &JobRow, node: &str) -> Result<bool> {
        let (job, node) = (job.clone(), node.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                if finish_in(c, &job).await? {
                    return Ok(true);
                }
                sqlx::query("UPDATE jobs SET claimed_by = NULL, lease_until = NULL WHERE id = $1 AND claimed_by = $2")
                    .bind(job.id)
                    .bind(node.as_str())
                    .execute(&mut *c)
                    .await?;
                Ok(false)
            })
        }))
        .await
    }

    /// Makes sure the singleton job `unique_key` exists (first due at `run_after`); an existing
    /// one is left as it is.
    pub async fn ensure_job(&self, queue: &str, unique_key: &str, run_after: i64) -> Result<()> {
        let (queue, key) = (queue.to_string(), unique_key.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO jobs (queue, unique_key, payload, run_after, created_at) \
                     VALUES ($1, $2, '', $3, $4) ON CONFLICT (unique_key) DO NOTHING",
                )
                .bind(queue.as_str())
                .bind(key.as_str())
                .bind(run_after)
                .bind(now_ms())
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        }))
        .await
    }

    /// Claims the longest-due job of `queue` that no live lease holds, for `node` until `until`.
    pub async fn claim_job(&self, queue: &str, node: &str, now: i64, until: i64) -> Result<Option<JobRow>> {
        let (queue, node) = (queue.to_string(), node.to_string());
        let skip_locked = if self.backend == Backend::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let select = format!(
            "SELECT {JOB_COLS} FROM jobs WHERE queue = $1 AND run_after <= $2 \
             AND (lease_until IS NULL OR lease_until < $2) ORDER BY run_after, id LIMIT 1{skip_locked}"
        );
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let row = sqlx::query(sqlx::AssertSqlSafe(select))
                    .bind(queue.as_str())
                    .bind(now)
                    .fetch_optional(&mut *c)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let mut job = job_row(&row)?;
                sqlx::query("UPDATE jobs SET claimed_by = $1, lease_until = $2, attempts = attempts + 1 WHERE id = $3")
                    .bind(node.as_str())
                    .bind(until)
                    .bind(job.id)
                    .execute(&mut *c)
                    .await?;
                job.attempts += 1;
                Ok(Some(job))
            })
        }))
        .await
    }

    /// Claims the singleton job `unique_key` for `node` until `until`: when it is due (or
    /// `any_time`), and no other node's lease holds it. A lease `node` already holds is extended.
    pub async fn claim_singleton(
        &self,
        unique_key: &str,
        node: &str,
        now: i64,
        until: i64,
        any_time: bool,
    ) -> Result<Result<JobRow, NotClaimed>> {
        let (key, node) = (unique_key.to_string(), node.to_string());
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
        let select =
            format!("SELECT {JOB_COLS}, run_after, claimed_by, lease_until FROM jobs WHERE unique_key = $1{lock}");
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let Some(row) =
                    sqlx::query(sqlx::AssertSqlSafe(select)).bind(key.as_str()).fetch_optional(&mut *c).await?
                else {
                    return Ok(Err(NotClaimed::Missing));
                };
                let mut job = job_row(&row)?;
                let run_after: i64 = row.try_get(7)?;
                let by: Option<String> = row.try_get(8)?;
                let lease: Option<i64> = row.try_get(9)?;
                let mine = by.as_deref() == Some(node.as_str());
                if let (Some(by), Some(lease)) = (by, lease)
                    && lease >= now
                    && !mine
                {
                    return Ok(Err(NotClaimed::Held { by, until: lease }));
                }
                if !any_time && !mine && run_after > now {
                    return Ok(Err(NotClaimed::NotDue(run_after)));
                }
                sqlx::query(
                    "UPDATE jobs SET claimed_by = $1, lease_until = $2, \
                     attempts = attempts + CASE WHEN claimed_by = $1 THEN 0 ELSE 1 END WHERE id = $3",
                )
                .bind(node.as_str())
                .bind(until)
                .bind(job.id)
                .execute(&mut *c)
                .await?;
                if !mine {
                    job.attempts += 1;
                }
                Ok(Ok(job))
            })
        }))
        .await
    }

    /// Extends `node`'s lease on a job; false when the job is no longer its (asked for again,
    /// taken over after the lease ran out, or gone).
    pub async fn renew_job(&self, job: &JobRow, node: &str, until: i64) -> Result<bool> {
        let (id, generation, node) = (job.id, job.generation, node.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND generation = $3 AND claimed_by = $4",
                )
                .bind(until)
                .bind(id)
                .bind(generation)
                .bind(node.as_str())
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    /// Removes a finished one-off job (unless it was asked for again meanwhile: then it stays
    /// queued for the newer request). Whether it was removed.
    pub async fn finish_job(&self, job: &JobRow) -> Result<bool> {
        let job = job.clone();
        self.write_tx(Box::new(move |c| Box::pin(async move { finish_in(c, &job).await }))).await
    }

    /// Ends `node`'s claim and makes the job due again at `run_after`: after a periodic job's
    /// round (`completed`: its round count goes up), or after a failure (`error` is kept, the
    /// attempts too, for the back-off). False when the claim was no longer `node`'s.
    pub async fn reschedule_job(
        &self,
        job: &JobRow,
        node: &str,
        run_after: i64,
        completed: bool,
        error: Option<&str>,
    ) -> Result<bool> {
        let (id, node, error) = (job.id, node.to_string(), error.map(str::to_string));
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE jobs SET claimed_by = NULL, lease_until = NULL, run_after = $1, \
                     runs = runs + $2, attempts = CASE WHEN $2 = 1 THEN 0 ELSE attempts END, last_error = $3 \
                     WHERE id = $4 AND claimed_by = $5",
                )
                .bind(run_after)
                .bind(i64::from(completed))
                .bind(error.as_deref())
                .bind(id)
                .bind(node.as_str())
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    /// Gives a claimed job back at once (its worker was stopped): another node may take it
    /// without waiting for the lease, and the interrupted claim does not count as an attempt.
    pub async fn release_job(&self, job: &JobRow, node: &str) -> Result<bool> {
        let (id, node) = (job.id, node.to_string());
        self.write_tx(Box::new(move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE jobs SET claimed_by = NULL, lease_until = NULL, \
                     attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END WHERE id = $1 AND claimed_by = $2",
                )
                .bind(id)
                .bind(node.as_str())
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n == 1)
            })
        }))
        .await
    }

    /// When a job is next due (None: no such job).
    pub async fn job_due(&self, id: i64) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT run_after FROM jobs WHERE id = $1").bind(id).fetch_optional(&self.read).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Completed rounds of the singleton job `unique_key` (None: no such job).
    pub async fn job_runs(&self, unique_key: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT runs FROM jobs WHERE unique_key = $1")
            .bind(unique_key)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Jobs per queue, waiting or running (and how many of them a live lease holds).
    pub async fn job_counts(&self, now: i64) -> Result<Vec<(String, QueueCounts)>> {
        let rows = sqlx::query(
            "SELECT queue, COUNT(*), COALESCE(SUM(CASE WHEN lease_until >= $1 THEN 1 ELSE 0 END), 0) FROM jobs \
             GROUP BY queue ORDER BY queue",
        )
        .bind(now)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, QueueCounts { queued: r.try_get(1)?, running: r.try_get(2)? })))
            .collect()
    }
}
