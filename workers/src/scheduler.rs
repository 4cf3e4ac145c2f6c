//! The scheduler: turns orders that are due into price-check requests. One instance
//! is active (leader-elected on the `scheduler` lease); the others stand by.
//!
//! Its plan is the `check_schedule` table: when each active order is next due. An
//! order enters the plan when the orders view shows it active; its first check is
//! due soon after it was placed, spread by a jitter derived from its id (a thousand
//! orders placed at once do not fire at once); each later one an interval after the
//! previous request, give or take a tenth. A request for an order whose check is
//! still in flight stores nothing (the order's claim, see
//! `orders_application::price_checks`) and the order is looked at again a little
//! later. Paused and cancelled orders are never requested: the view's status rules
//! them out, and the price-check aggregate refuses them in any case.
//!
//! Time is given to [`Scheduler::tick`], so tests run schedules without sleeping.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use orders_application::price_checks::{load_order, request_check, CheckRequested};
use orders_application::CommandError;
use orders_domain::ids::OrderId;
use orders_domain::price_check::{CheckTrigger, PriceCheckError};
use orders_store::event_store::{CommandMetadata, EventStore};
use sqlx::PgPool;
use uuid::Uuid;

/// The longest spread of first checks: an order placed now is first checked within
/// this (or a tenth of its interval, if less).
pub const FIRST_CHECK_SPREAD: Duration = Duration::from_secs(60);
/// When a check is still in flight, look at the order again after this.
pub const IN_FLIGHT_RETRY: Duration = Duration::from_secs(60);
/// Orders looked at per tick, at most.
pub const TICK_BATCH: i64 = 1_000;
/// Requests made at once.
const CONCURRENT_REQUESTS: usize = 16;

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Orders added to the plan.
    pub planned: usize,
    /// Checks requested.
    pub requested: usize,
    /// Orders due whose check was still in flight.
    pub in_flight: usize,
    /// Orders due that may not be checked (paused or cancelled since the view said
    /// active) or are gone.
    pub skipped: usize,
}

pub struct Scheduler {
    pool: PgPool,
    events: EventStore,
}

impl Scheduler {
    pub fn new(pool: PgPool, events: EventStore) -> Self {
        Self { pool, events }
    }

    /// Plans new active orders and requests a check of every order due at `now`.
    pub async fn tick(&self, now: DateTime<Utc>) -> anyhow::Result<TickReport> {
        let planned = self.plan_new_orders().await?;
        let due: Vec<(Uuid, i32)> = sqlx::query_as(
            "SELECT s.order_id, o.check_interval_secs
               FROM check_schedule s JOIN view_orders o USING (order_id)
              WHERE s.next_check_at <= $1 AND o.status = 'active' AND o.product_id IS NULL
              ORDER BY s.next_check_at
              LIMIT $2",
        )
        .bind(now)
        .bind(TICK_BATCH)
        .fetch_all(&self.pool)
        .await
        .context("reading the orders due")?;
        let mut report = TickReport {
            planned,
            ..TickReport::default()
        };
        let results: Vec<(
            Uuid,
            i32,
            Result<RequestResult, CommandError<PriceCheckError>>,
        )> = futures::stream::iter(due)
            .map(|(order_id, interval)| async move {
                (order_id, interval, self.request(order_id).await)
            })
            .buffer_unordered(CONCURRENT_REQUESTS)
            .collect()
            .await;
        let mut orders = Vec::with_capacity(results.len());
        let mut next_times = Vec::with_capacity(results.len());
        for (order_id, interval, result) in results {
            let interval = Duration::from_secs(u64::try_from(interval).unwrap_or(3600));
            let next = match result {
                Ok(RequestResult::Requested) => {
                    report.requested += 1;
                    now + next_check_delay(order_id, interval, now)
                }
                Ok(RequestResult::InFlight) => {
                    report.in_flight += 1;
                    now + IN_FLIGHT_RETRY.min(interval)
                }
                Ok(RequestResult::NotCheckable) => {
                    report.skipped += 1;
                    now + interval
                }
                Err(error) => {
                    tracing::warn!(%order_id, %error, "requesting a scheduled check failed");
                    now + IN_FLIGHT_RETRY
                }
            };
            orders.push(order_id);
            next_times.push(next);
        }
        if !orders.is_empty() {
            sqlx::query(
                "UPDATE check_schedule s SET next_check_at = planned.next_check_at
                   FROM UNNEST($1::uuid[], $2::timestamptz[]) AS planned (order_id, next_check_at)
                  WHERE s.order_id = planned.order_id",
            )
            .bind(&orders)
            .bind(&next_times)
            .execute(&self.pool)
            .await
            .context("writing the next check times")?;
        }
        Ok(report)
    }

