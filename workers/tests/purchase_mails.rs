//! The e-mail worker's purchase mails against the real servers: a fresh database on
//! the test PostgreSQL and the SMTP catcher (aiosmtpd, which stores every accepted
//! mail in a Maildir), both started by `make services` / `make test`.
//!
//! Each test stores a purchase's events through the event store's commands (the
//! products, the placement, then what happens to it), reads them back as the relay
//! publishes them and runs the worker's step on each, as its consumer would. Each
//! test's buyer has an address of its own, so parallel tests never see each other's
//! mails.
//!
//! Needs `ORDERS_TEST_DATABASE_URL`, `ORDERS_TEST_SMTP_URL` and `ORDERS_TEST_MAILDIR`
//! (`make services`, then `set -a; . .data/test.env; set +a`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use orders_application::signed_tokens::SignedTokens;
use orders_domain::email::EmailAddress;
use orders_domain::ids::{ProductId, PurchaseId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::product::{Product, ProductCommand, Sku};
use orders_domain::purchase::{
    Canceller, Purchase, PurchaseCommand, PurchaseLine, RejectionReason,
};
use orders_domain::user::{User, UserCommand};
use orders_nats::LogEvent;
use orders_store::event_store::{CommandMetadata, EventStore};
use orders_store::seal::AuditKey;
use orders_store::stored_event::{StoredEventRow, STORED_EVENT_COLUMNS};
use orders_workers::consumer::Outcome;
use orders_workers::email_worker::EmailWorker;
use orders_workers::mail::Mailer;
use sqlx::PgPool;
use url::Url;

const MAIL_FROM: &str = "Orders <shop@orders.test>";
const PUBLIC_URL: &str = "https://orders.test/";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the test servers with `make services`, then \
             `set -a; . .data/test.env; set +a` (make test and CI set it)"
        )
    })
}

fn metadata() -> CommandMetadata {
    CommandMetadata::new_job("system:test")
}

fn uah(amount: &str) -> Money {
    Money::parse(amount, Currency::UAH).unwrap()
}

/// A fresh database, its event store, and the e-mail worker on it and the catcher.
struct Shop {
    pool: PgPool,
    events: EventStore,
    worker: EmailWorker,
    mail_domain: String,
}

impl Shop {
    async fn open() -> Shop {
        let (_, pool) = orders_test_support::database::fresh_database(4).await;
        let events = EventStore::new(
            pool.clone(),
            AuditKey::new(b"the purchase mail tests' audit key, 32+ bytes"),
        );
        let mailer = Mailer::new(&env("ORDERS_TEST_SMTP_URL"), MAIL_FROM).unwrap();
        let mail_domain = mailer.message_id_domain().to_owned();
        let worker = EmailWorker::new(
            pool.clone(),
            events.clone(),
            mailer,
            SignedTokens::new(b"the purchase mail tests' token secret, 32+ bytes"),
            Url::parse(PUBLIC_URL).unwrap(),
        );
        Shop {
            pool,
            events,
            worker,
            mail_domain,
        }
    }

    /// A registered user (verified if `verified`) with an address of their own.
    async fn buyer(&self, verified: bool) -> (UserId, String) {
        let user_id = UserId::new();
        let address = format!("buyer-{}@example.com", user_id.as_uuid().simple());
        self.events
            .execute_with_password(
                &user_id.to_string(),
                UserCommand::Register {
                    user_id,
                    email: EmailAddress::parse(&address).unwrap(),
                },
                &metadata(),
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_owned(),
            )
            .await
            .unwrap();
        if verified {
            self.user_does(user_id, UserCommand::VerifyEmail).await;
        }
        (user_id, address)
    }

    async fn user_does(&self, user_id: UserId, command: UserCommand) {
        self.events
            .execute::<User>(&user_id.to_string(), command, &metadata())
            .await
            .unwrap();
    }

