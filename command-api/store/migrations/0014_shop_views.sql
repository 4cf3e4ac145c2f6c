-- The shop's query views (crate `projectors`): `products` (the catalog with its
-- stock), `purchases` (each purchase with its lines, prices, reason and history) and
-- `analytics` (per UTC day of the events' times, and the purchases' status mix).
-- Like every view they are rebuilt by `orders replay <view>` into `<table>_shadow`
-- tables made with `LIKE <table> INCLUDING ALL`, so everything a table needs (keys,
-- defaults, indexes) is declared on the table itself. The views are new: their
-- checkpoints start at zero, so their projectors build them from the start of the
-- log (products and purchases stored before this migration are shown too).

-- Substring search of the catalog by name or SKU (`lower(...) LIKE '%...%'`) through
-- trigram indexes. pg_trgm is in PostgreSQL's contrib, which Debian's server package
-- and the `postgres` image ship, and is a trusted extension.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- products: one row per product.
CREATE TABLE view_products (
    product_id  uuid        PRIMARY KEY,
    sku         text        NOT NULL,
    name        text        NOT NULL,
    description text        NOT NULL,
    price       numeric     NOT NULL,
    currency    text        NOT NULL,
    image_url   text,
    on_hand     bigint      NOT NULL,
    reserved    bigint      NOT NULL,
    -- on_hand - reserved, never below zero.
    available   bigint      NOT NULL,
    -- active or retired.
    status      text        NOT NULL,
    added_at    timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    -- The product aggregate's last sequence applied.
    version     bigint      NOT NULL
);
-- The public list: by name (any case), then id, which is also its cursor.
CREATE INDEX view_products_list ON view_products (lower(name), product_id);
CREATE INDEX view_products_name_search ON view_products USING gin (lower(name) gin_trgm_ops);
CREATE INDEX view_products_sku_search ON view_products USING gin (lower(sku) gin_trgm_ops);

-- purchases: one row per purchase.
CREATE TABLE view_purchases (
    purchase_id uuid        PRIMARY KEY,
    owner_id    uuid        NOT NULL,
    -- pending, confirmed, rejected, cancelled, shipped or delivered.
    status      text        NOT NULL,
    -- [{product_id, quantity, unit_price, line_total}]: the prices are null until the
    -- purchase is confirmed (amounts as strings).
    lines       jsonb       NOT NULL,
    -- Set at confirmation.
    total       numeric,
    currency    text,
    -- Why it was rejected, as the event stores it ({"code": "out_of_stock", ...}).
    reason      jsonb,
    -- [{status, at, actor}], one entry per event: its status after the event, the
    -- event's recorded time (RFC 3339, UTC) and the actor of its metadata.
    history     jsonb       NOT NULL,
    placed_at   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    -- The purchase aggregate's last sequence applied.
    version     bigint      NOT NULL
);
-- A buyer's purchases, newest first (ids are UUID v7: placement order), with cursors.
CREATE INDEX view_purchases_owner ON view_purchases (owner_id, purchase_id);
-- The administrators' list by status, newest first.
CREATE INDEX view_purchases_status ON view_purchases (status, purchase_id);

-- analytics: what happened per UTC day of the events' times. Past days never change:
-- an event adds to the day it was recorded on (a cancellation of a confirmed
-- purchase subtracts its total from the revenue of the cancellation's day). Counts
-- and revenue share the table: `currency` is '' for counts and the ISO 4217 code for
-- revenue, which is never converted.
CREATE TABLE view_analytics_daily (
    day      date    NOT NULL,
    metric   text    NOT NULL,
    currency text    NOT NULL DEFAULT '',
    value    numeric NOT NULL,
    PRIMARY KEY (day, metric, currency)
);
-- Each purchase's current status and confirmed total: what a cancellation must
-- subtract, and which status a change of status leaves.
CREATE TABLE view_analytics_purchases (
    purchase_id uuid PRIMARY KEY,
    status      text NOT NULL,
    total       numeric,
    currency    text
);
-- How many purchases are in each status now.
CREATE TABLE view_analytics_status (
    status    text   PRIMARY KEY,
    purchases bigint NOT NULL
);

DELETE FROM view_checkpoints WHERE view IN ('products', 'purchases', 'analytics');
INSERT INTO view_checkpoints (view, generation)
VALUES ('products', 'live'), ('purchases', 'live'), ('analytics', 'live');
