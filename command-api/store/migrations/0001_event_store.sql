-- The event store: postgres-es's `events` table plus the columns the relay and the
-- audit trail need. postgres-es's INSERT names its seven columns, so ours are filled
-- by their defaults; our own writer (command-api/src/event_store.rs) does the same.
--
-- Every event's metadata carries `actor`, `correlation_id`, `causation_id` and
-- `request_id` (BRIEF, guarantee 5). The one writer, OrdersEventRepository::persist,
-- takes them from CommandMetadata, whose fields are not optional; a CHECK here would
-- be re-parsed by PostgreSQL on every insert and cost ~10% of command throughput.
--
-- No trigger and no NOTIFY on this table: either would run inside every
-- event-writing transaction and serialise commits cluster-wide.
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL,
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
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position ON events (global_position);

-- The relay's order: events of ended transactions, by transaction, then position
-- (command-api/src/relay.rs says why that is commit order).
CREATE INDEX events_log_order ON events (tx_id, global_position);

-- One registration per e-mail address, compared case-insensitively. The event store
-- itself refuses the second registration, so concurrent registrations of one
-- address store exactly one event.
CREATE UNIQUE INDEX events_user_email
    ON events (lower(payload -> 'UserRegistered' ->> 'email'))
    WHERE event_type = 'UserRegistered';

-- `Idempotency-Key` on `POST /orders`: one order per (owner, key), ever.
CREATE UNIQUE INDEX events_order_idempotency_key
    ON events ((payload -> 'OrderPlaced' ->> 'owner'), (metadata ->> 'idempotency_key'))
    WHERE event_type = 'OrderPlaced' AND metadata ? 'idempotency_key';

-- What placing an order must know about its owner, kept by the statements that
-- append the events which change it (command-api/src/event_store.rs), so it is
-- exactly as durable as they are and can be recomputed from them at any time: the
-- row exists once the user is registered; `active_orders` counts the orders that
-- are not cancelled; `deactivated` follows UserDeactivated. A placement is appended
-- only together with the increment of its owner's row, and only while the owner is
-- not deactivated; the CHECK makes "at most 100 active orders" hold however many
-- placements race. The domain decides on these facts (possibly cached); this row
-- has the last word. Keep 100 in step with
-- orders_domain::order::MAX_ACTIVE_ORDERS_PER_USER.
CREATE TABLE placement_guards (
    user_id       text    PRIMARY KEY,
    active_orders integer NOT NULL CHECK (active_orders BETWEEN 0 AND 100),
    deactivated   boolean NOT NULL
);

-- Password hashes (argon2id, PHC strings), one per user. Not in the events: the log
-- is published to every subscriber of the event stream and kept forever. Written by
-- the same statement as the UserRegistered / PasswordChanged event it goes with, so
-- neither exists without the other; `password_hash` NOT NULL makes such an event
-- impossible to store without its hash.
CREATE TABLE credentials (
    user_id       text        PRIMARY KEY,
    password_hash text        NOT NULL,
    changed_at    timestamptz NOT NULL DEFAULT statement_timestamp()
);

-- Failed logins, per e-mail address and per client address: operational state for
-- throttling, not part of the domain, so not events.
CREATE TABLE login_failures (
    throttle_key  text        PRIMARY KEY,
    failures      integer     NOT NULL,
    first_failure timestamptz NOT NULL,
    locked_until  timestamptz
);
