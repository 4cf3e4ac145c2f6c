//! The purchase saga (`system:saga`): brings each purchase's stock in line with its
//! status, from the log.
//!
//! One step, [`Saga::settle`], run for every purchase event (placed, rejected,
//! cancelled, shipped) and by the time bound. It loads the purchase and does what
//! its status asks:
//!
//! - **pending**: reserve every line on its product (through the [`StockDesk`], which
//!   batches the requests of many buyers of one product into one append), then
//!   confirm at the reserved unit prices; if a line is refused (out of stock,
//!   unknown or retired product, or the lines' currencies differ), release the
//!   lines it reserved and reject with the reason of the first line that failed;
//!   the verdict is decided on the purchase as loaded, so a cancellation stored
//!   meanwhile makes the step start over;
//! - **rejected or cancelled**: release every line;
//! - **shipped or delivered**: turn every line's reservation into shipped stock;
//! - **confirmed**: nothing (its stock is reserved).
//!
//! Why it cannot oversell or leak:
//! - A product grants a reservation only from what is available, holds at most one
//!   per purchase, and answers a repeated request from the one held: a redelivered
//!   or concurrent step reserves nothing twice. Release and ship act only on what
//!   is held.
//! - Confirming and rejecting are decided by the purchase on its current status: if
//!   the buyer cancelled (or the time bound rejected) while the saga was reserving,
//!   the confirmation is refused and the step starts over, now releasing. And a
//!   reservation stored after a release had run is caught the same way: the
//!   release ran because the purchase was no longer pending, which the step that
//!   reserved sees when it confirms (or, after a crash, when the message is
//!   redelivered and the step starts over).
//! - A message is acknowledged only after its step completed, so a SIGKILL at any
//!   point means the step runs again, on the log's state, to the same end.
//! - A purchase still pending after the bound (`ORDERS_SAGA_TIMEOUT_SECS`, default
//!   30 s) is rejected `timed_out` by the instance holding the `saga-timeouts`
//!   lease, and its reservations released: every purchase settles.

pub mod desk;

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use orders_application::purchases::{decide_on_held, reject_purchase};
use orders_application::stock::AttributedRequest;
use orders_application::CommandError;
use orders_domain::ids::PurchaseId;
use orders_domain::money::Money;
use orders_domain::product::{StockOutcome, StockRequest};
use orders_domain::purchase::{
    Purchase, PurchaseCommand, PurchaseError, PurchaseLine, PurchaseStatus, RejectionReason,
};
use orders_nats::LogEvent;
use orders_store::event_store::{CommandMetadata, EventStore, RelayWaker};

use crate::consumer::Outcome;
use crate::work_metadata::caused_by;
pub use desk::StockDesk;

/// The actor of everything the saga stores.
pub const SAGA_ACTOR: &str = "system:saga";
/// How long a purchase may stay pending, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after a purchase was rejected, cancelled or shipped the sweep settles
/// it once more: far above the ack wait (5 s), so a step of it still running, or
/// redelivered, has stored what it was going to.
pub const SWEEP_GRACE: Duration = Duration::from_secs(120);
/// Ticks of the time bound's loop (seconds) between two sweeps.
const SWEEP_EVERY_TICKS: u32 = 30;
/// Events of the log the sweep reads at a time, and at most per sweep (a first
/// sweep over a long log catches up a page group at a time, leaving the time
/// bound its turn).
const SWEEP_PAGE: i64 = 1_000;
const SWEEP_PAGES: usize = 20;
/// Purchases the sweep settles at once (their releases share the desk's batches).
const SWEEP_CONCURRENCY: usize = 32;
/// How many times a step starts over because the purchase changed under it.
const ROUNDS: usize = 10;

/// The saga of one instance.
#[derive(Clone)]
pub struct Saga {
    events: EventStore,
    desk: StockDesk,
    timeout: Duration,
}

impl Saga {
    pub fn new(events: EventStore, timeout: Duration) -> Self {
        Self {
            desk: StockDesk::new(events.clone()),
            events,
            timeout,
        }
    }

