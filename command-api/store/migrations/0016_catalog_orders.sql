-- Tracking orders on catalog products (OrderPlaced 3.0 with `product_id`, `url` null).

-- The orders following one product, found in the event store itself (the truth, so
-- an order placed a moment before a price change is never missed by the catalog
-- policy, as a lagging view could miss it).
CREATE INDEX events_order_catalog_product
    ON events ((payload -> 'OrderPlaced' ->> 'product_id'))
 WHERE event_type = 'OrderPlaced' AND payload -> 'OrderPlaced' ? 'product_id';

-- The orders view: a catalog order has no page. Existing rows all follow a page
-- (product_id stays null), so the view needs no rebuild.
ALTER TABLE view_orders ALTER COLUMN url DROP NOT NULL;
ALTER TABLE view_orders ADD COLUMN product_id uuid;
