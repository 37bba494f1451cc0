-- What each layer holds for the scanner (berth_scan::layers::LayerScan, deflated JSON), by layer
-- digest: a layer shared by many images is read once, and a re-scan reads no layer at all.
-- `analyzer` is the version of the analyzers that made it (an older one is redone).
CREATE TABLE layer_scans (
    digest TEXT NOT NULL PRIMARY KEY,
    analyzer BIGINT NOT NULL,
    scan BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
