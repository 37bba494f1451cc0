-- Blobs are stored sealed (encrypted) from this version. Each blob has one sealed copy per key
-- scope: '' is the registry's default key, which serves AES256 repositories, any other scope the
-- KMS key a repository was created with. 'object' names the stored bytes (random, so two copies
-- never share a name), 'wrapped_key' is the copy's data key sealed under key 'key_id' at
-- material version 'key_version'. A blob with no row here is stored in the clear under its digest
-- (written before this version), until the encryption job seals it.
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
-- An upload's data key, wrapped. Uploads begun before this version have none: they are written
-- and committed in the clear, and sealed later with the rest.
ALTER TABLE uploads ADD COLUMN data_key BLOB;
-- The KMS key a repository's content is sealed under (NULL: the registry's default key). Set at
-- creation and never changed. Repositories created before this version are sealed under the
-- default key, whatever configuration they recorded.
ALTER TABLE repositories ADD COLUMN encryption_key TEXT
