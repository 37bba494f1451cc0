CREATE TABLE repositories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE repo_blobs (
    repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest TEXT NOT NULL REFERENCES blobs(digest),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX repo_blobs_digest ON repo_blobs(digest);
CREATE TABLE manifests (
    repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    media_type TEXT NOT NULL,
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    size BIGINT NOT NULL,
    content BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, digest)
);
CREATE INDEX manifests_subject ON manifests(repo_id, subject);
CREATE TABLE manifest_blobs (
    repo_id BIGINT NOT NULL,
    manifest_digest TEXT NOT NULL,
    blob_digest TEXT NOT NULL,
    PRIMARY KEY (repo_id, manifest_digest, blob_digest),
    FOREIGN KEY (repo_id, manifest_digest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_blobs_blob ON manifest_blobs(repo_id, blob_digest);
CREATE TABLE manifest_children (
    repo_id BIGINT NOT NULL,
    parent_digest TEXT NOT NULL,
    child_digest TEXT NOT NULL,
    PRIMARY KEY (repo_id, parent_digest, child_digest),
    FOREIGN KEY (repo_id, parent_digest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_children_child ON manifest_children(repo_id, child_digest);
CREATE TABLE tags (
    repo_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo_id, name),
    FOREIGN KEY (repo_id, manifest_digest) REFERENCES manifests(repo_id, digest) ON DELETE CASCADE
);
CREATE INDEX tags_manifest ON tags(repo_id, manifest_digest);
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    size BIGINT NOT NULL,
    hash_state BLOB,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
