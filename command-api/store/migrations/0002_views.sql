-- The query views, built from the log by the projectors (crate `projectors`).
--
-- Every view is a set of tables plus one checkpoint row per generation: `live` is
-- what the API reads; `shadow` exists only while `orders replay` rebuilds the view
-- into `<table>_shadow` tables, which are then renamed over the live ones in one
-- transaction. A projector writes its tables and its checkpoint in one transaction,
-- so a redelivered message changes nothing. Timestamps in views come from the
-- events (`recorded_at`), never from the clock of the projector, so a rebuilt view
-- equals the live one.

CREATE TABLE view_checkpoints (
    view            text   NOT NULL,
    generation      text   NOT NULL CHECK (generation IN ('live', 'shadow')),
    -- The last log stream message applied (0: none).
    stream_sequence bigint NOT NULL DEFAULT 0,
    -- Its place in the log order: the `Orders-Position` token `<tx_id>.<global_position>`.
    tx_id           xid8   NOT NULL DEFAULT '0',
    global_position bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (view, generation)
);

INSERT INTO view_checkpoints (view, generation)
VALUES ('users', 'live'), ('orders', 'live'), ('price_history', 'live'), ('admin_overview', 'live');

-- users: one row per user.
CREATE TABLE view_users (
    user_id        uuid PRIMARY KEY,
    email          text NOT NULL,
    email_verified boolean NOT NULL,
    display_name   text,
    price_alerts   boolean NOT NULL,
    roles          text[] NOT NULL,
    deactivated    boolean NOT NULL,
    registered_at  timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    -- The user aggregate's last sequence applied.
    version        bigint NOT NULL
);
CREATE INDEX view_users_email ON view_users (lower(email));

-- orders: one row per order, with its last price and status.
CREATE TABLE view_orders (
    order_id            uuid PRIMARY KEY,
    owner_id            uuid NOT NULL,
    url                 text NOT NULL,
    target_price        numeric NOT NULL,
    currency            text NOT NULL,
    check_interval_secs integer NOT NULL,
    selector            text,
    status              text NOT NULL,
    -- Whether reaching the target would alert (it fires once, then re-arms when the
    -- price goes back above the target).
    armed               boolean NOT NULL,
    last_price          numeric,
    availability        text NOT NULL,
    placed_at           timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    version             bigint NOT NULL
);
-- A user's orders in the order of their ids (UUID v7: placement order), for cursors.
CREATE INDEX view_orders_owner ON view_orders (owner_id, order_id);

-- price_history: every price an order was seen at, when it changed.
CREATE TABLE view_price_history (
    order_id    uuid NOT NULL,
    -- The order aggregate's sequence of the event.
    sequence    bigint NOT NULL,
    observed_at timestamptz NOT NULL,
    price       numeric NOT NULL,
    currency    text NOT NULL,
    previous    numeric,
    extractor   text,
    PRIMARY KEY (order_id, sequence)
);

-- admin_overview: counters, and each order's status (a cancellation counts against
-- the status the order had).
CREATE TABLE view_admin_overview (
    metric text PRIMARY KEY,
    value  bigint NOT NULL
);
CREATE TABLE view_admin_order_status (
    order_id uuid PRIMARY KEY,
    status   text NOT NULL
);
