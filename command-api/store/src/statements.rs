//! The statements the store sends to PostgreSQL to append events (and to read a
//! user's placement facts), each with the list of what it binds, in order. The
//! store binds by that list, and `orders bench commands` replays a placement by the
//! same list, so the replay cannot drift from what a command really sends.

/// A value a statement binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `text[]`: each event's aggregate type.
    AggregateTypes,
    /// `text[]`: each event's aggregate id.
    AggregateIds,
    /// `bigint[]`: each event's sequence in its aggregate.
    Sequences,
    /// `text[]`: each event's type.
    EventTypes,
    /// `text[]`: each event's version.
    EventVersions,
    /// `jsonb[]`: each event's payload.
    Payloads,
    /// `jsonb[]`: each event's metadata.
    Metadata,
    /// `bytea[]`: each event's seal.
    Seals,
    /// `text`: the user a placement is for (its guard's key).
    Owner,
    /// `text`, nullable: the password hash that goes with a registration or a
    /// password change.
    PasswordHash,
    /// `integer`, nullable: the credentials version the placing caller's access
    /// token was issued under (`NULL`: a console session, which a password change
    /// deletes instead).
    CredentialsVersion,
}

/// A statement and what it binds, `$1` first.
#[derive(Debug, Clone, Copy)]
pub struct Statement {
    sql: &'static str,
    binds: &'static [Bound],
}

impl Statement {
    pub fn sql(&self) -> &'static str {
        self.sql
    }

    /// What `$1`, `$2`, ... stand for.
    pub fn binds(&self) -> &'static [Bound] {
        self.binds
    }
}

/// The columns of the events one statement appends, `$1` to `$8`.
const EVENT_COLUMNS: [Bound; 8] = [
    Bound::AggregateTypes,
    Bound::AggregateIds,
    Bound::Sequences,
    Bound::EventTypes,
    Bound::EventVersions,
    Bound::Payloads,
    Bound::Metadata,
    Bound::Seals,
];

/// The event columns, then `extra` as `$9`.
const fn events_then(extra: Bound) -> [Bound; 9] {
    let mut binds = [extra; 9];
    let mut index = 0;
    while index < EVENT_COLUMNS.len() {
        binds[index] = EVENT_COLUMNS[index];
        index += 1;
    }
    binds
}

const USER_EVENTS_BINDS: [Bound; 9] = events_then(Bound::PasswordHash);

const GUARDED_PLACEMENT_BINDS: [Bound; 10] = {
    let owner = events_then(Bound::Owner);
    let mut binds = [Bound::CredentialsVersion; 10];
    let mut index = 0;
    while index < owner.len() {
        binds[index] = owner[index];
        index += 1;
    }
    binds
};

/// All of a command's events in one statement; `UNNEST` keeps the statement text the
/// same for any number of events, so it is prepared once per connection.
pub(crate) const INSERT_EVENTS: Statement = Statement {
    sql: "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, seal)
SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::bytea[])
RETURNING tx_id::text, global_position, NULL::bigint",
    binds: &EVENT_COLUMNS,
};

/// A user's events, keeping in step in the same statement (so the same transaction)
/// the user's placement guard (registration creates it, deactivation marks it, a
/// password change raises its credentials version) and credentials (the password
/// hash `$9` of a registration or a password change).
pub(crate) const INSERT_USER_EVENTS: Statement = Statement {
    sql: "
WITH inserted AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, seal)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::bytea[])
    RETURNING aggregate_id, event_type, tx_id, global_position
), registered AS (
    INSERT INTO placement_guards (user_id, active_orders, deactivated)
    SELECT aggregate_id, 0, false FROM inserted WHERE event_type = 'UserRegistered'
), deactivated AS (
    UPDATE placement_guards SET deactivated = true
     WHERE user_id IN (SELECT aggregate_id FROM inserted WHERE event_type = 'UserDeactivated')
), password_changed AS (
    UPDATE placement_guards SET credentials_version = credentials_version + 1
     WHERE user_id IN (SELECT aggregate_id FROM inserted WHERE event_type = 'PasswordChanged')
), credentials AS (
    INSERT INTO credentials (user_id, password_hash)
    SELECT aggregate_id, $9::text FROM inserted
     WHERE event_type IN ('UserRegistered', 'PasswordChanged')
    ON CONFLICT (user_id) DO UPDATE
       SET password_hash = excluded.password_hash, changed_at = statement_timestamp()
)
SELECT tx_id::text, global_position, NULL::bigint FROM inserted",
    binds: &USER_EVENTS_BINDS,
};

/// An order's events other than a guarded placement: a cancellation gives its owner's
/// place back, in the same statement.
pub(crate) const INSERT_ORDER_EVENTS: Statement = Statement {
    sql: "
WITH inserted AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, seal)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::bytea[])
    RETURNING aggregate_id, event_type, tx_id, global_position
), cancelled AS (
    UPDATE placement_guards SET active_orders = active_orders - 1
     WHERE user_id IN (SELECT placed.payload -> 'OrderPlaced' ->> 'owner'
                         FROM inserted JOIN events AS placed
                           ON placed.aggregate_type = 'order'
                          AND placed.aggregate_id = inserted.aggregate_id
                          AND placed.sequence = 1
                        WHERE inserted.event_type = 'OrderCancelled')
)
SELECT tx_id::text, global_position, NULL::bigint FROM inserted",
    binds: &EVENT_COLUMNS,
};

