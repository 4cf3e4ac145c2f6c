-- An access token names the credentials version it was issued under (how many times
-- the user's password had changed); a password change or reset ends every token
-- issued before it. The placement guard keeps the version in step (the statement
-- that stores a PasswordChanged raises it), so that a placement, which reads nothing
-- else of its owner, refuses a token of an older password in the same statement.
ALTER TABLE placement_guards ADD COLUMN credentials_version integer NOT NULL DEFAULT 0;
UPDATE placement_guards AS guard
   SET credentials_version = (SELECT count(*) FROM events
                               WHERE aggregate_type = 'user'
                                 AND aggregate_id = guard.user_id
                                 AND event_type = 'PasswordChanged');
