//! Messages between nodes through PostgreSQL's `LISTEN`/`NOTIFY` (cache invalidations). A
//! notification is delivered to every listening session after the sender's commit, in order;
//! one sent while a listener was disconnected is lost to it, which [`Listener::recv`] reports.

use sqlx::postgres::PgListener;

use crate::{Backend, Meta, MetaError, Result};

/// A session listening on one channel.
pub struct Listener(PgListener);

/// What a listener got.
pub enum Heard {
    Message(String),
    /// The connection dropped and was made again: messages may have been missed.
    Reconnected,
}

impl Meta {
    /// Sends `payload` (at most ~8000 bytes) to every session listening on `channel`; PostgreSQL
    /// only (on SQLite there is one process and nothing to tell).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(&self.write).await?;
        Ok(())
    }

    /// Listens on `channel` over a connection of its own (PostgreSQL only).
    pub async fn listen(&self, channel: &str) -> Result<Listener> {
        if self.backend != Backend::Postgres {
            return Err(MetaError::Unsupported("LISTEN needs PostgreSQL"));
        }
        let mut l = PgListener::connect(&self.url).await?;
        // Reconnections are reported (`Heard::Reconnected`), not hidden.
        l.ignore_pool_close_event(false);
        l.listen(channel).await?;
        Ok(Listener(l))
    }
}

impl Listener {
    pub async fn recv(&mut self) -> Result<Heard> {
        match self.0.try_recv().await? {
            Some(n) => Ok(Heard::Message(n.payload().to_string())),
            None => Ok(Heard::Reconnected),
        }
    }
}
