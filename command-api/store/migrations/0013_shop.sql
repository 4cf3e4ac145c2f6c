-- The shop's write side: what the event store's indexes and the append statements
-- keep for products and purchases.

-- One ProductAdded per SKU, compared case-insensitively: two administrators adding
-- the same SKU at once store one product, the other gets a conflict (409).
CREATE UNIQUE INDEX events_product_sku
    ON events (lower(payload -> 'ProductAdded' ->> 'sku'))
 WHERE event_type = 'ProductAdded';

-- One PurchasePlaced per (owner, Idempotency-Key): a retried POST /purchases
-- stores nothing new.
CREATE UNIQUE INDEX events_purchase_idempotency_key
    ON events ((payload -> 'PurchasePlaced' ->> 'owner'), (metadata ->> 'idempotency_key'))
 WHERE event_type = 'PurchasePlaced' AND metadata ? 'idempotency_key';

-- The purchases not settled yet (pending), written by the statement that appends a
-- purchase's events: inserted with PurchasePlaced, deleted with its confirmation,
-- rejection or cancellation. The saga rejects those older than its bound
-- (timed_out). Derived from the log like check_claims: the same statement, so
-- exactly as durable as the events.
CREATE TABLE pending_purchases (
    purchase_id uuid PRIMARY KEY,
    placed_at timestamptz NOT NULL DEFAULT statement_timestamp()
);
CREATE INDEX pending_purchases_placed_at ON pending_purchases (placed_at);
