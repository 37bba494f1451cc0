-- A secret's current version id (Secrets Manager's VersionId: the writer's ClientRequestToken, or
-- one made up). Secrets written before this column have none, and the service derives one.
ALTER TABLE secrets ADD COLUMN version_id TEXT
