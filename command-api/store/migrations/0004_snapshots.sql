-- Snapshots of aggregates with long streams (today: orders, whose price changes and
-- alerts accumulate over years of checks), written by the command side from a state
-- it has just loaded (command-api/src/event_store.rs). Derived data: the events are
-- the truth, and deleting any or all rows only makes the next loads longer.
-- `state_version` is a fingerprint of the code that folded the state; a snapshot of
-- another version is never read.
CREATE TABLE aggregate_snapshots (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    -- The state is the fold of the events up to and including this sequence.
    sequence       bigint      NOT NULL,
    state_version  text        NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
