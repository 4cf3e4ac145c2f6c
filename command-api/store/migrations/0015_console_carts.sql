-- The web console's shopping carts: one per console session, so a cart lives as long
-- as the browser's session and ends with it (sign-out, expiry, a password change:
-- the rows go with the session). A cart is scratch state before a purchase, not a
-- fact of the business: the purchase it becomes is the event.
--
-- `cart_id` names the cart until it is bought (then it takes a new one). The
-- checkout's Idempotency-Key derives from it and the lines, so a form submitted
-- twice places one purchase; `bought_key` and `bought_purchase_id` remember the
-- last checkout, so a second submit that arrives after the cart was emptied is sent
-- to the purchase the first one placed.
--
-- A session is named by its CSRF token, unique per session (256 random bits): the
-- session's own key is stored only as a digest that nothing outside `session.rs`
-- computes.
CREATE UNIQUE INDEX console_sessions_csrf_token ON console_sessions (csrf_token);

CREATE TABLE console_carts (
    session_csrf       text PRIMARY KEY
                            REFERENCES console_sessions (csrf_token) ON DELETE CASCADE,
    cart_id            uuid NOT NULL,
    bought_key         text,
    bought_purchase_id uuid
);

-- The lines, in the order they were added (the purchase's items keep that order).
CREATE TABLE console_cart_lines (
    session_csrf text        NOT NULL REFERENCES console_carts (session_csrf) ON DELETE CASCADE,
    product_id   uuid        NOT NULL,
    quantity     integer     NOT NULL CHECK (quantity > 0),
    added_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (session_csrf, product_id)
);
