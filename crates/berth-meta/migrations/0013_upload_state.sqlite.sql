-- The blob store's own state of an upload (for an object store: its multipart upload id and the
-- parts written), opaque here, so that any node continues any upload. Uploads begun before this
-- version have none (the filesystem store needs none).
ALTER TABLE uploads ADD COLUMN backend_state BLOB