    async fn product(&self, sku: &str, name: &str, price: &str) -> ProductId {
        let product_id = ProductId::new();
        self.events
            .execute_on_new::<Product>(
                &product_id.to_string(),
                ProductCommand::Add {
                    product_id,
                    sku: Sku::parse(sku).unwrap(),
                    name: name.to_owned(),
                    description: format!("{name}, as the catalog describes it"),
                    price: uah(price),
                    image_url: None,
                    stock: 10,
                },
                &metadata(),
            )
            .await
            .unwrap();
        product_id
    }

    async fn place(&self, owner: UserId, lines: &[(ProductId, u32)]) -> PurchaseId {
        let purchase_id = PurchaseId::new();
        self.events
            .execute_on_new::<Purchase>(
                &purchase_id.to_string(),
                PurchaseCommand::Place {
                    purchase_id,
                    owner,
                    lines: lines
                        .iter()
                        .map(|&(product_id, quantity)| PurchaseLine {
                            product_id,
                            quantity,
                        })
                        .collect(),
                },
                &metadata(),
            )
            .await
            .unwrap();
        purchase_id
    }

    async fn purchase_does(&self, purchase_id: PurchaseId, command: PurchaseCommand) {
        self.events
            .execute::<Purchase>(&purchase_id.to_string(), command, &metadata())
            .await
            .unwrap();
    }

    /// The purchase's events as the relay publishes them, in their order.
    async fn log_of(&self, purchase_id: PurchaseId) -> Vec<LogEvent> {
        let rows: Vec<StoredEventRow> = sqlx::query_as(&format!(
            "SELECT {STORED_EVENT_COLUMNS} FROM events
              WHERE aggregate_type = 'purchase' AND aggregate_id = $1 ORDER BY sequence"
        ))
        .bind(purchase_id.to_string())
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter().map(log_event).collect()
    }

    /// Runs the worker's step on `event`, which must be done with it.
    async fn handle(&self, event: &LogEvent) {
        match self.worker.handle(event.clone()).await {
            Outcome::Done => {}
            Outcome::Retry(error) => panic!("{}: retry: {error:#}", event.event_type),
            Outcome::GiveUp(error) => panic!("{}: give up: {error:#}", event.event_type),
        }
    }

    /// The Message-ID (in angle brackets) the worker derives from `event`.
    fn message_id_of(&self, event: &LogEvent, purpose: &str) -> String {
        let event_uuid = orders_workers::work_metadata::event_uuid(&event.event_id());
        format!(
            "<{}>",
            orders_workers::message_id(event_uuid, purpose, &self.mail_domain)
        )
    }

    /// (purpose, message id) of every delivery recorded for the purchase's events.
    async fn deliveries_of(&self, purchase_id: PurchaseId) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT purpose, message_id FROM email_deliveries
              WHERE event_id LIKE 'purchase/' || $1 || '/%' ORDER BY sent_at, purpose",
        )
        .bind(purchase_id.to_string())
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

