//! The e-mail worker: the verification mail when a user registers or asks for
//! another one, the password-reset mail, the price alert when an order reaches
//! its target (to verified addresses only, and only while the user's price alerts
//! are on), and a mail to the buyer for each thing that happens to a purchase after
//! its placement: confirmed, rejected, shipped, delivered, cancelled (to verified
//! addresses only; the price-alert preference does not stop them, they are about
//! the user's own purchase).
//!
//! Each mail's Message-ID is derived from the event that caused it, and a delivery
//! record keyed by the event id is written after the SMTP server accepted it: a
//! redelivered event finds the record and sends nothing. A crash between the
//! acceptance and the record sends the mail once more, with the same Message-ID
//! (SMTP has no idempotent send; guarantee 4).

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use orders_application::signed_tokens::{SignedTokens, TokenPurpose, PASSWORD_RESET_LINK_LIFETIME};
use orders_domain::email::EmailAddress;
use orders_domain::ids::{ProductId, UserId};
use orders_domain::order::{Order, OrderEvent};
use orders_domain::price_check::PriceCheck;
use orders_domain::purchase::{PricedLine, Purchase, PurchaseEvent, RejectionReason};
use orders_domain::user::{User, UserEvent};
use orders_nats::LogEvent;
use orders_store::event_store::EventStore;
use sqlx::PgPool;
use url::Url;

use crate::consumer::Outcome;
use crate::mail::{
    ConfirmedLine, MailPurpose, Mailer, OutgoingMail, PriceAlertContent, ProductLabel,
    PurchaseMailContent, PurchaseNews, SendError,
};
use crate::work_metadata::payload;

/// How long the link of a verification mail is valid (as the API's own links).
pub const VERIFICATION_LINK_LIFETIME: Duration = Duration::from_secs(48 * 3600);
/// How long the unsubscribe link of a price alert is valid.
pub const UNSUBSCRIBE_LINK_LIFETIME: Duration = Duration::from_secs(90 * 86_400);

pub struct EmailWorker {
    pool: PgPool,
    events: EventStore,
    mailer: Mailer,
    tokens: SignedTokens,
    /// `ORDERS_PUBLIC_URL`: the base of the links in mails.
    public_url: Url,
}

impl EmailWorker {
    pub fn new(
        pool: PgPool,
        events: EventStore,
        mailer: Mailer,
        tokens: SignedTokens,
        public_url: Url,
    ) -> Self {
        Self {
            pool,
            events,
            mailer,
            tokens,
            public_url,
        }
    }

    /// The step for one log message.
    pub async fn handle(&self, event: LogEvent) -> Outcome {
        match self.mail_for(&event).await {
            Ok(Some(mail)) => self.deliver(&event, mail).await,
            Ok(None) => Outcome::Done,
            Err(error) => Outcome::Retry(error),
        }
    }

    /// The mail an event causes, if any.
    async fn mail_for(&self, event: &LogEvent) -> anyhow::Result<Option<OutgoingMail>> {
        match (event.aggregate_type.as_str(), event.event_type.as_str()) {
            ("user", "UserRegistered") => {
                let UserEvent::UserRegistered { user_id, email } = payload(event)? else {
                    return Ok(None);
                };
                self.verification_mail(event, user_id, email).map(Some)
            }
            ("user", "VerificationMailRequested") => {
                let (user_id, user) = self.user_of(event).await?;
                let Some(email) = user.email().cloned() else {
                    return Ok(None);
                };
                // Verified meanwhile (by the first mail's link): nothing to confirm.
                if user.email_verified() || user.is_deactivated() {
                    tracing::info!(%user_id, "no verification mail: verified or deactivated since");
                    return Ok(None);
                }
                self.verification_mail(event, user_id, email).map(Some)
            }
            ("user", "PasswordResetRequested") => self.password_reset(event).await,
            ("order", "TargetReached") => self.price_alert(event).await,
            (
                "purchase",
                "PurchaseConfirmed" | "PurchaseRejected" | "PurchaseShipped" | "PurchaseDelivered"
                | "PurchaseCancelled",
            ) => self.purchase_mail(event).await,
            _ => Ok(None),
        }
    }

