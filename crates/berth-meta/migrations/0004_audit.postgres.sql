CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    event_time BIGINT NOT NULL,
    event_name TEXT NOT NULL,
    principal TEXT,
    source_ip TEXT,
    resource TEXT,
    decision TEXT NOT NULL,
    error TEXT
);
CREATE INDEX audit_events_time ON audit_events(event_time)