/// A placement by owner `$9`: appended only if the owner's placement guard takes it
/// (the owner is not deactivated and, for a caller with an access token, its
/// credentials version `$10` is still the owner's; past 100 active orders its CHECK
/// fails the whole statement), in the same statement. No row back: the owner is
/// deactivated or the token's password was changed.
pub(crate) const INSERT_GUARDED_PLACEMENT: Statement = Statement {
    sql: "
WITH guard AS (
    UPDATE placement_guards SET active_orders = active_orders + 1
     WHERE user_id = $9 AND NOT deactivated
       AND ($10::integer IS NULL OR credentials_version = $10)
    RETURNING active_orders
), inserted AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, seal)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::bytea[])
     WHERE EXISTS (SELECT 1 FROM guard)
    RETURNING tx_id, global_position
)
SELECT tx_id::text, global_position, (SELECT active_orders::bigint FROM guard) FROM inserted",
    binds: &GUARDED_PLACEMENT_BINDS,
};

/// A price check's events. A `PriceCheckRequested` is stored only together with its
/// order's claim in `check_claims` (one check in flight per order; a claim older
/// than [`crate::event_store::CHECK_CLAIM_LEASE`] may be taken over); without the claim the statement
/// stores nothing and returns no row. The check's result gives the claim back.
pub(crate) const INSERT_PRICE_CHECK_EVENTS: Statement = Statement {
    sql: "
WITH claim AS (
    INSERT INTO check_claims (order_id, check_id)
    SELECT (new.payload -> 'PriceCheckRequested' ->> 'order_id')::uuid, new.aggregate_id::uuid
      FROM UNNEST($2::text[], $4::text[], $6::jsonb[]) AS new (aggregate_id, event_type, payload)
     WHERE new.event_type = 'PriceCheckRequested'
    ON CONFLICT (order_id) DO UPDATE
       SET check_id = excluded.check_id, claimed_at = statement_timestamp()
     WHERE check_claims.claimed_at < statement_timestamp() - interval '30 minutes'
    RETURNING order_id
), inserted AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, seal)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::bytea[])
     WHERE NOT ('PriceCheckRequested' = ANY($4::text[])) OR EXISTS (SELECT 1 FROM claim)
    RETURNING aggregate_id, event_type, tx_id, global_position
), released AS (
    DELETE FROM check_claims
     WHERE check_id IN (SELECT aggregate_id::uuid FROM inserted
                         WHERE event_type IN ('PriceObserved', 'PriceCheckFailed'))
)
SELECT tx_id::text, global_position, NULL::bigint FROM inserted",
    binds: &EVENT_COLUMNS,
};

/// A purchase's events. A placement adds the purchase to `pending_purchases` (the
/// saga's time bound reads it); its confirmation, rejection or cancellation takes
/// it out, in the same statement.
pub(crate) const INSERT_PURCHASE_EVENTS: Statement = Statement {
    sql: "
WITH inserted AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, seal)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::bytea[])
    RETURNING aggregate_id, event_type, tx_id, global_position
), placed AS (
    INSERT INTO pending_purchases (purchase_id)
    SELECT aggregate_id::uuid FROM inserted WHERE event_type = 'PurchasePlaced'
), settled AS (
    DELETE FROM pending_purchases
     WHERE purchase_id IN (SELECT aggregate_id::uuid FROM inserted
                            WHERE event_type IN ('PurchaseConfirmed', 'PurchaseRejected', 'PurchaseCancelled'))
)
SELECT tx_id::text, global_position, NULL::bigint FROM inserted",
    binds: &EVENT_COLUMNS,
};

/// The facts of one user a placement is decided on; no row means no such user.
pub(crate) const PLACEMENT_FACTS: Statement = Statement {
    sql: "SELECT active_orders, deactivated, credentials_version FROM placement_guards WHERE user_id = $1",
    binds: &[Bound::Owner],
};

/// The two statements of a placement in the steady state: the owner's facts (read
/// once per instance and owner, then cached) and the guarded append.
pub fn placement() -> [Statement; 2] {
    [PLACEMENT_FACTS, INSERT_GUARDED_PLACEMENT]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement binds exactly the parameters its text uses.
    #[test]
    fn each_statement_lists_what_its_text_uses() {
        for statement in [
            INSERT_EVENTS,
            INSERT_USER_EVENTS,
            INSERT_ORDER_EVENTS,
            INSERT_GUARDED_PLACEMENT,
            INSERT_PRICE_CHECK_EVENTS,
            INSERT_PURCHASE_EVENTS,
            PLACEMENT_FACTS,
        ] {
            let count = statement.binds().len();
            for index in 1..=count {
                assert!(
                    statement.sql().contains(&format!("${index}")),
                    "${index} unused in {}",
                    statement.sql()
                );
            }
            assert!(
                !statement.sql().contains(&format!("${}", count + 1)),
                "a parameter beyond the list in {}",
                statement.sql()
            );
        }
    }
}
