//! What each mail says: pure functions from the facts of an event to an
//! [`OutgoingMail`] with a subject, a plain-text and an HTML body.
//!
//! Product titles come from scraped shop pages and are treated as hostile: control
//! characters and bidirectional overrides are dropped (they could break a header or
//! disguise text), and every string that lands in HTML is escaped, links included.
//! Only `http`/`https` URLs ever become an `href`, so a `javascript:` URL cannot.

use chrono::{DateTime, Utc};
use orders_domain::email::EmailAddress;
use orders_domain::money::Money;
use url::Url;

/// How much of a product title the subject repeats: mail clients show about this
/// much of a subject line, and the price that follows the title must stay visible.
pub const MAX_SUBJECT_TITLE_CHARS: usize = 60;

/// How much of a product title the body repeats: shop titles are sometimes whole
/// paragraphs of keywords, and a scraped page must not be able to fill the mail.
pub(super) const MAX_BODY_TITLE_CHARS: usize = 300;

/// Why a mail is sent. One event may cause several mails; the purpose keeps their
/// Message-IDs apart (it is the `purpose` argument of [`crate::message_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailPurpose {
    /// The link that proves the user owns the address they registered with.
    VerifyEmail,
    /// The link that lets a user choose a new password.
    PasswordReset,
    /// A tracked product reached its target price.
    PriceAlert,
    /// A purchase was confirmed: its lines at their reserved prices, and the total.
    PurchaseConfirmed,
    /// A purchase was rejected, with the reason.
    PurchaseRejected,
    /// A purchase left the warehouse.
    PurchaseShipped,
    /// A purchase reached the buyer.
    PurchaseDelivered,
    /// A purchase was cancelled, by the buyer or an administrator.
    PurchaseCancelled,
}

impl MailPurpose {
    /// The stable name used in Message-IDs and logs, e.g. `"price-alert"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MailPurpose::VerifyEmail => "verify-email",
            MailPurpose::PasswordReset => "password-reset",
            MailPurpose::PriceAlert => "price-alert",
            MailPurpose::PurchaseConfirmed => "purchase-confirmed",
            MailPurpose::PurchaseRejected => "purchase-rejected",
            MailPurpose::PurchaseShipped => "purchase-shipped",
            MailPurpose::PurchaseDelivered => "purchase-delivered",
            MailPurpose::PurchaseCancelled => "purchase-cancelled",
        }
    }
}

/// A mail ready to be sent by [`super::Mailer::send`].
///
/// The constructors build the subject and bodies; the fields are public so the
/// e-mail worker can log them and tests can inspect them. The mailer still strips
/// line breaks from the subject and checks the Message-ID, so a hand-built value
/// cannot inject headers either.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    /// `left@right`, *without* the angle brackets (as [`crate::message_id`] returns
    /// it); the mailer adds them. The same event must always give the same id.
    pub message_id: String,
    pub to: EmailAddress,
    /// One line: no CR, LF or other control characters.
    pub subject: String,
    pub text_body: String,
    pub html_body: String,
    pub purpose: MailPurpose,
    /// Sent as the `List-Unsubscribe` header (RFC 2369) so mail clients can offer
    /// their own unsubscribe button; only mails a user can opt out of have one.
    pub list_unsubscribe: Option<Url>,
}

/// The facts of a price alert, from the order and the observation that reached
/// its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceAlertContent {
    /// The title the scraper found, if any; the mail falls back to the URL's host.
    pub product_title: Option<String>,
    pub product_url: Url,
    /// The last known price before this one, when there was one.
    pub old_price: Option<Money>,
    pub new_price: Money,
    pub target_price: Money,
    /// The full `{public_url}/unsubscribe?token=…` link.
    pub unsubscribe_link: Url,
}

