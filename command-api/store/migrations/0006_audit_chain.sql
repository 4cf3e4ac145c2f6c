-- Tamper evidence (command-api/src/seal.rs says what is digested and how).
--
-- Every event the command side writes carries its seal: a version byte and an
-- HMAC-SHA-256 under ORDERS_AUDIT_KEY, a key the database never sees. A row written
-- or changed here by other means (raw SQL) has no seal that verifies. Events stored
-- before this migration have none, and `orders audit verify` reports them.
ALTER TABLE events ADD COLUMN seal bytea;

-- The hash chain, one row per relayed event, written by the relay just before it
-- publishes the event (a republished event writes the same row again: nothing).
-- `chain_position` is the event's place in the log stream (its stream sequence).
-- What is kept beside the digest lets `orders audit verify` say what changed: the
-- event that was here, its two content digests, its actor and its time. The chain's
-- head is also checkpointed outside PostgreSQL (the NATS key-value bucket
-- ORDERS_AUDIT) after every relayed batch, so that rewriting events and this table
-- together is detected too.
CREATE TABLE audit_chain (
    chain_position  bigint      PRIMARY KEY,
    global_position bigint      NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL,
    actor           text        NOT NULL,
    recorded_at     text        NOT NULL,
    body_digest     bytea       NOT NULL,
    metadata_digest bytea       NOT NULL,
    digest          bytea       NOT NULL
);
