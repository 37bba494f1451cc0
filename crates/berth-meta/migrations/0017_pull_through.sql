-- Pull-through cache rules, per registry: the rule's fields as JSON (their meaning is the
-- service's), keyed by the repository prefix they apply to.
CREATE TABLE pull_through_rules (
    registry_id TEXT NOT NULL,
    prefix TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (registry_id, prefix)
);
-- Secrets (the Secrets Manager API's, for pull-through rules' upstream credentials): the value
-- sealed under the secrets key, never stored in the clear.
CREATE TABLE secrets (
    arn TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (account, name)
)
