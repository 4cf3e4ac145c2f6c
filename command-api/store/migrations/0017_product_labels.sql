-- A product's name for its mails, without loading the product: its latest
-- ProductUpdated (or, with none, its ProductAdded, always sequence 1). A product's
-- stream is mostly stock events, so without this index finding its latest update
-- walks all of them.
CREATE INDEX events_product_updates
    ON events (aggregate_id, sequence)
 WHERE aggregate_type = 'product' AND event_type = 'ProductUpdated';
