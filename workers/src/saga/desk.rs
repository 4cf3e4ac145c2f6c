//! The stock desk: how one saga instance turns many buyers of one product into a
//! few appends to that product's stream.
//!
//! Every stock request for a product goes to that product's queue. One task per
//! product takes whatever is queued (up to [`MAX_BATCH`]), decides it all on the
//! product as it is now and appends the result with one statement
//! (`orders_application::stock::handle_stock_requests_on`). While one batch is being
//! stored, the next gathers, so batches grow with the load: a flash sale of
//! thousands of buyers is a few dozen appends, not thousands of optimistic-
//! concurrency retries. The task holds the product between batches
//! ([`HeldProduct`]), so a batch costs one append, not a load of every reservation
//! the product holds and then an append. Only another saga instance (or an
//! administrator's command) appending to the same product can conflict; the
//! product is then loaded again and the batch decided again on it.
//!
//! A product's task ends after a quiet minute; a request that raced with its end is
//! asked again of a new task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orders_application::stock::{handle_stock_requests_on, AttributedRequest, HeldProduct};
use orders_application::CommandError;
use orders_domain::ids::ProductId;
use orders_domain::product::StockOutcome;
use orders_store::event_store::EventStore;
use tokio::sync::{mpsc, oneshot};

/// The most requests decided and appended together.
pub const MAX_BATCH: usize = 500;
/// How long a product's task waits for work before it ends.
const IDLE: Duration = Duration::from_secs(60);
/// How many times a batch is decided again after another instance appended first.
const ATTEMPTS_ON_CONFLICT: usize = 100;

type Answer = Result<StockOutcome, Arc<anyhow::Error>>;

struct Ask {
    request: AttributedRequest,
    answer: oneshot::Sender<Answer>,
}

/// The per-product queues of one saga instance.
#[derive(Clone)]
pub struct StockDesk {
    events: EventStore,
    queues: Arc<Mutex<HashMap<ProductId, mpsc::UnboundedSender<Ask>>>>,
}

impl StockDesk {
    pub fn new(events: EventStore) -> Self {
        Self {
            events,
            queues: Arc::default(),
        }
    }

    /// Asks `request` of `product_id`'s stock and waits for what became of it.
    pub async fn ask(
        &self,
        product_id: ProductId,
        request: AttributedRequest,
    ) -> anyhow::Result<StockOutcome> {
        let mut request = request;
        loop {
            let (answer, answered) = oneshot::channel();
            let queue = self.queue_of(product_id);
            match queue.send(Ask { request, answer }) {
                Ok(()) => {}
                Err(mpsc::error::SendError(ask)) => {
                    // The task ended just now: forget it and ask a new one.
                    self.forget(product_id, &queue);
                    request = ask.request;
                    continue;
                }
            }
            return match answered.await {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(error)) => Err(anyhow::anyhow!("{error:#}")),
                // The task ended with the request still queued (its quiet minute
                // ran out as the request arrived): nothing was decided for it.
                Err(_) => {
                    self.forget(product_id, &queue);
                    anyhow::bail!("the stock desk of product {product_id} closed; ask again")
                }
            };
        }
    }

    fn queue_of(&self, product_id: ProductId) -> mpsc::UnboundedSender<Ask> {
        let mut queues = self.queues.lock().expect("desk lock poisoned");
        queues
            .entry(product_id)
            .or_insert_with(|| {
                let (queue, asks) = mpsc::unbounded_channel();
                tokio::spawn(serve_product(
                    self.events.clone(),
                    product_id,
                    asks,
                    self.clone(),
                ));
                queue
            })
            .clone()
    }

    /// Removes `queue` from the map if it is still the product's.
    fn forget(&self, product_id: ProductId, queue: &mpsc::UnboundedSender<Ask>) {
        let mut queues = self.queues.lock().expect("desk lock poisoned");
        if queues
            .get(&product_id)
            .is_some_and(|current| current.same_channel(queue))
        {
            queues.remove(&product_id);
        }
    }
}

async fn serve_product(
    events: EventStore,
    product_id: ProductId,
    mut asks: mpsc::UnboundedReceiver<Ask>,
    desk: StockDesk,
) {
    let mut held = None;
    loop {
        let first = match tokio::time::timeout(IDLE, asks.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(_) => {
                // Quiet for a minute: leave the map, then serve what raced in.
                {
                    let mut queues = desk.queues.lock().expect("desk lock poisoned");
                    queues.remove(&product_id);
                }
                asks.close();
                let mut late = Vec::new();
                while let Ok(ask) = asks.try_recv() {
                    late.push(ask);
                }
                if !late.is_empty() {
                    decide_batch(&events, product_id, &mut held, late).await;
                }
                return;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match asks.try_recv() {
                Ok(ask) => batch.push(ask),
                Err(_) => break,
            }
        }
        decide_batch(&events, product_id, &mut held, batch).await;
    }
}

/// Decides and stores one batch on the product held (loaded first if it is not),
/// answering each request. After a failure the product is no longer held.
async fn decide_batch(
    events: &EventStore,
    product_id: ProductId,
    held: &mut Option<HeldProduct>,
    batch: Vec<Ask>,
) {
    let requests: Vec<AttributedRequest> = batch.iter().map(|ask| ask.request.clone()).collect();
    let mut attempts = 0;
    let decided = loop {
        attempts += 1;
        let product = match held.as_mut() {
            Some(product) => product,
            None => match HeldProduct::load(events, product_id).await {
                Ok(product) => held.insert(product),
                Err(error) => break Err(error),
            },
        };
        match handle_stock_requests_on(events, product_id, product, &requests).await {
            Err(CommandError::Conflict) if attempts < ATTEMPTS_ON_CONFLICT => {
                // Another instance appended first: decide again on what it left,
                // after a short random pause so the two do not collide in step.
                *held = None;
                let pause = rand_millis(attempts.min(10) as u64 * 2);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            outcome => break outcome,
        }
    };
    if decided.is_err() {
        *held = None;
    }
    match decided {
        Ok((_, outcomes)) => {
            for (ask, outcome) in batch.into_iter().zip(outcomes) {
                let _ = ask.answer.send(Ok(outcome));
            }
        }
        Err(error) => {
            let error = Arc::new(
                anyhow::Error::new(error)
                    .context(format!("deciding stock requests on product {product_id}")),
            );
            for ask in batch {
                let _ = ask.answer.send(Err(error.clone()));
            }
        }
    }
}

/// A pseudo-random number of milliseconds below `ceiling` (at least 1): enough to
/// break the lockstep of two instances; no cryptography needed.
fn rand_millis(ceiling: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::from(elapsed.subsec_nanos()))
        .unwrap_or(0);
    1 + nanos % ceiling.max(1)
}