    /// The verification mail, its link valid for two days from the event.
    fn verification_mail(
        &self,
        event: &LogEvent,
        user_id: UserId,
        email: EmailAddress,
    ) -> anyhow::Result<OutgoingMail> {
        let expires_at = recorded_at(event)? + VERIFICATION_LINK_LIFETIME;
        let token = self.tokens.mint(
            TokenPurpose::VerifyEmail,
            user_id,
            &email.normalized(),
            expires_at,
        );
        let link = self.link("/auth/verify", &token)?;
        // Each event its own Message-ID: a resent mail is a new mail.
        let message_id = self.message_id(event, MailPurpose::VerifyEmail);
        Ok(OutgoingMail::verification(
            message_id, email, &link, expires_at,
        ))
    }

    /// The password-reset mail. Its token is made from the event alone (the user, the
    /// address, the credentials version the event names, an hour from the event), so
    /// a redelivery mints the same link; the API checks the version against the user
    /// when the link is used. No mail when it could not work anyway: the account was
    /// deactivated, the password changed since, or the link would already be expired
    /// (a mail held up that long by an outage).
    async fn password_reset(&self, event: &LogEvent) -> anyhow::Result<Option<OutgoingMail>> {
        let UserEvent::PasswordResetRequested {
            credentials_version,
        } = payload(event)?
        else {
            return Ok(None);
        };
        let (user_id, user) = self.user_of(event).await?;
        let Some(email) = user.email().cloned() else {
            return Ok(None);
        };
        let expires_at = recorded_at(event)? + PASSWORD_RESET_LINK_LIFETIME;
        if user.is_deactivated()
            || user.credentials_version() != credentials_version
            || expires_at <= Utc::now()
        {
            tracing::info!(%user_id, "no password-reset mail: its link could no longer work");
            return Ok(None);
        }
        let token = self.tokens.mint_password_reset(
            user_id,
            &email.normalized(),
            credentials_version,
            expires_at,
        );
        let link = self.link("/auth/password-reset/confirm", &token)?;
        let message_id = self.message_id(event, MailPurpose::PasswordReset);
        Ok(Some(OutgoingMail::password_reset(
            message_id, email, &link, expires_at,
        )))
    }

    /// The user a user event is about, as they are now.
    async fn user_of(&self, event: &LogEvent) -> anyhow::Result<(UserId, User)> {
        let user_id: UserId = event
            .aggregate_id
            .parse()
            .with_context(|| format!("user id {:?} is not a UUID", event.aggregate_id))?;
        let (user, _) = self
            .events
            .load::<User>(&event.aggregate_id)
            .await
            .context("loading the user")?;
        Ok((user_id, user))
    }

    async fn price_alert(&self, event: &LogEvent) -> anyhow::Result<Option<OutgoingMail>> {
        let OrderEvent::TargetReached {
            check_id,
            previous,
            price,
            target,
        } = payload(event)?
        else {
            return Ok(None);
        };
        let (order, _) = self
            .events
            .load::<Order>(&event.aggregate_id)
            .await
            .context("loading the order")?;
        let Some(owner) = order.owner() else {
            return Ok(None);
        };
        let (user, _) = self
            .events
            .load::<User>(&owner.to_string())
            .await
            .context("loading the order's owner")?;
        let Some(email) = user.email().cloned() else {
            return Ok(None);
        };
        if !user.email_verified() || !user.price_alerts_enabled() || user.is_deactivated() {
            tracing::info!(%owner, "no price alert: the address is not verified or alerts are off");
            return Ok(None);
        }
        let (product_title, product_url) = self.alerted_product(&order, check_id).await?;
        let unsubscribe_expires = recorded_at(event)? + UNSUBSCRIBE_LINK_LIFETIME;
        let unsubscribe = self.tokens.mint(
            TokenPurpose::Unsubscribe,
            owner,
            &email.normalized(),
            unsubscribe_expires,
        );
        let content = PriceAlertContent {
            product_title,
            product_url,
            old_price: previous,
            new_price: price,
            target_price: target,
            unsubscribe_link: self.link("/unsubscribe", &unsubscribe)?,
        };
        let message_id = self.message_id(event, MailPurpose::PriceAlert);
        Ok(Some(OutgoingMail::price_alert(message_id, email, &content)))
    }

