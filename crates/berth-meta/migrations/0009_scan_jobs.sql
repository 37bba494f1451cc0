-- Scans as durable jobs: an IN_PROGRESS row is a queued or running scan, and a node claims it for a
-- lease it renews while it works, so a scan whose node died is taken up again once the lease ends.
ALTER TABLE image_scans ADD COLUMN claimed_by TEXT;
ALTER TABLE image_scans ADD COLUMN claimed_until BIGINT;
ALTER TABLE image_scans ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
-- The package inventory the scan took (JSON), so new vulnerability data can be matched again
-- without reading the layers.
ALTER TABLE image_scans ADD COLUMN inventory TEXT;
CREATE INDEX image_scans_status ON image_scans(status, started_at);
-- A repository's scan policy (JSON, Berth's extension): pull blocking by severity, hidden unfixed findings.
ALTER TABLE repositories ADD COLUMN scan_policy TEXT;