    /// Adds the active orders the plan does not know yet, first due at their
    /// placement plus their jitter.
    async fn plan_new_orders(&self) -> anyhow::Result<usize> {
        let new: Vec<(Uuid, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT o.order_id, o.check_interval_secs, o.placed_at
               FROM view_orders o
              WHERE o.status = 'active' AND o.product_id IS NULL
                AND NOT EXISTS (SELECT 1 FROM check_schedule s WHERE s.order_id = o.order_id)
              LIMIT $1",
        )
        .bind(TICK_BATCH)
        .fetch_all(&self.pool)
        .await
        .context("reading orders to plan")?;
        if new.is_empty() {
            return Ok(0);
        }
        let orders: Vec<Uuid> = new.iter().map(|(id, _, _)| *id).collect();
        let first: Vec<DateTime<Utc>> = new
            .iter()
            .map(|(id, interval, placed_at)| {
                let interval = Duration::from_secs(u64::try_from(*interval).unwrap_or(3600));
                *placed_at + first_check_delay(*id, interval)
            })
            .collect();
        let inserted = sqlx::query(
            "INSERT INTO check_schedule (order_id, next_check_at)
             SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[])
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(&orders)
        .bind(&first)
        .execute(&self.pool)
        .await
        .context("planning new orders")?;
        Ok(usize::try_from(inserted.rows_affected()).unwrap_or(0))
    }

    async fn request(
        &self,
        order_id: Uuid,
    ) -> Result<RequestResult, CommandError<PriceCheckError>> {
        let order = match load_order(&self.events, OrderId::from_uuid(order_id)).await {
            Ok(order) => order,
            Err(CommandError::NotFound) => return Ok(RequestResult::NotCheckable),
            Err(error) => return Err(error),
        };
        // One scheduled job per request: its own correlation id.
        let metadata = CommandMetadata::new_job("system:scheduler");
        match request_check(&self.events, &order, CheckTrigger::Scheduled, &metadata).await {
            Ok(CheckRequested::Requested { .. }) => Ok(RequestResult::Requested),
            Ok(CheckRequested::AlreadyInFlight) => Ok(RequestResult::InFlight),
            Err(CommandError::Refused(
                PriceCheckError::OrderPaused | PriceCheckError::OrderCancelled,
            )) => Ok(RequestResult::NotCheckable),
            Err(error) => Err(error),
        }
    }

    /// Ticks every `every` until `shutdown` (while this instance leads).
    pub async fn run(&self, every: Duration) -> anyhow::Result<()> {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let report = self.tick(Utc::now()).await?;
            if report.requested + report.planned > 0 {
                tracing::info!(?report, "scheduler tick");
            }
        }
    }
}

enum RequestResult {
    Requested,
    InFlight,
    NotCheckable,
}

/// A number in `[0, 1)` derived from an order id and a salt: the same order always
/// gets the same jitter for the same salt, different orders spread evenly.
fn unit_jitter(order_id: Uuid, salt: i64) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in order_id.as_bytes().iter().chain(salt.to_le_bytes().iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The top 53 bits as a fraction.
    (hash >> 11) as f64 / (1_u64 << 53) as f64
}

/// How long after its placement an order is first checked: somewhere in
/// `[0, min(FIRST_CHECK_SPREAD, interval / 10))`.
pub fn first_check_delay(order_id: Uuid, interval: Duration) -> chrono::Duration {
    let spread = FIRST_CHECK_SPREAD.min(interval / 10);
    let millis = (spread.as_millis() as f64 * unit_jitter(order_id, 0)) as i64;
    chrono::Duration::milliseconds(millis)
}

/// How long after a request the next one is due: the interval, give or take a
/// tenth, varying from one request to the next.
pub fn next_check_delay(
    order_id: Uuid,
    interval: Duration,
    now: DateTime<Utc>,
) -> chrono::Duration {
    let interval_ms = interval.as_millis() as f64;
    let jitter = (unit_jitter(order_id, now.timestamp()) * 2.0 - 1.0) * 0.1;
    chrono::Duration::milliseconds((interval_ms * (1.0 + jitter)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_checks_of_orders_placed_together_spread_over_the_first_minute() {
        let interval = Duration::from_secs(3600);
        let mut delays: Vec<i64> = (0..1000)
            .map(|_| first_check_delay(Uuid::now_v7(), interval).num_milliseconds())
            .collect();
        delays.sort_unstable();
        assert!(delays.iter().all(|&ms| (0..60_000).contains(&ms)));
        // Spread out: no second of the minute gets more than a few percent.
        let mut per_second = [0_u32; 60];
        for ms in &delays {
            per_second[(*ms / 1000) as usize] += 1;
        }
        assert!(per_second.iter().all(|&count| count < 45), "{per_second:?}");
        assert!(per_second.iter().filter(|&&count| count > 0).count() > 55);
    }

    #[test]
    fn the_first_check_spread_is_a_tenth_of_a_short_interval() {
        let delay = first_check_delay(Uuid::now_v7(), Duration::from_secs(300));
        assert!(delay < chrono::Duration::seconds(30));
    }

    #[test]
    fn later_checks_are_an_interval_apart_give_or_take_a_tenth() {
        let order = Uuid::now_v7();
        let interval = Duration::from_secs(3600);
        let now = Utc::now();
        let delays: Vec<i64> = (0..200)
            .map(|n| {
                next_check_delay(order, interval, now + chrono::Duration::seconds(n * 3600))
                    .num_seconds()
            })
            .collect();
        assert!(
            delays.iter().all(|&secs| (3240..=3960).contains(&secs)),
            "{delays:?}"
        );
        assert!(delays.iter().any(|&secs| secs < 3500) && delays.iter().any(|&secs| secs > 3700));
    }

    #[test]
    fn the_same_order_and_time_give_the_same_jitter() {
        let order = Uuid::now_v7();
        let now = Utc::now();
        assert_eq!(
            next_check_delay(order, Duration::from_secs(600), now),
            next_check_delay(order, Duration::from_secs(600), now)
        );
    }
}
