ALTER TABLE repositories ADD COLUMN tag_mutability TEXT NOT NULL DEFAULT 'MUTABLE';
ALTER TABLE repositories ADD COLUMN mutability_filters TEXT;
ALTER TABLE repositories ADD COLUMN scan_on_push BIGINT NOT NULL DEFAULT 0;
ALTER TABLE repositories ADD COLUMN encryption_type TEXT NOT NULL DEFAULT 'AES256';
ALTER TABLE repositories ADD COLUMN kms_key TEXT;
ALTER TABLE manifests ADD COLUMN image_size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE manifests ADD COLUMN last_pull BIGINT;
UPDATE manifests SET image_size = (
    SELECT COALESCE(SUM(b.size), 0) FROM manifest_blobs mb JOIN blobs b ON b.digest = mb.blob_digest
    WHERE mb.repo_id = manifests.repo_id AND mb.manifest_digest = manifests.digest);
UPDATE manifests SET image_size = (
    SELECT COALESCE(MAX(c.image_size), 0) FROM manifest_children mc
    JOIN manifests c ON c.repo_id = mc.repo_id AND c.digest = mc.child_digest
    WHERE mc.repo_id = manifests.repo_id AND mc.parent_digest = manifests.digest)
WHERE EXISTS (SELECT 1 FROM manifest_children mc WHERE mc.repo_id = manifests.repo_id AND mc.parent_digest = manifests.digest);
ALTER TABLE uploads ADD COLUMN last_part_small BIGINT NOT NULL DEFAULT 0;
ALTER TABLE uploads ADD COLUMN part_too_small BIGINT NOT NULL DEFAULT 0;
CREATE TABLE repository_tags (
    repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (repo_id, key)
);
CREATE TABLE repository_templates (
    prefix TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