    /// Runs the saga's two duties until `shutdown`: its steps, a competing consumer
    /// of purchase events (`concurrency` at a time), and, while `lease` is held, the
    /// time bound.
    pub async fn serve(
        &self,
        jetstream: &async_nats::jetstream::Context,
        concurrency: usize,
        lease: orders_nats::leader::LeaderLease,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        let this = self.waking_the_relay(jetstream);
        let stepping = Box::pin({
            let saga = this.clone();
            crate::consumer::consume(
                jetstream,
                orders_nats::work::SAGA,
                concurrency,
                shutdown.clone().cancelled_owned(),
                move |event| {
                    let saga = saga.clone();
                    async move { saga.handle(event).await }
                },
            )
        });
        let bounding = Box::pin({
            let saga = this;
            orders_nats::leader::lead(lease, orders_nats::LEADER_LEASE, shutdown, move || {
                let saga = saga.clone();
                async move { saga.run_time_bound().await }
            })
        });
        tokio::try_join!(
            async { stepping.await.context("the saga's steps") },
            async { bounding.await.context("the saga's time bound") },
        )?;
        Ok(())
    }

    /// This saga with an event store that wakes the relay after every append, as
    /// the API's does after a command. Without it, what the saga stores waited for
    /// the relay's idle poll (`ORDERS_RELAY_POLL_MS`, 100 ms by default) whenever no
    /// command happened to wake the relay meanwhile: at 5 purchases/s that poll was
    /// most of placed → settled (p50 110 ms, against 6 ms for the placement).
    fn waking_the_relay(&self, jetstream: &async_nats::jetstream::Context) -> Self {
        let events = self
            .events
            .clone()
            .with_relay_waker(Some(RelayWaker::new(jetstream.client())));
        Self {
            desk: StockDesk::new(events.clone()),
            events,
            timeout: self.timeout,
        }
    }

    /// The step for one log message.
    pub async fn handle(&self, event: LogEvent) -> Outcome {
        if event.aggregate_type != "purchase"
            || !matches!(
                event.event_type.as_str(),
                "PurchasePlaced" | "PurchaseRejected" | "PurchaseCancelled" | "PurchaseShipped"
            )
        {
            return Outcome::Done;
        }
        let Ok(purchase_id) = event.aggregate_id.parse::<PurchaseId>() else {
            return Outcome::GiveUp(anyhow::anyhow!(
                "purchase id {:?} is not a UUID",
                event.aggregate_id
            ));
        };
        let metadata = caused_by(&event, SAGA_ACTOR);
        match self.settle(purchase_id, &metadata).await {
            Ok(_) => Outcome::Done,
            // Everything the step does is idempotent and decided on the log's
            // state, so any failure is worth another try.
            Err(error) => Outcome::Retry(error.context(format!("settling purchase {purchase_id}"))),
        }
    }

    /// Brings the purchase's stock in line with its status (see the module's
    /// comment); answers the status it settled at.
    pub async fn settle(
        &self,
        purchase_id: PurchaseId,
        metadata: &CommandMetadata,
    ) -> anyhow::Result<Option<PurchaseStatus>> {
        for _round in 0..ROUNDS {
            let (purchase, sequence) = self
                .events
                .load::<Purchase>(&purchase_id.to_string())
                .await
                .context("loading the purchase")?;
            let Some(status) = purchase.status() else {
                return Ok(None);
            };
            let settled = match status {
                PurchaseStatus::Pending => {
                    match self
                        .reserve_and_decide(&purchase, sequence, metadata)
                        .await?
                    {
                        Some(verdict) => return Ok(Some(verdict)),
                        None => false,
                    }
                }
                PurchaseStatus::Confirmed => true,
                PurchaseStatus::Rejected | PurchaseStatus::Cancelled => {
                    self.on_every_line(&purchase, metadata, StockAction::Release)
                        .await?;
                    true
                }
                PurchaseStatus::Shipped | PurchaseStatus::Delivered => {
                    self.on_every_line(&purchase, metadata, StockAction::Ship)
                        .await?;
                    true
                }
            };
            if settled {
                return Ok(Some(status));
            }
        }
        anyhow::bail!("the purchase kept changing while the saga settled it")
    }

