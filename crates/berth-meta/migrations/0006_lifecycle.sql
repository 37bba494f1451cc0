ALTER TABLE repositories ADD COLUMN lifecycle_policy TEXT;
ALTER TABLE repositories ADD COLUMN lifecycle_evaluated_at BIGINT;
CREATE TABLE lifecycle_previews (
    repo_id BIGINT PRIMARY KEY REFERENCES repositories(id) ON DELETE CASCADE,
    policy TEXT NOT NULL,
    status TEXT NOT NULL,
    results TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE audit_events ADD COLUMN detail TEXT