    /// The buyer's mail about what happened to their purchase. The event says what
    /// happened (a confirmation's lines and total are the event's own); the purchase,
    /// loaded, says whose it is.
    async fn purchase_mail(&self, event: &LogEvent) -> anyhow::Result<Option<OutgoingMail>> {
        let happened: PurchaseEvent = payload(event)?;
        let (purchase, _) = self
            .events
            .load::<Purchase>(&event.aggregate_id)
            .await
            .context("loading the purchase")?;
        let (Some(purchase_id), Some(buyer)) = (purchase.id(), purchase.owner()) else {
            return Ok(None);
        };
        let (user, _) = self
            .events
            .load::<User>(&buyer.to_string())
            .await
            .context("loading the purchase's buyer")?;
        let Some(email) = user.email().cloned() else {
            return Ok(None);
        };
        if !user.email_verified() || user.is_deactivated() {
            tracing::info!(%buyer, %purchase_id, "no purchase mail: the address is not verified");
            return Ok(None);
        }
        let news = match happened {
            PurchaseEvent::PurchasePlaced { .. } => return Ok(None),
            PurchaseEvent::PurchaseConfirmed { lines, total } => PurchaseNews::Confirmed {
                lines: self.confirmed_lines(&lines).await?,
                total,
            },
            PurchaseEvent::PurchaseRejected { reason } => PurchaseNews::Rejected {
                product: match rejected_product(&reason) {
                    Some(product_id) => self.product_label(product_id).await?,
                    None => None,
                },
                reason,
            },
            PurchaseEvent::PurchaseShipped => PurchaseNews::Shipped,
            PurchaseEvent::PurchaseDelivered => PurchaseNews::Delivered,
            PurchaseEvent::PurchaseCancelled { by } => PurchaseNews::Cancelled { by },
        };
        let content = PurchaseMailContent {
            purchase_id,
            purchase_link: self.page(&format!("/app/purchases/{purchase_id}"))?,
            news,
        };
        let message_id = self.message_id(event, content.news.purpose());
        Ok(Some(OutgoingMail::purchase(message_id, email, &content)))
    }

    /// The confirmed lines with their products' names and SKUs (at most
    /// `purchase::MAX_LINES` products, loaded one after another).
    async fn confirmed_lines(&self, lines: &[PricedLine]) -> anyhow::Result<Vec<ConfirmedLine>> {
        let mut confirmed = Vec::with_capacity(lines.len());
        for line in lines {
            let product = self
                .product_label(line.product_id)
                .await?
                .unwrap_or_else(|| {
                    // Stock was reserved on it, so the catalog had it: never seen.
                    let product_id = line.product_id;
                    tracing::warn!(%product_id, "a confirmed line's product is not in the catalog");
                    ProductLabel {
                        name: format!("product {product_id}"),
                        sku: None,
                    }
                });
            confirmed.push(ConfirmedLine {
                product,
                quantity: line.quantity,
                unit_price: line.unit_price,
                line_total: line.line_total,
            });
        }
        Ok(confirmed)
    }

    /// The product's name and SKU, or `None` if the catalog has no such product.
    async fn product_label(&self, product_id: ProductId) -> anyhow::Result<Option<ProductLabel>> {
        let label = self
            .events
            .product_label(product_id)
            .await
            .with_context(|| format!("reading the name of product {product_id}"))?;
        Ok(label.map(|(sku, name)| ProductLabel {
            name,
            sku: Some(sku),
        }))
    }

