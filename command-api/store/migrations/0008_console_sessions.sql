-- Console sessions: a browser signed in to the web console. The cookie carries a
-- random token; only its SHA-256 digest is stored here, so the table holds nothing
-- a reader could sign in with. Each session has its own CSRF token, which every
-- state-changing form of the console carries back. A session ends at logout, at
-- its expiry, and (all of a user's at once) when the password changes or is reset.
CREATE TABLE console_sessions (
    token_digest bytea       PRIMARY KEY,
    user_id      uuid        NOT NULL,
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT statement_timestamp(),
    expires_at   timestamptz NOT NULL
);

CREATE INDEX console_sessions_user ON console_sessions (user_id);
