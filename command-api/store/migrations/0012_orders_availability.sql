-- orders: an order's availability is now what its last check saw (the order's own
-- events record only the changes between available and unavailable, so an order
-- seen in stock from "unknown" stayed "Unknown"). The view is rebuilt from the log.
UPDATE view_checkpoints SET stream_sequence = 0, tx_id = '0', global_position = 0
 WHERE view = 'orders';
DELETE FROM view_checkpoints WHERE view = 'orders' AND generation = 'shadow';
DROP TABLE IF EXISTS view_orders_shadow;
TRUNCATE view_orders;
