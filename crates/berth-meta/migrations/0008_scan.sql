CREATE TABLE vuln_records (
    id TEXT NOT NULL,
    ecosystem TEXT NOT NULL,
    package TEXT NOT NULL,
    record TEXT NOT NULL,
    modified TEXT,
    PRIMARY KEY (id, ecosystem, package)
);
CREATE INDEX vuln_records_package ON vuln_records(ecosystem, package);
CREATE TABLE vuln_sources (
    name TEXT PRIMARY KEY,
    imported_at BIGINT NOT NULL,
    records BIGINT NOT NULL
);
CREATE TABLE image_scans (
    repo_id BIGINT NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    status TEXT NOT NULL,
    description TEXT,
    findings TEXT,
    packages BIGINT,
    started_at BIGINT NOT NULL,
    completed_at BIGINT,
    PRIMARY KEY (repo_id, digest)
)
