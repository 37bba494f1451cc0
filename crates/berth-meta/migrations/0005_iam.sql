CREATE TABLE iam_accounts (
    id TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE iam_entities (
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    id TEXT NOT NULL,
    path TEXT NOT NULL,
    document TEXT,
    description TEXT,
    max_session BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account, kind, name)
);
CREATE TABLE iam_members (
    account TEXT NOT NULL,
    group_name TEXT NOT NULL,
    user_name TEXT NOT NULL,
    PRIMARY KEY (account, group_name, user_name)
);
CREATE INDEX iam_members_user ON iam_members(account, user_name);
CREATE TABLE iam_access_keys (
    id TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    user_name TEXT NOT NULL,
    secret TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX iam_access_keys_user ON iam_access_keys(account, user_name);
CREATE TABLE iam_inline_policies (
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (account, kind, owner, name)
);
CREATE TABLE iam_managed_policies (
    arn TEXT PRIMARY KEY,
    account TEXT NOT NULL,
    name TEXT NOT NULL,
    id TEXT NOT NULL,
    path TEXT NOT NULL,
    description TEXT,
    default_version TEXT NOT NULL,
    next_version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE iam_policy_versions (
    arn TEXT NOT NULL,
    version TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (arn, version)
);
CREATE TABLE iam_attachments (
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    policy_arn TEXT NOT NULL,
    PRIMARY KEY (account, kind, owner, policy_arn)
);
CREATE INDEX iam_attachments_policy ON iam_attachments(policy_arn)