    async fn deliver(&self, event: &LogEvent, mail: OutgoingMail) -> Outcome {
        let event_id = event.event_id();
        let purpose = mail.purpose.as_str();
        let sent_before: Result<Option<String>, sqlx::Error> = sqlx::query_scalar(
            "SELECT message_id FROM email_deliveries WHERE event_id = $1 AND purpose = $2",
        )
        .bind(&event_id)
        .bind(purpose)
        .fetch_optional(&self.pool)
        .await;
        match sent_before {
            Ok(Some(_)) => return Outcome::Done,
            Ok(None) => {}
            Err(error) => {
                return Outcome::Retry(
                    anyhow::Error::new(error).context("reading delivery records"),
                )
            }
        }
        match self.mailer.send(&mail).await {
            Ok(()) => {}
            Err(error @ SendError::Transient(_)) => {
                return Outcome::Retry(anyhow::Error::new(error).context("sending the mail"))
            }
            Err(error @ SendError::Permanent(_)) => {
                return Outcome::GiveUp(anyhow::Error::new(error).context("sending the mail"))
            }
        }
        tracing::info!(event_id, purpose, message_id = mail.message_id, "mail sent");
        let recorded = sqlx::query(
            "INSERT INTO email_deliveries (event_id, purpose, message_id, recipient)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&event_id)
        .bind(purpose)
        .bind(&mail.message_id)
        .bind(mail.to.as_str())
        .execute(&self.pool)
        .await;
        match recorded {
            Ok(_) => Outcome::Done,
            // Retrying sends the same mail (same Message-ID) again: the one duplicate
            // SMTP cannot rule out.
            Err(error) => {
                Outcome::Retry(anyhow::Error::new(error).context("recording the delivery"))
            }
        }
    }

    fn message_id(&self, event: &LogEvent, purpose: MailPurpose) -> String {
        let event_uuid = crate::work_metadata::event_uuid(&event.event_id());
        crate::message_id(
            event_uuid,
            purpose.as_str(),
            self.mailer.message_id_domain(),
        )
    }

    /// What a price alert names: a page's title (as the check read it) and
    /// address, or a catalog product's name and its page in the console.
    async fn alerted_product(
        &self,
        order: &Order,
        check_id: uuid::Uuid,
    ) -> anyhow::Result<(Option<String>, Url)> {
        if let Some(url) = order.url() {
            let (check, _) = self
                .events
                .load::<PriceCheck>(&check_id.to_string())
                .await
                .context("loading the check that reached the target")?;
            return Ok((check.title().map(str::to_owned), url.as_url().clone()));
        }
        let product_id = order
            .product_id()
            .context("an order follows a page or a catalog product")?;
        let title = self
            .product_label(product_id)
            .await?
            .map(|label| label.name)
            .filter(|name| !name.is_empty());
        Ok((title, self.page(&format!("/app/products/{product_id}"))?))
    }

    fn link(&self, path: &str, token: &str) -> anyhow::Result<Url> {
        let mut link = self.page(path)?;
        link.query_pairs_mut().append_pair("token", token);
        Ok(link)
    }

    /// The page at `path` under `ORDERS_PUBLIC_URL`.
    fn page(&self, path: &str) -> anyhow::Result<Url> {
        self.public_url
            .join(path)
            .with_context(|| format!("ORDERS_PUBLIC_URL cannot take the path {path}"))
    }
}

/// The product a rejection's reason is about, if it names one.
fn rejected_product(reason: &RejectionReason) -> Option<ProductId> {
    match reason {
        RejectionReason::OutOfStock { product_id, .. }
        | RejectionReason::UnknownProduct { product_id }
        | RejectionReason::RetiredProduct { product_id } => Some(*product_id),
        RejectionReason::CurrencyMismatch | RejectionReason::TimedOut => None,
    }
}

fn recorded_at(event: &LogEvent) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(&event.recorded_at)
        .with_context(|| format!("recorded_at {:?} is not RFC 3339", event.recorded_at))?
        .with_timezone(&Utc))
}
