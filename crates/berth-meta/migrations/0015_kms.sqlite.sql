-- KMS keys (the KMS API's): each account's customer-managed keys and its AWS-managed key for
-- ECR (alias aws/ecr). A key's material is a list of versions (rotation adds one), each sealed
-- under the master keyring ('master' is the sealing key's fingerprint). Deleting a key deletes
-- its material, and with it every data key it wrapped.
CREATE TABLE kms_keys (
    key_id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    arn TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    key_usage TEXT NOT NULL,
    key_spec TEXT NOT NULL,
    manager TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deletion_at BIGINT,
    pending_days BIGINT,
    rotation_enabled INTEGER NOT NULL DEFAULT 0,
    rotation_days BIGINT NOT NULL DEFAULT 365,
    next_rotation_at BIGINT,
    policy TEXT NOT NULL,
    multi_region INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX kms_keys_account ON kms_keys(account, key_id);
CREATE TABLE kms_key_material (
    key_id TEXT NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    sealed BLOB NOT NULL,
    master TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    on_demand INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, version)
);
CREATE TABLE kms_aliases (
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    key_id TEXT NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE TABLE kms_tags (
    key_id TEXT NOT NULL REFERENCES kms_keys(key_id) ON DELETE CASCADE,
    tag_key TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (key_id, tag_key)
)