    /// Reserves every line of a pending purchase (loaded at `sequence`), then
    /// confirms or rejects it; answers the verdict, or `None` when the purchase was
    /// no longer pending when the verdict came (start over on its new status).
    async fn reserve_and_decide(
        &self,
        purchase: &Purchase,
        sequence: usize,
        metadata: &CommandMetadata,
    ) -> anyhow::Result<Option<PurchaseStatus>> {
        let outcomes = self
            .on_every_line(purchase, metadata, StockAction::Reserve)
            .await?;
        let (status, command) = match verdict(purchase.lines(), &outcomes) {
            Ok(unit_prices) => (
                PurchaseStatus::Confirmed,
                PurchaseCommand::Confirm { unit_prices },
            ),
            Err(reason) => {
                self.release_reserved(purchase, &outcomes, metadata).await?;
                (PurchaseStatus::Rejected, PurchaseCommand::Reject { reason })
            }
        };
        // On the purchase as loaded: whatever was stored on it since (a
        // cancellation) is a conflict, and the step starts over.
        match decide_on_held(&self.events, purchase, sequence, command, metadata).await {
            Ok(_) => Ok(Some(status)),
            Err(CommandError::Conflict) => Ok(None),
            Err(error) => Err(anyhow::Error::new(error).context("storing the saga's verdict")),
        }
    }

    /// Asks `action` of every line's product at once; answers the outcomes in the
    /// lines' order.
    async fn on_every_line(
        &self,
        purchase: &Purchase,
        metadata: &CommandMetadata,
        action: StockAction,
    ) -> anyhow::Result<Vec<StockOutcome>> {
        let purchase_id = purchase.id().context("a placed purchase has an id")?;
        let asks = purchase.lines().iter().map(|line| {
            self.desk.ask(
                line.product_id,
                AttributedRequest {
                    request: action.request(purchase_id, line),
                    metadata: metadata.clone(),
                },
            )
        });
        futures::future::try_join_all(asks).await
    }

    /// Releases the lines this step found reserved (`outcomes`, in the lines'
    /// order) before the purchase is rejected. A line refused, or on an unknown or
    /// retired product, holds nothing: a product answers a repeated reservation
    /// from the one it holds, so a reservation of an earlier try shows as reserved.
    async fn release_reserved(
        &self,
        purchase: &Purchase,
        outcomes: &[StockOutcome],
        metadata: &CommandMetadata,
    ) -> anyhow::Result<()> {
        let purchase_id = purchase.id().context("a placed purchase has an id")?;
        let releases = purchase
            .lines()
            .iter()
            .zip(outcomes)
            .filter(|(_, outcome)| matches!(outcome, StockOutcome::Reserved { .. }))
            .map(|(line, _)| {
                self.desk.ask(
                    line.product_id,
                    AttributedRequest {
                        request: StockAction::Release.request(purchase_id, line),
                        metadata: metadata.clone(),
                    },
                )
            });
        futures::future::try_join_all(releases).await?;
        Ok(())
    }

    /// Rejects (`timed_out`) every purchase still pending that was placed before
    /// `now` minus the bound, and releases what it held. Time is a parameter so
    /// tests need not wait.
    pub async fn reject_overdue(&self, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let bound = chrono::Duration::from_std(self.timeout).unwrap_or(chrono::Duration::MAX);
        let overdue = self
            .events
            .pending_purchases_placed_before(now - bound, 1_000)
            .await
            .context("reading the pending purchases")?;
        let mut rejected = 0;
        for purchase_id in overdue {
            let metadata = CommandMetadata::new_job(SAGA_ACTOR);
            match reject_purchase(
                &self.events,
                purchase_id,
                RejectionReason::TimedOut,
                &metadata,
            )
            .await
            {
                Ok(_) => rejected += 1,
                // Settled meanwhile.
                Err(CommandError::Refused(PurchaseError::IllegalTransition { .. })) => {}
                Err(error) => {
                    return Err(anyhow::Error::new(error)
                        .context(format!("rejecting overdue purchase {purchase_id}")))
                }
            }
            self.settle(purchase_id, &metadata).await?;
        }
        Ok(rejected)
    }

