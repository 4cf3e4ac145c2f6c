-- How far the saga's sweep has read the log (one row, written by the instance
-- holding the saga-timeouts lease): every purchase rejected, cancelled or shipped
-- before it has been settled once more after a grace period, so a reservation a
-- lost saga step left behind is released (or shipped).
CREATE TABLE saga_sweep (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    global_position bigint NOT NULL
);
