ALTER TABLE blobs ADD COLUMN state TEXT NOT NULL DEFAULT 'live';
ALTER TABLE blobs ADD COLUMN condemned_at BIGINT;
CREATE TABLE gc_candidates (
    digest TEXT PRIMARY KEY,
    since BIGINT NOT NULL
);
CREATE INDEX manifest_blobs_by_blob ON manifest_blobs(blob_digest);
CREATE INDEX blobs_state ON blobs(state);
CREATE INDEX uploads_updated ON uploads(updated_at);
INSERT INTO gc_candidates (digest, since) SELECT digest, 0 FROM blobs
