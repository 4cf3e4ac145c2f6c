//! The shop's views (`products`, `purchases`, `analytics`) against a real PostgreSQL
//! and a real nats-server: a history of products and purchases over three days,
//! decided by the aggregates as the command side and the saga would, is published to
//! the log stream as the relay publishes it; the projectors (`run`, as `orders serve
//! projectors` runs them) fold it; the query functions read what a shopper and an
//! administrator would see; and `orders replay` of each view rebuilds it equal to
//! the live one, also after the live projectors went on from the swapped-in view.

use std::collections::HashMap;
use std::time::Duration;

use cqrs_es::{Aggregate as _, DomainEvent};
use orders_domain::ids::{OrderId, ProductId, PurchaseId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::order::{OrderEvent, ProductUrl};
use orders_domain::price_check::{CheckFailureReason, CheckTrigger, FetchFacts, PriceCheckEvent};
use orders_domain::product::{Product, ProductCommand, Sku, StockOutcome, StockRequest};
use orders_domain::purchase::{
    Canceller, Purchase, PurchaseCommand, PurchaseLine, PurchaseStatus, RejectionReason,
};
use orders_nats::LogEvent;
use orders_projectors::query::{self, analytics, products, purchases, ListError};
use orders_projectors::{checkpoint, Generation, View};
use orders_test_support::database::fresh_database;
use orders_test_support::nats_server::NatsServer;
use orders_test_support::wait::eventually;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SHOP_VIEWS: [View; 3] = [View::Products, View::Purchases, View::Analytics];
const ADMIN: &str = "cli:shopkeeper@test";
const SAGA: &str = "system:saga";

/// The log as the relay writes it, and the aggregates whose events it carries
/// (decided by the aggregates themselves, so the history is one they allow).
struct Log {
    jetstream: async_nats::jetstream::Context,
    /// The UTC day of November 2026 the next events are recorded on.
    day: u32,
    tick: u32,
    global_position: i64,
    stream_sequence: u64,
    sequences: HashMap<Uuid, i64>,
    products: HashMap<Uuid, Product>,
    purchases: HashMap<Uuid, Purchase>,
}

impl Log {
    fn new(jetstream: async_nats::jetstream::Context) -> Self {
        Self {
            jetstream,
            day: 1,
            tick: 0,
            global_position: 0,
            stream_sequence: 0,
            sequences: HashMap::new(),
            products: HashMap::new(),
            purchases: HashMap::new(),
        }
    }

    /// Publishes one event of the aggregate `id` as the relay does, recorded now on
    /// the log's day, caused by `actor`.
    async fn publish<E: DomainEvent + Serialize>(
        &mut self,
        aggregate_type: &str,
        id: Uuid,
        event: &E,
        actor: &str,
    ) {
        self.tick += 1;
        self.global_position += 1;
        let sequence = self.sequences.entry(id).or_default();
        *sequence += 1;
        let sequence = *sequence;
        let message = LogEvent {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: id.to_string(),
            sequence,
            event_type: event.event_type(),
            event_version: event.event_version(),
            tx_id: 5_000 + self.global_position as u64,
            global_position: self.global_position,
            recorded_at: self.now(),
            payload: serde_json::to_vec(event).unwrap().into(),
            metadata: [("actor".to_owned(), actor.to_owned())].into(),
        };
        let ack = self
            .jetstream
            .publish_with_headers(
                message.subject().unwrap(),
                message.headers(),
                message.body(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        self.stream_sequence = ack.sequence;
    }

    /// The time the next event is recorded at (RFC 3339, UTC, with microseconds).
    fn now(&self) -> String {
        format!(
            "2026-11-{:02}T10:{:02}:{:02}.250000Z",
            self.day,
            self.tick / 60,
            self.tick % 60
        )
    }

    async fn product(&mut self, id: Uuid, command: ProductCommand) {
        let product = self.products.entry(id).or_default();
        let events = product.decide(command).unwrap();
        for event in &events {
            product.apply(event.clone());
        }
        for event in events {
            self.publish("product", id, &event, ADMIN).await;
        }
    }

    async fn stock(&mut self, product: Uuid, request: StockRequest) -> StockOutcome {
        let state = self.products.entry(product).or_default();
        let (events, outcomes) = state.decide_stock(&[request]);
        for event in &events {
            state.apply(event.clone());
        }
        for event in events {
            self.publish("product", product, &event, SAGA).await;
        }
        outcomes[0]
    }

    async fn purchase(&mut self, id: Uuid, command: PurchaseCommand, actor: &str) {
        let purchase = self.purchases.entry(id).or_default();
        let events = purchase.decide(command).unwrap();
        for event in &events {
            purchase.apply(event.clone());
        }
        for event in events {
            self.publish("purchase", id, &event, actor).await;
        }
    }

    /// Places a purchase of `lines` for `owner`.
    async fn place(&mut self, id: Uuid, owner: Uuid, lines: &[(Uuid, u32)]) {
        let lines = lines
            .iter()
            .map(|(product, quantity)| PurchaseLine {
                product_id: ProductId::from_uuid(*product),
                quantity: *quantity,
            })
            .collect();
        let command = PurchaseCommand::Place {
            purchase_id: PurchaseId::from_uuid(id),
            owner: UserId::from_uuid(owner),
            lines,
        };
        self.purchase(id, command, &format!("user:{owner}")).await;
    }

    /// What the saga does with a pending purchase: reserves every line, then
    /// confirms it at the reserved prices, or releases what it reserved and rejects
    /// it. With `confirm` false it stops after the reservations (still pending).
    async fn settle(&mut self, id: Uuid, confirm: bool) {
        let purchase_id = PurchaseId::from_uuid(id);
        let lines = self.purchases[&id].lines().to_vec();
        let mut prices = Vec::new();
        let mut refusal = None;
        for line in &lines {
            let product = line.product_id.as_uuid();
            let request = StockRequest::Reserve {
                purchase_id,
                quantity: line.quantity,
            };
            let product_id = line.product_id;
            match self.stock(product, request).await {
                StockOutcome::Reserved { unit_price, .. } => prices.push(unit_price),
                StockOutcome::Refused {
                    requested,
                    available,
                } => {
                    refusal = Some(RejectionReason::OutOfStock {
                        product_id,
                        requested,
                        available,
                    });
                    break;
                }
                StockOutcome::RetiredProduct => {
                    refusal = Some(RejectionReason::RetiredProduct { product_id });
                    break;
                }
                other => panic!("a reservation answered {other:?}"),
            }
        }
        if let Some(reason) = refusal {
            self.release(id).await;
            let command = PurchaseCommand::Reject { reason };
            self.purchase(id, command, SAGA).await;
        } else if confirm {
            let command = PurchaseCommand::Confirm {
                unit_prices: prices,
            };
            self.purchase(id, command, SAGA).await;
        }
    }

    /// Releases what the purchase holds on each of its products.
    async fn release(&mut self, id: Uuid) {
        let purchase_id = PurchaseId::from_uuid(id);
        for line in self.purchases[&id].lines().to_vec() {
            let request = StockRequest::Release { purchase_id };
            self.stock(line.product_id.as_uuid(), request).await;
        }
    }

    /// Ships a confirmed purchase: its stock leaves every product, then the purchase.
    async fn ship(&mut self, id: Uuid) {
        let purchase_id = PurchaseId::from_uuid(id);
        for line in self.purchases[&id].lines().to_vec() {
            let request = StockRequest::Ship { purchase_id };
            self.stock(line.product_id.as_uuid(), request).await;
        }
        self.purchase(id, PurchaseCommand::Ship, ADMIN).await;
    }
}

fn money(amount: &str, currency: &str) -> Money {
    Money::parse(amount, Currency::from_code(currency).unwrap()).unwrap()
}

fn add(id: Uuid, sku: &str, name: &str, price: Money, stock: u64) -> ProductCommand {
    ProductCommand::Add {
        product_id: ProductId::from_uuid(id),
        sku: Sku::parse(sku).unwrap(),
        name: name.to_owned(),
        description: format!("{name}, as sold"),
        price,
        image_url: Some(ProductUrl::parse("https://img.example/p.png").unwrap()),
        stock,
    }
}

/// The catalog's products and the buyers' purchases of the scenario.
struct Shop {
    kettle: Uuid,
    mug: Uuid,
    lamp: Uuid,
    radio: Uuid,
    ann: Uuid,
    bob: Uuid,
    /// In placement order (UUID v7 order).
    purchases: [Uuid; 7],
}

impl Shop {
    fn new() -> Self {
        let mut ids: Vec<Uuid> = (0..7).map(|_| Uuid::now_v7()).collect();
        ids.sort();
        Self {
            kettle: Uuid::now_v7(),
            mug: Uuid::now_v7(),
            lamp: Uuid::now_v7(),
            radio: Uuid::now_v7(),
            ann: Uuid::now_v7(),
            bob: Uuid::now_v7(),
            purchases: ids.try_into().unwrap(),
        }
    }
}

/// A tracking order with a check that observed its page and an alert (day 1, 2),
/// and a check that failed (day 2): what the analytics count of the tracker.
async fn tracking(log: &mut Log) {
    let order = Uuid::now_v7();
    let order_id = OrderId::from_uuid(order);
    let url = ProductUrl::parse("https://shop.example/kettle").unwrap();
    let owner = format!("user:{}", Uuid::now_v7());
    let placed = OrderEvent::OrderPlaced {
        order_id,
        owner: UserId::from_uuid(Uuid::now_v7()),
        url: Some(url.clone()),
        product_id: None,
        target: money("29.00", "EUR"),
        check_interval_secs: 3600,
        selector: None,
    };
    log.publish("order", order, &placed, &owner).await;
    for (outcome, day) in [(true, 1), (false, 2)] {
        log.day = day;
        let check = Uuid::now_v7();
        let requested = PriceCheckEvent::PriceCheckRequested {
            check_id: orders_domain::ids::CheckId::from_uuid(check),
            order_id,
            url: url.clone(),
            selector: None,
            currency: Currency::from_code("EUR").unwrap(),
            trigger: CheckTrigger::Scheduled,
        };
        log.publish("price_check", check, &requested, "system:scheduler")
            .await;
        let result = if outcome {
            PriceCheckEvent::PriceObserved {
                order_id,
                price: Some(money("28.00", "EUR")),
                availability: orders_domain::order::Availability::InStock,
                title: Some("Kettle".to_owned()),
                extractor: Some("json-ld".to_owned()),
                fetch: FetchFacts::default(),
            }
        } else {
            PriceCheckEvent::PriceCheckFailed {
                order_id,
                reason: CheckFailureReason::Timeout,
                detail: None,
                candidates: Vec::new(),
                fetch: FetchFacts::default(),
            }
        };
        log.publish("price_check", check, &result, "system:scraper")
            .await;
    }
    let reached = OrderEvent::TargetReached {
        check_id: Uuid::now_v7(),
        previous: None,
        price: money("28.00", "EUR"),
        target: money("29.00", "EUR"),
    };
    log.publish("order", order, &reached, "system:policy").await;
}

/// Three days of the shop (see the expectations in the checks below).
async fn three_days(log: &mut Log, shop: &Shop) {
    let [p1, p2, p3, p4, p5, p6, p7] = shop.purchases;
    // Day 1: the catalog; Ann buys a kettle pair and a mug (confirmed), Bob asks for
    // more mugs than are left (rejected).
    log.day = 1;
    let eur = |amount| money(amount, "EUR");
    log.product(
        shop.kettle,
        add(
            shop.kettle,
            "KETTLE-42",
            "Electric kettle",
            eur("30.00"),
            10,
        ),
    )
    .await;
    log.product(
        shop.mug,
        add(shop.mug, "MUG-1", "coffee mug", eur("4.50"), 3),
    )
    .await;
    log.product(
        shop.lamp,
        add(shop.lamp, "LAMP-7", "Desk lamp", money("25.00", "USD"), 5),
    )
    .await;
    log.product(
        shop.radio,
        add(shop.radio, "RADIO-1", "Old radio", eur("15.00"), 2),
    )
    .await;
    log.product(shop.radio, ProductCommand::Retire).await;
    let restock = ProductCommand::AdjustStock {
        quantity: 5,
        reason: "delivery from the supplier".to_owned(),
    };
    log.product(shop.kettle, restock).await;
    log.place(p1, shop.ann, &[(shop.kettle, 2), (shop.mug, 1)])
        .await;
    log.settle(p1, true).await;
    log.place(p2, shop.bob, &[(shop.mug, 5)]).await;
    log.settle(p2, true).await;
    tracking(log).await;

    // Day 2: Ann's purchase ships; she buys two lamps (USD); the kettle is cheaper,
    // Bob buys one at the new price.
    log.day = 2;
    log.ship(p1).await;
    log.place(p3, shop.ann, &[(shop.lamp, 2)]).await;
    log.settle(p3, true).await;
    let cheaper = ProductCommand::Change {
        name: None,
        description: None,
        price: Some(eur("28.00")),
        image_url: None,
    };
    log.product(shop.kettle, cheaper).await;
    log.place(p4, shop.bob, &[(shop.kettle, 1)]).await;
    log.settle(p4, true).await;

    // Day 3: Ann's first purchase is delivered and she cancels the lamps (after
    // their confirmation); three kettles reserved and not yet confirmed; Bob cancels
    // a mug while pending; the retired radio cannot be bought.
    log.day = 3;
    log.purchase(p1, PurchaseCommand::Deliver, ADMIN).await;
    let by_ann = format!("user:{}", shop.ann);
    let cancel = |by| PurchaseCommand::Cancel { by };
    log.purchase(p3, cancel(Canceller::Buyer), &by_ann).await;
    log.release(p3).await;
    log.place(p5, shop.ann, &[(shop.kettle, 3)]).await;
    log.settle(p5, false).await;
    log.place(p6, shop.bob, &[(shop.mug, 1)]).await;
    log.settle(p6, false).await;
    log.purchase(p6, cancel(Canceller::Buyer), &format!("user:{}", shop.bob))
        .await;
    log.release(p6).await;
    log.place(p7, shop.ann, &[(shop.radio, 1)]).await;
    log.settle(p7, true).await;
}

/// Waits until every view's live checkpoint is at the log's last message.
async fn caught_up(pool: &PgPool, last: u64) {
    eventually(
        Duration::from_secs(30),
        "every view applied the log",
        || async {
            for view in View::ALL {
                let at = checkpoint::read(pool, view, Generation::Live)
                    .await
                    .unwrap();
                if at.map(|at| at.stream_sequence) != Some(last) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// A view's tables as text, each in a stable order, to compare two builds of it.
async fn contents(pool: &PgPool, view: View) -> Vec<String> {
    let mut tables = Vec::new();
    for table in view.tables() {
        let text: Option<String> = sqlx::query_scalar(&format!(
            "SELECT json_agg(t ORDER BY t::text)::text FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        tables.push(text.unwrap_or_default());
    }
    tables
}

/// Replays each shop view (in batches of `batch_size`) and checks it equals what
/// the live projector had built.
async fn replays_equal_live(pool: &PgPool, log: &Log, batch_size: usize) {
    for view in SHOP_VIEWS {
        let live = contents(pool, view).await;
        assert!(
            live.iter().all(|table| !table.is_empty()),
            "{view}: {live:?}"
        );
        let report = orders_projectors::replay::replay(pool, &log.jetstream, view, batch_size)
            .await
            .unwrap();
        assert_eq!(report.checkpoint.stream_sequence, log.stream_sequence);
        assert_eq!(
            contents(pool, view).await,
            live,
            "{view} rebuilt from the log"
        );
    }
}

#[tokio::test]
async fn the_shops_views_fold_the_log_and_a_replay_rebuilds_them_equal() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    orders_nats::ensure_topology(&jetstream, 1).await.unwrap();
    let (_, pool) = fresh_database(16).await;
    let shop = Shop::new();
    let mut log = Log::new(jetstream.clone());
    three_days(&mut log, &shop).await;

    let shutdown = CancellationToken::new();
    let leaders = jetstream
        .get_key_value(orders_nats::LEADER_BUCKET)
        .await
        .unwrap();
    let projectors = tokio::spawn(orders_projectors::run(
        pool.clone(),
        jetstream.clone(),
        leaders,
        "shop-views-test".to_owned(),
        orders_nats::LEADER_LEASE,
        shutdown.clone(),
    ));
    caught_up(&pool, log.stream_sequence).await;
    check_products(&pool, &shop).await;
    check_purchases(&pool, &shop).await;
    check_analytics(&pool).await;
    check_reservations_match_purchases(&pool).await;

    // Rebuilt while the live projectors run; then the log goes on (Bob's kettle
    // ships on day 4), the live projectors follow from the swapped-in views, and
    // a rebuild in one batch equals them again.
    replays_equal_live(&pool, &log, 1).await;
    log.day = 4;
    log.ship(shop.purchases[3]).await;
    caught_up(&pool, log.stream_sequence).await;
    let kettle = products::get(&pool, shop.kettle).await.unwrap().unwrap();
    assert_eq!((kettle.on_hand, kettle.reserved), (12, 3));
    check_reservations_match_purchases(&pool).await;
    let shipped = analytics::purchases_per_day(&pool, day(4), day(4))
        .await
        .unwrap();
    assert_eq!(shipped[0].counts.shipped, 1);
    replays_equal_live(&pool, &log, 1_000).await;

    shutdown.cancel();
    projectors.await.unwrap().unwrap();
}

fn day(day: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
}

async fn check_products(pool: &PgPool, shop: &Shop) {
    let stock = |row: &products::ProductRow| (row.on_hand, row.reserved, row.available);
    let kettle = products::get(pool, shop.kettle).await.unwrap().unwrap();
    // 10 + 5 restocked - 2 shipped; Bob's one and the three pending reserved.
    assert_eq!(stock(&kettle), (13, 4, 9));
    assert_eq!(kettle.price, money("28.00", "EUR").amount());
    assert_eq!(
        (kettle.sku.as_str(), kettle.status.as_str()),
        ("KETTLE-42", "active")
    );
    let mug = products::get(pool, shop.mug).await.unwrap().unwrap();
    assert_eq!(
        stock(&mug),
        (2, 0, 2),
        "one shipped, Bob's pending one released"
    );
    let lamp = products::get(pool, shop.lamp).await.unwrap().unwrap();
    assert_eq!(
        stock(&lamp),
        (5, 0, 5),
        "the cancelled purchase's lamps released"
    );
    assert_eq!(lamp.currency, "USD");
    let radio = products::get(pool, shop.radio).await.unwrap().unwrap();
    assert_eq!(radio.status, products::RETIRED);
    assert!(products::get(pool, Uuid::now_v7()).await.unwrap().is_none());

    // The public list, by name in any case, two a page; retired ones on request.
    let names = |page: &query::Page<products::ProductRow>| -> Vec<String> {
        page.items.iter().map(|row| row.name.clone()).collect()
    };
    let first = products::list(pool, None, false, 2, None).await.unwrap();
    assert_eq!(names(&first), ["coffee mug", "Desk lamp"]);
    let cursor = first.next_cursor.as_deref();
    let second = products::list(pool, None, false, 2, cursor).await.unwrap();
    assert_eq!(names(&second), ["Electric kettle"]);
    assert_eq!(second.next_cursor, None);
    let all = products::list(pool, None, true, 10, None).await.unwrap();
    assert_eq!(all.items.len(), 4);
    assert_eq!(all.items[3].name, "Old radio");

    // Search: part of a name or SKU, any case; wildcards are plain characters.
    for (search, retired, found) in [
        ("KETTLE", false, vec!["Electric kettle"]),
        ("mug-", false, vec!["coffee mug"]),
        ("  O ", false, vec!["coffee mug"]),
        ("o", false, vec!["coffee mug"]),
        ("o", true, vec!["coffee mug", "Old radio"]),
        ("%", true, vec![]),
        ("_", true, vec![]),
        (
            "",
            false,
            vec!["coffee mug", "Desk lamp", "Electric kettle"],
        ),
    ] {
        let page = products::list(pool, Some(search), retired, 10, None)
            .await
            .unwrap();
        assert_eq!(names(&page), found, "search {search:?}");
    }
    for bad in ["zz", "abcd", "0123456789abcdef0123456789abcdef00ff"] {
        let answer = products::list(pool, None, false, 2, Some(bad)).await;
        assert!(matches!(answer, Err(ListError::BadCursor)), "{bad}");
    }
}

async fn check_purchases(pool: &PgPool, shop: &Shop) {
    let [p1, p2, p3, p4, p5, p6, p7] = shop.purchases;
    let one = |id| async move { purchases::get(pool, id).await.unwrap().unwrap() };
    let delivered = one(p1).await;
    assert_eq!(delivered.status, "delivered");
    assert_eq!(delivered.owner_id, shop.ann);
    let priced: Vec<(Uuid, u32, Option<Decimal>, Option<Decimal>)> = delivered
        .lines
        .iter()
        .map(|l| (l.product_id, l.quantity, l.unit_price, l.line_total))
        .collect();
    let eur = |amount| Some(money(amount, "EUR").amount());
    assert_eq!(
        priced,
        [
            (shop.kettle, 2, eur("30.00"), eur("60.00")),
            (shop.mug, 1, eur("4.50"), eur("4.50")),
        ]
    );
    assert_eq!(
        (delivered.total, delivered.currency.as_deref()),
        (eur("64.50"), Some("EUR"))
    );
    let steps: Vec<(&str, Option<&str>)> = delivered
        .history
        .iter()
        .map(|step| (step.status.as_str(), step.actor.as_deref()))
        .collect();
    let by_ann = format!("user:{}", shop.ann);
    assert_eq!(
        steps,
        [
            ("pending", Some(by_ann.as_str())),
            ("confirmed", Some(SAGA)),
            ("shipped", Some(ADMIN)),
            ("delivered", Some(ADMIN)),
        ]
    );
    assert_eq!(delivered.placed_at, delivered.history[0].at);
    assert_eq!(delivered.history[3].at.date_naive(), day(3));
    // As stored: RFC 3339 in UTC, the reason as the event has it.
    let (at, code): (String, Option<String>) = sqlx::query_as(
        "SELECT p1.history -> 0 ->> 'at', p2.reason ->> 'code'
           FROM view_purchases p1, view_purchases p2
          WHERE p1.purchase_id = $1 AND p2.purchase_id = $2",
    )
    .bind(p1)
    .bind(p2)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(&at).unwrap(),
        delivered.placed_at
    );
    assert!(at.ends_with('Z'), "{at}");
    assert_eq!(code.as_deref(), Some("out_of_stock"));
    let rejected = one(p2).await;
    assert_eq!(
        serde_json::to_value(rejected.reason).unwrap(),
        json!({"code": "out_of_stock", "product_id": shop.mug, "requested": 5, "available": 2})
    );
    assert_eq!((rejected.total, rejected.lines[0].unit_price), (None, None));
    let retired = one(p7).await;
    assert_eq!(
        retired.reason.map(|reason| reason.code()),
        Some("retired_product")
    );
    assert_eq!(one(p3).await.status, "cancelled");
    assert_eq!(one(p3).await.total, Some(money("50.00", "USD").amount()));
    assert!(purchases::get(pool, Uuid::now_v7())
        .await
        .unwrap()
        .is_none());
    check_purchase_lists(pool, shop, [p1, p2, p3, p4, p5, p6, p7]).await;
}

async fn check_purchase_lists(pool: &PgPool, shop: &Shop, ids: [Uuid; 7]) {
    let [p1, p2, p3, p4, p5, p6, p7] = ids;
    // Ann's purchases, newest first, two a page.
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = purchases::of_owner(pool, shop.ann, None, 2, cursor.as_deref())
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        listed.extend(page.items.iter().map(|row| row.purchase_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, [p7, p5, p3, p1]);
    let ids = |page: query::Page<purchases::PurchaseRow>| -> Vec<Uuid> {
        page.items.iter().map(|row| row.purchase_id).collect()
    };
    let cancelled = Some(PurchaseStatus::Cancelled);
    let ann_cancelled = purchases::of_owner(pool, shop.ann, cancelled, 10, None).await;
    assert_eq!(ids(ann_cancelled.unwrap()), [p3]);
    let rejected = Some(PurchaseStatus::Rejected);
    let all_rejected = purchases::all(pool, rejected, None, 10, None).await;
    assert_eq!(ids(all_rejected.unwrap()), [p7, p2]);
    let bobs = purchases::all(pool, None, Some(shop.bob), 10, None).await;
    assert_eq!(ids(bobs.unwrap()), [p6, p4, p2]);
    let everyone = purchases::all(pool, None, None, 3, None).await.unwrap();
    assert_eq!(everyone.items.len(), 3);
    let rest = purchases::all(pool, None, None, 10, everyone.next_cursor.as_deref()).await;
    assert_eq!(ids(rest.unwrap()), [p4, p3, p2, p1]);
    for bad in ["not a cursor", "abcd", ""] {
        let answer = purchases::of_owner(pool, shop.ann, None, 2, Some(bad)).await;
        assert!(matches!(answer, Err(ListError::BadCursor)), "{bad:?}");
    }
}

async fn check_analytics(pool: &PgPool) {
    let days = analytics::purchases_per_day(pool, day(1), day(3))
        .await
        .unwrap();
    let counts: Vec<[i64; 6]> = days
        .iter()
        .map(|d| {
            let c = d.counts;
            [
                c.placed,
                c.confirmed,
                c.rejected,
                c.cancelled,
                c.shipped,
                c.delivered,
            ]
        })
        .collect();
    assert_eq!(
        counts,
        [[2, 1, 1, 0, 0, 0], [2, 2, 0, 0, 1, 0], [3, 0, 1, 2, 0, 1]]
    );
    assert_eq!(days[2].day, day(3));

    let revenue = analytics::revenue(pool, day(1), day(3), None)
        .await
        .unwrap();
    let revenue: Vec<(u32, &str, String)> = revenue
        .iter()
        .map(|r| {
            (
                chrono::Datelike::day(&r.day),
                r.currency.as_str(),
                r.amount.to_string(),
            )
        })
        .collect();
    let expected = [
        (1, "EUR", "64.50"),
        (1, "USD", "0.00"),
        (2, "EUR", "28.00"),
        (2, "USD", "50.00"),
        (3, "EUR", "0.00"),
        (3, "USD", "-50.00"),
    ];
    let expected: Vec<(u32, &str, String)> = expected
        .iter()
        .map(|(d, c, a)| (*d, *c, (*a).to_owned()))
        .collect();
    assert_eq!(revenue, expected);
    let usd = Currency::from_code("USD").unwrap();
    let in_usd = analytics::revenue(pool, day(3), day(4), Some(usd))
        .await
        .unwrap();
    let in_usd: Vec<String> = in_usd.iter().map(|r| r.amount.to_string()).collect();
    assert_eq!(in_usd, ["-50.00", "0.00"]);

    let statuses = analytics::status_distribution(pool).await.unwrap();
    let statuses: Vec<(&str, i64)> = statuses
        .iter()
        .map(|s| (s.status.as_str(), s.purchases))
        .collect();
    assert_eq!(
        statuses,
        [
            ("pending", 1),
            ("confirmed", 1),
            ("rejected", 2),
            ("cancelled", 2),
            ("shipped", 0),
            ("delivered", 1),
        ]
    );

    let tracking = analytics::tracking_per_day(pool, day(1), day(2))
        .await
        .unwrap();
    let tracking: Vec<[i64; 4]> = tracking
        .iter()
        .map(|d| {
            let c = d.counts;
            [c.orders_placed, c.checks_done, c.checks_failed, c.alerts]
        })
        .collect();
    assert_eq!(tracking, [[1, 1, 0, 0], [0, 0, 1, 1]]);

    let summary = analytics::summary(pool).await.unwrap();
    assert_eq!(summary.purchases.placed, 7);
    assert_eq!(summary.purchases.confirmed, 3);
    assert_eq!(
        summary.tracking.checks_done + summary.tracking.checks_failed,
        2
    );
    let totals: Vec<(&str, String)> = summary
        .revenue
        .iter()
        .map(|r| (r.currency.as_str(), r.amount.to_string()))
        .collect();
    assert_eq!(
        totals,
        [("EUR", "92.50".to_owned()), ("USD", "0.00".to_owned())]
    );
    assert_eq!(summary.statuses.len(), 6);
}

/// Guarantee 10 in the views: each product's `reserved` is what its pending and
/// confirmed purchases asked for.
async fn check_reservations_match_purchases(pool: &PgPool) {
    let mismatches: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "WITH owed AS (
             SELECT (line ->> 'product_id')::uuid AS product_id,
                    sum((line ->> 'quantity')::bigint) AS units
               FROM view_purchases, jsonb_array_elements(lines) AS line
              WHERE status IN ('pending', 'confirmed')
              GROUP BY 1)
         SELECT p.product_id, p.reserved, coalesce(owed.units, 0)::int8
           FROM view_products p LEFT JOIN owed USING (product_id)
          WHERE p.reserved <> coalesce(owed.units, 0)",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(mismatches, []);
}