/// A stored event as the relay turns it into a log message.
fn log_event(row: StoredEventRow) -> LogEvent {
    let metadata = match row.metadata {
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => (key, text),
                other => (key, other.to_string()),
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    LogEvent {
        aggregate_type: row.aggregate_type,
        aggregate_id: row.aggregate_id,
        sequence: row.sequence,
        event_type: row.event_type,
        event_version: row.event_version,
        tx_id: row.tx_id.parse().unwrap(),
        global_position: row.global_position,
        recorded_at: row.recorded_at,
        payload: row.payload.into_bytes().into(),
        metadata,
    }
}

#[tokio::test]
async fn a_purchase_mails_its_buyer_once_per_event_from_confirmation_to_delivery() {
    let shop = Shop::open().await;
    let (buyer, address) = shop.buyer(true).await;
    let kettle = shop.product("KET-1", "Чайник Philips HD9350", "1500").await;
    let toaster = shop.product("TOA-9", "Toaster", "899.50").await;
    let purchase_id = shop.place(buyer, &[(kettle, 2), (toaster, 1)]).await;
    shop.purchase_does(
        purchase_id,
        PurchaseCommand::Confirm {
            unit_prices: vec![uah("1500"), uah("899.50")],
        },
    )
    .await;
    shop.purchase_does(purchase_id, PurchaseCommand::Ship).await;
    shop.purchase_does(purchase_id, PurchaseCommand::Deliver)
        .await;
    let log = shop.log_of(purchase_id).await;
    let types: Vec<&str> = log.iter().map(|event| event.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "PurchasePlaced",
            "PurchaseConfirmed",
            "PurchaseShipped",
            "PurchaseDelivered"
        ]
    );
    let page = format!("{PUBLIC_URL}app/purchases/{purchase_id}");

    // The placement says nothing yet: the saga has not decided.
    shop.handle(&log[0]).await;
    assert!(mails_to(&address).is_empty(), "no mail on placement");

    shop.handle(&log[1]).await;
    let mails = mails_to(&address);
    assert_eq!(mails.len(), 1, "one mail for the confirmation");
    let confirmation = &mails[0];
    assert_eq!(
        confirmation.header("Message-ID"),
        Some(shop.message_id_of(&log[1], "purchase-confirmed"))
    );
    assert_eq!(
        confirmation.header("Subject").as_deref(),
        Some("Your Orders purchase is confirmed: 3 899.50 UAH")
    );
    assert!(confirmation
        .text
        .contains("- Чайник Philips HD9350 (SKU KET-1): 2 x 1 500.00 UAH = 3 000.00 UAH\n"));
    assert!(confirmation
        .text
        .contains("- Toaster (SKU TOA-9): 1 x 899.50 UAH = 899.50 UAH\n"));
    assert!(confirmation.text.contains("Total: 3 899.50 UAH"));
    assert!(confirmation.text.contains(&page));
    assert!(confirmation
        .html
        .contains("<td>Чайник Philips HD9350</td><td>KET-1</td>"));
    assert!(confirmation.html.contains("<strong>3 899.50 UAH</strong>"));
    assert!(confirmation.html.contains(&format!("href=\"{page}\"")));

    shop.handle(&log[2]).await;
    shop.handle(&log[3]).await;
    let mails = mails_to(&address);
    assert_eq!(
        mails.len(),
        3,
        "one more mail for each of shipped and delivered"
    );
    for (event, purpose, subject) in [
        (
            &log[2],
            "purchase-shipped",
            "Your Orders purchase has shipped",
        ),
        (
            &log[3],
            "purchase-delivered",
            "Your Orders purchase was delivered",
        ),
    ] {
        let message_id = shop.message_id_of(event, purpose);
        let mail = mails
            .iter()
            .find(|mail| mail.header("Message-ID").as_ref() == Some(&message_id))
            .unwrap_or_else(|| panic!("no mail with the Message-ID of {}", event.event_type));
        assert_eq!(mail.header("Subject").as_deref(), Some(subject));
        assert!(mail.text.contains(&page), "{}", mail.text);
    }

    // Every event delivered again (a redelivery after a lost ack): nothing new.
    for event in &log {
        shop.handle(event).await;
    }
    assert_eq!(mails_to(&address).len(), 3, "a redelivery sends nothing");
    let recorded = shop.deliveries_of(purchase_id).await;
    let expected = [
        (&log[1], "purchase-confirmed"),
        (&log[2], "purchase-shipped"),
        (&log[3], "purchase-delivered"),
    ]
    .map(|(event, purpose)| {
        let id = shop.message_id_of(event, purpose);
        (purpose.to_owned(), id.trim_matches(['<', '>']).to_owned())
    });
    assert_eq!(recorded, expected, "one delivery record per mail");
}

