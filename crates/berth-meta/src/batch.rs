//! Group commit for SQLite. SQLite has one writer and `synchronous=FULL` makes each commit wait
//! for an fsync, so concurrent pushes would queue one fsync each. Instead every write is a job
//! sent to one task that owns the write connection: it takes all jobs waiting, runs them in one
//! transaction (each inside a savepoint, so one job's failure does not undo the others), commits
//! once, and only then answers each job. Durability is unchanged: no job is acknowledged before
//! the commit that contains it is on disk.

use std::any::Any;

use futures_util::future::BoxFuture;
use sqlx::{AnyConnection, AnyPool};
use tokio::sync::{mpsc, oneshot};

use crate::{MetaError, Result};

/// Work done inside a write transaction.
pub(crate) type TxFn<T> = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T>> + Send>;

type AnyOut = Box<dyn Any + Send>;

struct Job {
    run: TxFn<AnyOut>,
    done: oneshot::Sender<Result<AnyOut>>,
}

/// Jobs taken into one transaction at most.
const MAX_BATCH: usize = 128;

#[derive(Clone)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    pub fn start(pool: AnyPool) -> Batcher {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(pool, rx));
        Batcher { tx }
    }

    pub async fn submit<T: Send + 'static>(&self, f: TxFn<T>) -> Result<T> {
        let (done, wait) = oneshot::channel();
        let run: TxFn<AnyOut> = Box::new(move |c| Box::pin(async move { f(c).await.map(|v| Box::new(v) as AnyOut) }));
        self.tx.send(Job { run, done }).await.map_err(|_| MetaError::Closed)?;
        let out = wait.await.map_err(|_| MetaError::Closed)??;
        Ok(*out.downcast::<T>().expect("a job's output has the type it was submitted with"))
    }
}

async fn run(pool: AnyPool, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let results = match pool.acquire().await {
            Ok(mut conn) => batch(&mut conn, &mut jobs).await,
            Err(e) => Err(e.to_string()),
        };
        match results {
            Ok(results) => {
                for (job, r) in jobs.into_iter().zip(results) {
                    let _ = job.done.send(r);
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.done.send(Err(MetaError::Commit(e.clone())));
                }
            }
        }
    }
}

async fn exec(sql: &'static str, conn: &mut AnyConnection) -> Result<(), String> {
    sqlx::query(sql).execute(conn).await.map(drop).map_err(|e| e.to_string())
}

/// Runs the jobs in one transaction; the outer error means nothing was committed.
async fn batch(conn: &mut AnyConnection, jobs: &mut [Job]) -> Result<Vec<Result<AnyOut>>, String> {
    exec("BEGIN IMMEDIATE", conn).await?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut failed = None;
    for job in jobs.iter_mut() {
        let run = std::mem::replace(&mut job.run, Box::new(|_| Box::pin(async { Err(MetaError::Closed) })));
        if let Err(e) = exec("SAVEPOINT job", conn).await {
            failed = Some(e);
            break;
        }
        let r = run(conn).await;
        if r.is_err()
            && let Err(e) = exec("ROLLBACK TO job", conn).await
        {
            failed = Some(e);
            break;
        }
        if let Err(e) = exec("RELEASE job", conn).await {
            failed = Some(e);
            break;
        }
        results.push(r);
    }
    if let Some(e) = failed {
        let _ = exec("ROLLBACK", conn).await;
        return Err(e);
    }
    if let Err(e) = exec("COMMIT", conn).await {
        let _ = exec("ROLLBACK", conn).await;
        return Err(e);
    }
    Ok(results)
}