    /// The reconciliation sweep: settles once more, through the steps'
    /// idempotent `settle`, every purchase rejected, cancelled or shipped before
    /// `now` minus [`SWEEP_GRACE`] that it has not swept yet (a cursor on the log,
    /// in the `saga_sweep` table). Whatever reservation a lost step left behind
    /// (a copy of a redelivered message killed between its reservation and its
    /// verdict, or a release dead-lettered) is released or shipped then; for every
    /// other purchase it is a batch that decides nothing. Time is a parameter so
    /// tests need not wait. Answers how many purchases it settled.
    pub async fn sweep(&self, now: DateTime<Utc>) -> anyhow::Result<Swept> {
        let grace = chrono::Duration::from_std(SWEEP_GRACE).unwrap_or(chrono::Duration::MAX);
        let mut swept = Swept::default();
        for _page in 0..SWEEP_PAGES {
            let (purchases, cursor) = self
                .events
                .purchases_to_sweep(now - grace, SWEEP_PAGE)
                .await
                .context("reading the log for the sweep")?;
            let Some(cursor) = cursor else {
                swept.caught_up = true;
                return Ok(swept);
            };
            let settled: Vec<anyhow::Result<_>> = futures::stream::iter(purchases)
                .map(|purchase_id| async move {
                    let metadata = CommandMetadata::new_job(SAGA_ACTOR);
                    self.settle(purchase_id, &metadata).await
                })
                .buffer_unordered(SWEEP_CONCURRENCY)
                .collect()
                .await;
            for outcome in settled {
                outcome?;
                swept.purchases += 1;
            }
            self.events
                .advance_saga_sweep(cursor)
                .await
                .context("moving the sweep's cursor")?;
        }
        Ok(swept)
    }

    /// Looks for overdue purchases every second, and sweeps every
    /// [`SWEEP_EVERY_TICKS`] seconds, until it fails (the leader loop restarts it).
    pub async fn run_time_bound(&self) -> anyhow::Result<()> {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u32 = 0;
        loop {
            every.tick().await;
            if ticks % SWEEP_EVERY_TICKS == 0 {
                // A sweep that fails is tried again at its next turn; it must not
                // keep the time bound from running.
                match self.sweep(Utc::now()).await {
                    Ok(swept) => {
                        if swept.purchases > 0 {
                            tracing::info!(
                                purchases = swept.purchases,
                                "the saga's sweep settled purchases once more"
                            );
                        }
                        // Behind (a first sweep over a long log): again next tick.
                        ticks = if swept.caught_up { ticks } else { u32::MAX };
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "the saga's sweep failed");
                    }
                }
            }
            ticks = ticks.wrapping_add(1);
            let rejected = self.reject_overdue(Utc::now()).await?;
            if rejected > 0 {
                tracing::warn!(
                    rejected,
                    "purchases still pending past the saga's bound were rejected"
                );
            }
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Purchases settled once more.
    pub purchases: usize,
    /// Whether it reached the grace period (else it stopped after its pages).
    pub caught_up: bool,
}

/// What the saga asks of every line's product.
#[derive(Debug, Clone, Copy)]
enum StockAction {
    Reserve,
    Release,
    Ship,
}

impl StockAction {
    fn request(self, purchase_id: PurchaseId, line: &PurchaseLine) -> StockRequest {
        match self {
            StockAction::Reserve => StockRequest::Reserve {
                purchase_id,
                quantity: line.quantity,
            },
            StockAction::Release => StockRequest::Release { purchase_id },
            StockAction::Ship => StockRequest::Ship { purchase_id },
        }
    }
}

/// The unit prices to confirm at (every line reserved, one currency), or why the
/// purchase is rejected (the first line that failed, in the lines' order).
fn verdict(
    lines: &[PurchaseLine],
    outcomes: &[StockOutcome],
) -> Result<Vec<Money>, RejectionReason> {
    let mut unit_prices = Vec::with_capacity(lines.len());
    for (line, outcome) in lines.iter().zip(outcomes) {
        let product_id = line.product_id;
        match outcome {
            StockOutcome::Reserved { unit_price, .. } => unit_prices.push(*unit_price),
            StockOutcome::Refused {
                requested,
                available,
            } => {
                return Err(RejectionReason::OutOfStock {
                    product_id,
                    requested: *requested,
                    available: *available,
                })
            }
            StockOutcome::RetiredProduct => {
                return Err(RejectionReason::RetiredProduct { product_id })
            }
            StockOutcome::UnknownProduct
            | StockOutcome::Released { .. }
            | StockOutcome::Shipped { .. }
            | StockOutcome::NothingHeld => {
                return Err(RejectionReason::UnknownProduct { product_id })
            }
        }
    }
    let mut currencies = unit_prices.iter().map(Money::currency);
    let first = currencies.next();
    if currencies.any(|currency| Some(currency) != first) {
        return Err(RejectionReason::CurrencyMismatch);
    }
    Ok(unit_prices)
}
