-- The event store: postgres-es's `events` table plus the columns the relay and the
-- audit trail need. postgres-es's INSERT names its seven columns, so ours are filled
-- by their defaults; our own writer (command-api/src/event_store.rs) does the same.
--
-- No trigger and no NOTIFY on this table: either would run inside every
-- event-writing transaction and serialise commits cluster-wide.
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence > 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    -- Order of insertion across all aggregates. Alone it is not commit order
    -- (transactions commit out of sequence order); with tx_id the relay reads only
    -- below the horizon of transactions that can no longer commit.
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction, for that horizon (pg_snapshot_xmin).
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT statement_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    -- Every event says who caused it and why (BRIEF, guarantee 5).
    CONSTRAINT events_metadata_keys
        CHECK (metadata ?& ARRAY['actor', 'correlation_id', 'causation_id', 'request_id'])
);

CREATE UNIQUE INDEX events_global_position ON events (global_position);
CREATE INDEX events_tx_order ON events (tx_id, global_position);

-- One registration per e-mail address, compared case-insensitively. The event store
-- itself refuses the second registration, so concurrent registrations of one
-- address store exactly one event.
CREATE UNIQUE INDEX events_user_email
    ON events (lower(payload -> 'UserRegistered' ->> 'email'))
    WHERE event_type = 'UserRegistered';

-- A user's orders, for the active-order limit.
CREATE INDEX events_order_owner
    ON events ((payload -> 'OrderPlaced' ->> 'owner'))
    WHERE event_type = 'OrderPlaced';

-- Orders that were cancelled, so counting a user's active orders is two index probes.
CREATE INDEX events_order_cancelled
    ON events (aggregate_id)
    WHERE event_type = 'OrderCancelled';

-- `Idempotency-Key` on `POST /orders`: one order per (owner, key), ever.
CREATE UNIQUE INDEX events_order_idempotency_key
    ON events ((payload -> 'OrderPlaced' ->> 'owner'), (metadata ->> 'idempotency_key'))
    WHERE event_type = 'OrderPlaced' AND metadata ? 'idempotency_key';

-- Failed logins, per e-mail address and per client address: operational state for
-- throttling, not part of the domain, so not events.
CREATE TABLE login_failures (
    throttle_key  text        PRIMARY KEY,
    failures      integer     NOT NULL,
    first_failure timestamptz NOT NULL,
    locked_until  timestamptz
);