#[tokio::test]
async fn a_rejected_purchase_mails_the_reason_and_names_the_product() {
    let shop = Shop::open().await;
    let (buyer, address) = shop.buyer(true).await;
    let kettle = shop.product("KET-1", "Kettle", "1500").await;
    let purchase_id = shop.place(buyer, &[(kettle, 30)]).await;
    shop.purchase_does(
        purchase_id,
        PurchaseCommand::Reject {
            reason: RejectionReason::OutOfStock {
                product_id: kettle,
                requested: 30,
                available: 10,
            },
        },
    )
    .await;
    let log = shop.log_of(purchase_id).await;
    assert_eq!(log[1].event_type, "PurchaseRejected");

    for event in &log {
        shop.handle(event).await;
    }

    let mails = mails_to(&address);
    assert_eq!(mails.len(), 1, "one mail, for the rejection");
    let rejection = &mails[0];
    assert_eq!(
        rejection.header("Message-ID"),
        Some(shop.message_id_of(&log[1], "purchase-rejected"))
    );
    assert_eq!(
        rejection.header("Subject").as_deref(),
        Some("Your Orders purchase could not be completed")
    );
    for part in [&rejection.text, &rejection.html] {
        assert!(
            part.contains("Reason: not enough stock: 30 requested, 10 available"),
            "{part}"
        );
        assert!(part.contains("Product: Kettle (SKU KET-1)"), "{part}");
    }
    assert!(rejection
        .text
        .contains(&format!("{PUBLIC_URL}app/purchases/{purchase_id}")));
}

#[tokio::test]
async fn a_cancelled_purchase_mails_the_buyer_even_with_price_alerts_off() {
    let shop = Shop::open().await;
    let (buyer, address) = shop.buyer(true).await;
    // Price alerts off: purchase mails are about the user's own purchase, not alerts.
    shop.user_does(
        buyer,
        UserCommand::ChangeNotificationPreferences {
            price_alerts: false,
        },
    )
    .await;
    let kettle = shop.product("KET-1", "Kettle", "1500").await;
    let purchase_id = shop.place(buyer, &[(kettle, 1)]).await;
    shop.purchase_does(
        purchase_id,
        PurchaseCommand::Cancel {
            by: Canceller::Buyer,
        },
    )
    .await;
    let log = shop.log_of(purchase_id).await;
    assert_eq!(log[1].event_type, "PurchaseCancelled");

    for event in &log {
        shop.handle(event).await;
    }

    let mails = mails_to(&address);
    assert_eq!(mails.len(), 1, "one mail, for the cancellation");
    assert_eq!(
        mails[0].header("Message-ID"),
        Some(shop.message_id_of(&log[1], "purchase-cancelled"))
    );
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("Your Orders purchase was cancelled")
    );
    assert!(mails[0].text.contains("cancelled, as you asked"));
}

#[tokio::test]
async fn an_unverified_buyer_gets_no_purchase_mail() {
    let shop = Shop::open().await;
    let (buyer, address) = shop.buyer(false).await;
    let kettle = shop.product("KET-1", "Kettle", "1500").await;
    let purchase_id = shop.place(buyer, &[(kettle, 1)]).await;
    shop.purchase_does(
        purchase_id,
        PurchaseCommand::Confirm {
            unit_prices: vec![uah("1500")],
        },
    )
    .await;
    shop.purchase_does(purchase_id, PurchaseCommand::Ship).await;

    for event in shop.log_of(purchase_id).await {
        shop.handle(&event).await;
    }

    assert!(
        mails_to(&address).is_empty(),
        "no mail to an unverified address"
    );
    assert!(shop.deliveries_of(purchase_id).await.is_empty());

    // Verified since: the next event's mail goes out (the earlier ones stay unsent).
    shop.user_does(buyer, UserCommand::VerifyEmail).await;
    shop.purchase_does(purchase_id, PurchaseCommand::Deliver)
        .await;
    let log = shop.log_of(purchase_id).await;
    shop.handle(&log[3]).await;
    let mails = mails_to(&address);
    assert_eq!(mails.len(), 1);
    assert_eq!(
        mails[0].header("Subject").as_deref(),
        Some("Your Orders purchase was delivered")
    );
}

