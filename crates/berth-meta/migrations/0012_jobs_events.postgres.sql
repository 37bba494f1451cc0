-- Background work as durable jobs. A job is due once run_after has passed, and a node claims it by
-- setting claimed_by and a lease_until it renews while it works, so a job whose node died is
-- taken by another once the lease ends. unique_key makes a job a singleton (periodic work such as
-- garbage collection, or one queued scan per image). generation changes whenever the job is asked
-- for again, so finishing an older request does not remove a newer one. runs counts completed
-- rounds of a periodic job.
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
    queue TEXT NOT NULL,
    unique_key TEXT UNIQUE,
    payload TEXT NOT NULL,
    run_after BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    claimed_by TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    generation BIGINT NOT NULL DEFAULT 0,
    runs BIGINT NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX jobs_due ON jobs (queue, run_after);
-- The outbox: every change others react to, written in the transaction that makes it. Ids grow in
-- commit order (SQLite has one writer, PostgreSQL writers take a lock to add one), so a consumer that read up to id N has seen every earlier
-- change.
CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    repo TEXT NOT NULL,
    digest TEXT,
    tag TEXT,
    detail TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_image ON events (repo, digest);
CREATE INDEX events_created ON events (created_at);
-- How far each consumer has read the outbox.
CREATE TABLE event_cursors (
    consumer TEXT PRIMARY KEY,
    position BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- Scans queued before this version were their own jobs: queue them here.
INSERT INTO jobs (queue, unique_key, payload, run_after, created_at)
SELECT 'scan', 'scan:' || CAST(s.repo_id AS TEXT) || ':' || s.digest,
       '{"repo_id":' || CAST(s.repo_id AS TEXT) || ',"repo":"' || r.name || '","digest":"' || s.digest
           || '","started_at":' || CAST(s.started_at AS TEXT) || '}',
       s.started_at, s.started_at
FROM image_scans s JOIN repositories r ON r.id = s.repo_id
WHERE s.status = 'IN_PROGRESS'
