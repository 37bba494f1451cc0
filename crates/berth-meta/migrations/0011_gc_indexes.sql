-- Garbage collection names the blobs it updates by digest (a page at a time). An index on the
-- state column let PostgreSQL, on a freshly loaded table without statistics, scan every
-- condemned blob for each page instead of looking the page's digests up by key. Only the few
-- rows a crashed collection leaves 'deleting' need finding by state.
DROP INDEX blobs_state;
CREATE INDEX blobs_deleting ON blobs(digest) WHERE state = 'deleting'
