-- Price checks: what the command side keeps beside the `price_check` events, the
-- scheduler's state, the e-mail worker's delivery records, and the views' new
-- columns.

-- At most one check in flight per order. The statement that appends a
-- `PriceCheckRequested` inserts the claim and stores the event only if the claim was
-- taken (command-api/src/event_store.rs); the statement that appends the check's
-- result deletes it. A claim older than the lease (a check lost for good, which
-- durable consumers make rare) may be taken over, so an order is never stuck.
CREATE TABLE check_claims (
    order_id   uuid        PRIMARY KEY,
    check_id   uuid        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT statement_timestamp()
);

-- The scheduler's plan (workers/src/scheduler.rs): when each order is next due.
-- Operational state of the single active scheduler, not a view: losing it only
-- makes every active order due once more.
CREATE TABLE check_schedule (
    order_id      uuid        PRIMARY KEY,
    next_check_at timestamptz NOT NULL
);
CREATE INDEX check_schedule_due ON check_schedule (next_check_at);

-- One row per mail the e-mail worker sent, keyed by the event that caused it: a
-- redelivered event finds its row and sends nothing (BRIEF, guarantee 4).
CREATE TABLE email_deliveries (
    event_id    text        NOT NULL,
    purpose     text        NOT NULL,
    message_id  text        NOT NULL,
    recipient   text        NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, purpose)
);

-- orders: what the last check said.
ALTER TABLE view_orders
    ADD COLUMN title                text,
    ADD COLUMN last_checked_at      timestamptz,
    ADD COLUMN last_error           text,
    ADD COLUMN last_error_detail    text,
    ADD COLUMN consecutive_failures integer NOT NULL DEFAULT 0;

-- price_history: every observation of a price (it was every price change). The
-- view is rebuilt from the log: its table is recreated and its checkpoint reset,
-- so the projector replays the log into it.
DROP TABLE view_price_history;
CREATE TABLE view_price_history (
    order_id     uuid        NOT NULL,
    check_id     uuid        NOT NULL,
    observed_at  timestamptz NOT NULL,
    price        numeric     NOT NULL,
    currency     text        NOT NULL,
    availability text        NOT NULL,
    extractor    text,
    PRIMARY KEY (order_id, check_id)
);
UPDATE view_checkpoints SET stream_sequence = 0, tx_id = '0', global_position = 0
 WHERE view = 'price_history';
DELETE FROM view_checkpoints WHERE view = 'price_history' AND generation = 'shadow';
DROP TABLE IF EXISTS view_price_history_shadow;

-- orders: the view now also reads price_check events, so it too is rebuilt.
UPDATE view_checkpoints SET stream_sequence = 0, tx_id = '0', global_position = 0
 WHERE view = 'orders';
DELETE FROM view_checkpoints WHERE view = 'orders' AND generation = 'shadow';
DROP TABLE IF EXISTS view_orders_shadow;
TRUNCATE view_orders;
