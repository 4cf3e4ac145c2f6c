-- price_history now also keeps every alert an order fired (its TargetReached events)
-- and every price check with its outcome: the order's page lists them,
-- `GET /orders/{id}/alerts` and `/checks` answer them. The view is rebuilt from the
-- log, so what happened before this migration is listed too.
CREATE TABLE view_order_alerts (
    order_id uuid        NOT NULL,
    -- The order aggregate's sequence of the TargetReached event.
    sequence bigint      NOT NULL,
    fired_at timestamptz NOT NULL,
    price    numeric     NOT NULL,
    previous numeric,
    target   numeric     NOT NULL,
    currency text        NOT NULL,
    PRIMARY KEY (order_id, sequence)
);

CREATE TABLE view_order_checks (
    check_id     uuid        PRIMARY KEY,
    order_id     uuid        NOT NULL,
    requested_at timestamptz NOT NULL,
    trigger      text        NOT NULL,
    -- pending, ok, no_price or failed.
    outcome      text        NOT NULL,
    finished_at  timestamptz,
    price        numeric,
    currency     text        NOT NULL,
    reason       text,
    detail       text
);
-- An order's checks, newest first (check ids are UUID v7: request order).
CREATE INDEX view_order_checks_order ON view_order_checks (order_id, check_id);

UPDATE view_checkpoints SET stream_sequence = 0, tx_id = '0', global_position = 0
 WHERE view = 'price_history';
DELETE FROM view_checkpoints WHERE view = 'price_history' AND generation = 'shadow';
DROP TABLE IF EXISTS view_price_history_shadow;
TRUNCATE view_price_history;
