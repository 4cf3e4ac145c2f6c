-- Client addresses that have signed in to an account (the digest of its e-mail
-- address, as login_failures keys it) in the last 30 days. A lock that failures
-- from elsewhere put on the account does not apply to them: each known address
-- counts its own failures instead (command-api/src/login_throttle.rs). Operational
-- state, not events; rows older than the window are purged with login_failures'.
CREATE TABLE login_known_clients (
    email_key  text        NOT NULL,
    client_key text        NOT NULL,
    last_login timestamptz NOT NULL,
    PRIMARY KEY (email_key, client_key)
);

