-- The audit trail's questions, answered by indexes in log order (command-api/src/
-- audit.rs): everything one request or job caused (its correlation id), and
-- everything one actor did. One aggregate's history is the primary key's.
CREATE INDEX events_correlation ON events ((metadata ->> 'correlation_id'), global_position);
CREATE INDEX events_actor ON events ((metadata ->> 'actor'), global_position);
