-- Blobs are stored sealed (encrypted) from this version. Each blob has one sealed copy per key
-- scope: '' is the registry's default key, which serves AES256 repositories, any other scope the
-- KMS key a repository was created with. 'object' names the stored bytes (random, so two copies
-- never share a name), 'wrapped_key' is the copy's data key sealed under key 'key_id' at
-- material version 'key_version'.
CREATE TABLE blob_objects (
    digest TEXT NOT NULL,
    scope TEXT NOT NULL,
    object TEXT NOT NULL UNIQUE,
    key_id TEXT NOT NULL,
    key_version BIGINT NOT NULL,
    wrapped_key BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (digest, scope)
);
CREATE INDEX blob_objects_key ON blob_objects(key_id, key_version);
-- Blobs written before this version are stored in the clear under their digest (in_clear = 1)
-- until the encryption job seals them into the default key's scope.
ALTER TABLE blobs ADD COLUMN in_clear INTEGER NOT NULL DEFAULT 0;
UPDATE blobs SET in_clear = 1;
CREATE INDEX blobs_in_clear ON blobs(in_clear);
-- An upload's data key, wrapped. Uploads begun before this version have none: they are written
-- and committed in the clear, and sealed later with the rest.
ALTER TABLE uploads ADD COLUMN data_key BLOB;
-- The KMS key a repository's content is sealed under (NULL: the registry's default key). Set at
-- creation and never changed. Repositories created before this version are sealed under the
-- default key, whatever configuration they recorded.
ALTER TABLE repositories ADD COLUMN encryption_key TEXT