impl OutgoingMail {
    /// The mail that asks a new user to confirm their address: the caller passes the
    /// full `{public_url}/auth/verify?token=…` link and when its token expires.
    pub fn verification(
        message_id: String,
        to: EmailAddress,
        verification_link: &Url,
        link_expires_at: DateTime<Utc>,
    ) -> OutgoingMail {
        let subject = "Confirm your e-mail address for Orders".to_owned();
        let expiry = format_expiry(link_expires_at);
        let text_body = format!(
            "Hello,\n\
             \n\
             please confirm that {address} is your e-mail address by opening this link:\n\
             \n\
             {link}\n\
             \n\
             The link is valid until {expiry}. If it has expired, log in to Orders and \
             ask for a new one.\n\
             \n\
             If you did not create an Orders account, you can ignore this mail.\n",
            address = to.as_str(),
            link = verification_link,
        );
        let html_content = format!(
            "<p>Hello,</p>\n\
             <p>please confirm that <strong>{address}</strong> is your e-mail address:</p>\n\
             <p>{button}</p>\n\
             <p>The link is valid until {expiry}. If it has expired, log in to Orders and \
             ask for a new one.</p>\n\
             <p style=\"color:#555\">If you did not create an Orders account, you can \
             ignore this mail.</p>\n",
            address = escape_html(to.as_str()),
            button = html_link(verification_link, "Confirm my e-mail address"),
            expiry = escape_html(&expiry),
        );
        OutgoingMail {
            message_id,
            to,
            html_body: html_document(&subject, &html_content),
            subject,
            text_body,
            purpose: MailPurpose::VerifyEmail,
            list_unsubscribe: None,
        }
    }

    /// The mail with the link that lets a user choose a new password; the caller
    /// passes the full link and when its token expires.
    pub fn password_reset(
        message_id: String,
        to: EmailAddress,
        reset_link: &Url,
        link_expires_at: DateTime<Utc>,
    ) -> OutgoingMail {
        let subject = "Reset your Orders password".to_owned();
        let expiry = format_expiry(link_expires_at);
        let text_body = format!(
            "Hello,\n\
             \n\
             someone, hopefully you, asked to reset the password of the Orders account \
             {address}. To choose a new password, open this link:\n\
             \n\
             {link}\n\
             \n\
             The link is valid until {expiry}.\n\
             \n\
             If you did not ask for this, ignore this mail: your password stays as it is.\n",
            address = to.as_str(),
            link = reset_link,
        );
        let html_content = format!(
            "<p>Hello,</p>\n\
             <p>someone, hopefully you, asked to reset the password of the Orders account \
             <strong>{address}</strong>.</p>\n\
             <p>{button}</p>\n\
             <p>The link is valid until {expiry}.</p>\n\
             <p style=\"color:#555\">If you did not ask for this, ignore this mail: your \
             password stays as it is.</p>\n",
            address = escape_html(to.as_str()),
            button = html_link(reset_link, "Choose a new password"),
            expiry = escape_html(&expiry),
        );
        OutgoingMail {
            message_id,
            to,
            html_body: html_document(&subject, &html_content),
            subject,
            text_body,
            purpose: MailPurpose::PasswordReset,
            list_unsubscribe: None,
        }
    }

    /// The mail that tells a user a tracked product reached their target price.
    pub fn price_alert(
        message_id: String,
        to: EmailAddress,
        alert: &PriceAlertContent,
    ) -> OutgoingMail {
        let body_title = product_display_title(alert, MAX_BODY_TITLE_CHARS);
        let subject_title = product_display_title(alert, MAX_SUBJECT_TITLE_CHARS);
        let new_price = format_money(&alert.new_price);
        let target_price = format_money(&alert.target_price);
        let old_price = alert.old_price.as_ref().map(format_money);
        let subject = format!("Price alert: {subject_title} is now {new_price}");

        let mut text_body = format!(
            "Good news: {body_title} now costs {new_price}, which reaches your target.\n\
             \n\
             Now:          {new_price}\n"
        );
        if let Some(old_price) = &old_price {
            text_body.push_str(&format!("Before:       {old_price}\n"));
        }
        text_body.push_str(&format!(
            "Your target:  {target_price}\n\
             \n\
             See the product: {product_url}\n\
             \n\
             --\n\
             You get this mail because you track this product on Orders.\n\
             Unsubscribe from price alerts: {unsubscribe_link}\n",
            product_url = alert.product_url,
            unsubscribe_link = alert.unsubscribe_link,
        ));

        let price_row = |label: &str, price: &str, emphasised: bool| {
            let price = escape_html(price);
            let price = if emphasised {
                format!("<strong>{price}</strong>")
            } else {
                price
            };
            format!(
                "<tr><td style=\"padding-right:1em\">{label}</td>\
                 <td style=\"white-space:nowrap\">{price}</td></tr>\n"
            )
        };
        let mut price_table = String::from("<table role=\"presentation\">\n");
        price_table.push_str(&price_row("Now", &new_price, true));
        if let Some(old_price) = &old_price {
            price_table.push_str(&price_row("Before", old_price, false));
        }
        price_table.push_str(&price_row("Your target", &target_price, false));
        price_table.push_str("</table>\n");
        let html_content = format!(
            "<p>Good news: {linked_title} now costs <strong style=\"white-space:nowrap\">\
             {new_price}</strong>, which reaches your target.</p>\n\
             {price_table}\
             <p>{product_button}</p>\n\
             <hr>\n\
             <p style=\"font-size:smaller;color:#555\">You get this mail because you track \
             this product on Orders. {unsubscribe}</p>\n",
            linked_title = html_link(&alert.product_url, &body_title),
            new_price = escape_html(&new_price),
            product_button = html_link(&alert.product_url, "See the product"),
            unsubscribe = html_link(&alert.unsubscribe_link, "Unsubscribe from price alerts"),
        );
        OutgoingMail {
            message_id,
            to,
            html_body: html_document(&subject, &html_content),
            subject,
            text_body,
            purpose: MailPurpose::PriceAlert,
            list_unsubscribe: Some(alert.unsubscribe_link.clone()),
        }
    }
}

