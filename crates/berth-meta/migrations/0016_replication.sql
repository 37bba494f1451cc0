-- Where each image stands at each replication destination (DescribeImageReplicationStatus). A
-- row is written IN_PROGRESS when a replication job is queued, then COMPLETE, or FAILED with a
-- failure code while the job retries. Keyed by repository name, as the outbox is.
CREATE TABLE replication_status (
    repo TEXT NOT NULL,
    digest TEXT NOT NULL,
    region TEXT NOT NULL,
    registry_id TEXT NOT NULL,
    status TEXT NOT NULL,
    failure_code TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo, digest, region, registry_id)
)