// ---------------------------------------------------------------------------------
// Reading the Maildir: enough of a mail client for these mails (ASCII subjects; a
// multipart/alternative body whose parts are 7bit, quoted-printable or base64). The
// full decoding, encoded-word subjects included, is tested in `tests/mail.rs`.

/// A stored mail: its unfolded top-level headers, and its text and HTML parts.
struct DeliveredMail {
    headers: Vec<(String, String)>,
    text: String,
    html: String,
}

impl DeliveredMail {
    fn header(&self, name: &str) -> Option<String> {
        find_header(&self.headers, name)
    }
}

/// Every mail in the catcher's `new/` addressed to `recipient`. aiosmtpd writes a
/// mail before it answers `250`, so a mail the worker sent is there when it is done.
fn mails_to(recipient: &str) -> Vec<DeliveredMail> {
    let new_mails = PathBuf::from(env("ORDERS_TEST_MAILDIR")).join("new");
    let entries = std::fs::read_dir(&new_mails)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", new_mails.display()));
    entries
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
        .map(|stored| parse_mail(&stored))
        .filter(|mail| mail.header("To").as_deref() == Some(recipient))
        .collect()
}

fn parse_mail(stored: &str) -> DeliveredMail {
    let (headers, body) = split_headers_and_body(stored);
    let content_type = find_header(&headers, "Content-Type").unwrap_or_default();
    let boundary = content_type
        .split_once("boundary=")
        .map(|(_, rest)| rest.trim_matches('"').to_owned())
        .unwrap_or_default();
    let delimiter = format!("--{boundary}");
    let mut text = String::new();
    let mut html = String::new();
    for part in body.split(delimiter.as_str()).skip(1) {
        let (part_headers, encoded) = split_headers_and_body(part.trim_start_matches('\n'));
        let kind = find_header(&part_headers, "Content-Type").unwrap_or_default();
        let decoded = match find_header(&part_headers, "Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "base64" => decode_base64(&encoded),
            "quoted-printable" => decode_quoted_printable(&encoded),
            _ => encoded.into_bytes(),
        };
        let decoded = String::from_utf8(decoded).expect("a UTF-8 part");
        if kind.starts_with("text/plain") {
            text = decoded;
        } else if kind.starts_with("text/html") {
            html = decoded;
        }
    }
    DeliveredMail {
        headers,
        text,
        html,
    }
}

/// Splits at the first empty line; continuation lines are joined to their header.
fn split_headers_and_body(stored: &str) -> (Vec<(String, String)>, String) {
    let stored = stored.replace("\r\n", "\n");
    let (header_block, body) = stored.split_once("\n\n").unwrap_or((&stored, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in header_block.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push_str(line);
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body.to_owned())
}

fn find_header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.clone())
}

fn decode_base64(encoded: &str) -> Vec<u8> {
    let sextet = |symbol: u8| -> u32 {
        match symbol {
            b'A'..=b'Z' => u32::from(symbol - b'A'),
            b'a'..=b'z' => u32::from(symbol - b'a') + 26,
            b'0'..=b'9' => u32::from(symbol - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {:?}", other as char),
        }
    };
    let symbols: Vec<u8> = encoded
        .bytes()
        .filter(|symbol| !symbol.is_ascii_whitespace() && *symbol != b'=')
        .collect();
    let mut decoded = Vec::with_capacity(symbols.len() * 3 / 4);
    for chunk in symbols.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0_u32, |bits, (index, symbol)| {
                bits | sextet(*symbol) << (18 - 6 * index)
            });
        decoded.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    decoded
}

/// `=XX` is a byte, `=` at a line end a soft line break (RFC 2045 6.7).
fn decode_quoted_printable(encoded: &str) -> Vec<u8> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'=' if bytes.get(index + 1) == Some(&b'\n') => index += 2,
            b'=' => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap();
                decoded.push(u8::from_str_radix(hex, 16).expect("=XX"));
                index += 3;
            }
            other => {
                decoded.push(other);
                index += 1;
            }
        }
    }
    decoded
}