/// An amount as people read it: digits grouped by thousands with a space, the
/// currency's decimal places, then the ISO code — `3 199.00 UAH`, `12 000 JPY`.
///
/// Plain ASCII on purpose: a subject with only ASCII stays readable in raw headers
/// and logs; the HTML body keeps the amount on one line with `white-space:nowrap`.
pub fn format_money(money: &Money) -> String {
    money.readable()
}

/// The product's name as the mail shows it: the scraped title cleaned up and cut to
/// `max_chars`, or the shop's host name when there is no usable title.
fn product_display_title(alert: &PriceAlertContent, max_chars: usize) -> String {
    let cleaned_title = alert
        .product_title
        .as_deref()
        .map(|title| clean_display_text(title, max_chars))
        .unwrap_or_default();
    if !cleaned_title.is_empty() {
        return cleaned_title;
    }
    let fallback = alert
        .product_url
        .host_str()
        .map(str::to_owned)
        .unwrap_or_else(|| alert.product_url.to_string());
    clean_display_text(&fallback, max_chars)
}

/// Makes untrusted text safe to show on one line: control characters (CR and LF
/// among them, so it can go into a header) and bidirectional-override characters
/// (which can make text read backwards) become spaces, runs of whitespace collapse,
/// and text longer than `max_chars` is cut with an ellipsis.
pub(super) fn clean_display_text(untrusted: &str, max_chars: usize) -> String {
    let is_bidirectional_control =
        |character: char| matches!(character, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    let mut cleaned = String::with_capacity(untrusted.len());
    let mut pending_space = false;
    for character in untrusted.chars() {
        if character.is_control()
            || character.is_whitespace()
            || is_bidirectional_control(character)
        {
            pending_space = !cleaned.is_empty();
            continue;
        }
        if pending_space {
            cleaned.push(' ');
            pending_space = false;
        }
        cleaned.push(character);
    }
    if cleaned.chars().count() <= max_chars {
        return cleaned;
    }
    // Keep room for the ellipsis, and do not end on a dangling space.
    let kept: String = cleaned.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{}…", kept.trim_end())
}

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn escape_html(untrusted: &str) -> String {
    let mut escaped = String::with_capacity(untrusted.len());
    for character in untrusted.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// A link with escaped text; a URL that is not `http(s)` is shown as text only, so
/// no `javascript:` or `data:` URL ever becomes clickable.
pub(super) fn html_link(url: &Url, text: &str) -> String {
    let text = escape_html(text);
    if matches!(url.scheme(), "http" | "https") {
        format!("<a href=\"{}\">{text}</a>", escape_html(url.as_str()))
    } else {
        text
    }
}

/// When a link stops working, in the one time zone every reader can convert from.
fn format_expiry(expires_at: DateTime<Utc>) -> String {
    expires_at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Wraps body content into a small standalone HTML document.
pub(super) fn html_document(subject: &str, content: &str) -> String {
    format!(
        "<!DOCTYPE html>\n\
         <html lang=\"en\">\n\
         <head>\n\
         <meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n\
         </head>\n\
         <body style=\"font-family:sans-serif;line-height:1.5;color:#1a1a1a\">\n\
         {content}\
         </body>\n\
         </html>\n",
        title = escape_html(subject),
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use orders_domain::money::Currency;

    use super::*;

    fn money(amount: &str, code: &str) -> Money {
        Money::parse(amount, Currency::from_code(code).unwrap()).unwrap()
    }

    fn recipient() -> EmailAddress {
        EmailAddress::parse("ann@example.com").unwrap()
    }

    fn alert_with_title(title: Option<&str>) -> PriceAlertContent {
        PriceAlertContent {
            product_title: title.map(str::to_owned),
            product_url: Url::parse("https://shop.example.ua/p/123?ref=a&b=c").unwrap(),
            old_price: Some(money("3499", "UAH")),
            new_price: money("3199", "UAH"),
            target_price: money("3200", "UAH"),
            unsubscribe_link: Url::parse("https://orders.example/unsubscribe?token=abc.def")
                .unwrap(),
        }
    }

    #[test]
    fn amounts_are_grouped_by_thousands_with_the_currency_code() {
        assert_eq!(format_money(&money("3199", "UAH")), "3 199.00 UAH");
        assert_eq!(format_money(&money("0.5", "USD")), "0.50 USD");
        assert_eq!(format_money(&money("999", "EUR")), "999.00 EUR");
        assert_eq!(format_money(&money("1000", "EUR")), "1 000.00 EUR");
        assert_eq!(format_money(&money("12000", "JPY")), "12 000 JPY");
        assert_eq!(
            format_money(&money("1234567.891", "KWD")),
            "1 234 567.891 KWD"
        );
    }

    #[test]
    fn the_price_alert_names_the_product_and_every_price() {
        let mail = OutgoingMail::price_alert(
            "id@orders.example".to_owned(),
            recipient(),
            &alert_with_title(Some("Навушники Sony WH-1000XM5")),
        );
        assert_eq!(
            mail.subject,
            "Price alert: Навушники Sony WH-1000XM5 is now 3 199.00 UAH"
        );
        assert_eq!(mail.purpose, MailPurpose::PriceAlert);
        for body in [&mail.text_body, &mail.html_body] {
            assert!(body.contains("Навушники Sony WH-1000XM5"), "{body}");
            assert!(body.contains("3 199.00 UAH"), "{body}");
            assert!(body.contains("3 499.00 UAH"), "{body}");
            assert!(body.contains("3 200.00 UAH"), "{body}");
        }
        assert!(mail
            .text_body
            .contains("https://shop.example.ua/p/123?ref=a&b=c"));
        assert!(mail
            .text_body
            .contains("https://orders.example/unsubscribe?token=abc.def"));
        // In HTML the `&` of the query string is escaped inside the attribute.
        assert!(mail
            .html_body
            .contains("href=\"https://shop.example.ua/p/123?ref=a&amp;b=c\""));
        assert!(mail
            .html_body
            .contains("href=\"https://orders.example/unsubscribe?token=abc.def\""));
        assert_eq!(
            mail.list_unsubscribe.as_ref().map(Url::as_str),
            Some("https://orders.example/unsubscribe?token=abc.def")
        );
    }

    #[test]
    fn a_price_alert_without_an_old_price_leaves_the_line_out() {
        let mut alert = alert_with_title(Some("Kettle"));
        alert.old_price = None;
        let mail = OutgoingMail::price_alert("id@x.example".to_owned(), recipient(), &alert);
        assert!(!mail.text_body.contains("Before"));
        assert!(!mail.html_body.contains("Before"));
    }

    #[test]
    fn a_hostile_title_is_escaped_in_html_and_kept_out_of_headers() {
        let mail = OutgoingMail::price_alert(
            "id@orders.example".to_owned(),
            recipient(),
            &alert_with_title(Some(
                "<script>alert(1)</script>\r\nBcc: victim@example.com \"quoted\" & 'single'",
            )),
        );
        assert!(!mail.html_body.contains("<script>"));
        assert!(mail
            .html_body
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(mail
            .html_body
            .contains("&quot;quoted&quot; &amp; &#39;single&#39;"));
        assert!(!mail.subject.contains(['\r', '\n']));
        assert!(!mail.text_body.contains("\r\nBcc"));
    }

    #[test]
    fn bidirectional_overrides_and_control_characters_are_dropped() {
        assert_eq!(
            clean_display_text("a\u{202E}b\u{0007}c\t\td\u{2066}", 100),
            "a b c d"
        );
        assert_eq!(clean_display_text("  \r\n  ", 100), "");
    }

    #[test]
    fn a_long_title_is_cut_in_the_subject_but_the_price_stays_visible() {
        let long_title = "Ультра ".repeat(40);
        let mail = OutgoingMail::price_alert(
            "id@orders.example".to_owned(),
            recipient(),
            &alert_with_title(Some(&long_title)),
        );
        let title_in_subject = mail
            .subject
            .strip_prefix("Price alert: ")
            .and_then(|rest| rest.strip_suffix(" is now 3 199.00 UAH"))
            .unwrap();
        assert!(title_in_subject.ends_with('…'));
        assert_eq!(title_in_subject.chars().count(), MAX_SUBJECT_TITLE_CHARS);
        assert!(mail.text_body.contains(long_title.trim_end()));
    }

    #[test]
    fn without_a_title_the_shop_host_names_the_product() {
        for missing_title in [None, Some(""), Some(" \n ")] {
            let mail = OutgoingMail::price_alert(
                "id@orders.example".to_owned(),
                recipient(),
                &alert_with_title(missing_title),
            );
            assert_eq!(
                mail.subject,
                "Price alert: shop.example.ua is now 3 199.00 UAH"
            );
        }
    }

    #[test]
    fn a_non_web_url_never_becomes_a_link() {
        let mut alert = alert_with_title(Some("Kettle"));
        alert.product_url = Url::parse("javascript:alert(1)").unwrap();
        let mail = OutgoingMail::price_alert("id@x.example".to_owned(), recipient(), &alert);
        assert!(!mail.html_body.contains("href=\"javascript"));
    }

    #[test]
    fn the_verification_mail_carries_the_link_and_its_expiry() {
        let link = Url::parse("https://orders.example/auth/verify?token=t0k.en").unwrap();
        let expires_at = Utc.with_ymd_and_hms(2030, 1, 2, 13, 45, 0).unwrap();
        let mail = OutgoingMail::verification(
            "v@orders.example".to_owned(),
            recipient(),
            &link,
            expires_at,
        );
        assert_eq!(mail.purpose, MailPurpose::VerifyEmail);
        assert_eq!(mail.message_id, "v@orders.example");
        assert!(mail.list_unsubscribe.is_none());
        for body in [&mail.text_body, &mail.html_body] {
            assert!(body.contains("2030-01-02 13:45 UTC"), "{body}");
            assert!(body.contains("ann@example.com"), "{body}");
        }
        assert!(mail.text_body.contains(link.as_str()));
        assert!(mail.html_body.contains(&format!("href=\"{link}\"")));
    }

    #[test]
    fn the_password_reset_mail_carries_the_link_and_its_expiry() {
        let link = Url::parse("https://orders.example/reset?token=r&x=1").unwrap();
        let expires_at = Utc.with_ymd_and_hms(2030, 1, 2, 13, 45, 0).unwrap();
        let mail = OutgoingMail::password_reset(
            "r@orders.example".to_owned(),
            recipient(),
            &link,
            expires_at,
        );
        assert_eq!(mail.purpose, MailPurpose::PasswordReset);
        assert!(mail
            .text_body
            .contains("https://orders.example/reset?token=r&x=1"));
        assert!(mail
            .html_body
            .contains("href=\"https://orders.example/reset?token=r&amp;x=1\""));
        assert!(mail.html_body.contains("2030-01-02 13:45 UTC"));
    }

    #[test]
    fn purposes_have_stable_names() {
        assert_eq!(MailPurpose::VerifyEmail.as_str(), "verify-email");
        assert_eq!(MailPurpose::PasswordReset.as_str(), "password-reset");
        assert_eq!(MailPurpose::PriceAlert.as_str(), "price-alert");
        assert_eq!(
            MailPurpose::PurchaseConfirmed.as_str(),
            "purchase-confirmed"
        );
        assert_eq!(MailPurpose::PurchaseRejected.as_str(), "purchase-rejected");
        assert_eq!(MailPurpose::PurchaseShipped.as_str(), "purchase-shipped");
        assert_eq!(
            MailPurpose::PurchaseDelivered.as_str(),
            "purchase-delivered"
        );
        assert_eq!(
            MailPurpose::PurchaseCancelled.as_str(),
            "purchase-cancelled"
        );
    }
}
