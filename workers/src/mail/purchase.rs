//! What the mails about a purchase say: one mail per thing that happened to it
//! (confirmed with its lines and total, rejected with the reason, shipped,
//! delivered, cancelled), each linking to the purchase's page in the console.
//!
//! Pure, as the rest of `compose`: the e-mail worker gathers the facts (the
//! products' names and SKUs, the link) into a [`PurchaseMailContent`]. Product names
//! are typed by administrators, not scraped, but are still cleaned and escaped the
//! same way: a name is text from outside this mail.

use orders_domain::email::EmailAddress;
use orders_domain::ids::PurchaseId;
use orders_domain::money::Money;
use orders_domain::purchase::{Canceller, RejectionReason};
use url::Url;

use super::compose::{
    clean_display_text, escape_html, html_document, html_link, MailPurpose, OutgoingMail,
    MAX_BODY_TITLE_CHARS,
};

/// A product as a purchase mail names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductLabel {
    pub name: String,
    /// `None` when the product could not be found in the catalog.
    pub sku: Option<String>,
}

/// One confirmed line: the product, how many, at what price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmedLine {
    pub product: ProductLabel,
    pub quantity: u32,
    pub unit_price: Money,
    pub line_total: Money,
}

/// What happened to the purchase: the one event a mail is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseNews {
    /// Every line reserved at these prices (in the purchase's order).
    Confirmed {
        lines: Vec<ConfirmedLine>,
        total: Money,
    },
    /// `product` is the product the reason names, when the catalog has it.
    Rejected {
        reason: RejectionReason,
        product: Option<ProductLabel>,
    },
    Shipped,
    Delivered,
    Cancelled {
        by: Canceller,
    },
}

impl PurchaseNews {
    /// Which mail this is (its Message-ID's purpose and its delivery record's).
    pub fn purpose(&self) -> MailPurpose {
        match self {
            PurchaseNews::Confirmed { .. } => MailPurpose::PurchaseConfirmed,
            PurchaseNews::Rejected { .. } => MailPurpose::PurchaseRejected,
            PurchaseNews::Shipped => MailPurpose::PurchaseShipped,
            PurchaseNews::Delivered => MailPurpose::PurchaseDelivered,
            PurchaseNews::Cancelled { .. } => MailPurpose::PurchaseCancelled,
        }
    }
}

/// The facts of one purchase mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseMailContent {
    pub purchase_id: PurchaseId,
    /// `{ORDERS_PUBLIC_URL}/app/purchases/{purchase_id}`.
    pub purchase_link: Url,
    pub news: PurchaseNews,
}

/// A mail's own part: its subject, the paragraphs of its plain text and the same
/// in HTML (already escaped).
struct Wording {
    subject: String,
    text: String,
    html: String,
}

impl OutgoingMail {
    /// The mail that tells the buyer what happened to their purchase.
    pub fn purchase(
        message_id: String,
        to: EmailAddress,
        content: &PurchaseMailContent,
    ) -> OutgoingMail {
        let Wording {
            subject,
            text,
            html,
        } = wording(&content.news);
        let link = &content.purchase_link;
        let text_body = format!(
            "Hello,\n\
             \n\
             {text}\
             \n\
             Purchase {purchase_id}: {link}\n\
             \n\
             --\n\
             You get this mail because you made a purchase on Orders.\n",
            purchase_id = content.purchase_id,
        );
        let html_content = format!(
            "<p>Hello,</p>\n\
             {html}\
             <p>{button}</p>\n\
             <hr>\n\
             <p style=\"font-size:smaller;color:#555\">You get this mail because you made \
             a purchase on Orders.</p>\n",
            button = html_link(link, &format!("See purchase {}", content.purchase_id)),
        );
        OutgoingMail {
            message_id,
            to,
            html_body: html_document(&subject, &html_content),
            subject,
            text_body,
            purpose: content.news.purpose(),
            list_unsubscribe: None,
        }
    }
}

fn wording(news: &PurchaseNews) -> Wording {
    match news {
        PurchaseNews::Confirmed { lines, total } => confirmed(lines, total),
        PurchaseNews::Rejected { reason, product } => rejected(reason, product.as_ref()),
        PurchaseNews::Shipped => plain_news(
            "Your Orders purchase has shipped",
            "your purchase has shipped: it is on its way to you.",
        ),
        PurchaseNews::Delivered => plain_news(
            "Your Orders purchase was delivered",
            "your purchase was delivered. We hope you enjoy it.",
        ),
        PurchaseNews::Cancelled { by } => plain_news(
            "Your Orders purchase was cancelled",
            match by {
                Canceller::Buyer => "your purchase was cancelled, as you asked.",
                Canceller::Administrator => "your purchase was cancelled by an administrator.",
            },
        ),
    }
}

/// A mail whose whole news is one sentence.
fn plain_news(subject: &str, sentence: &str) -> Wording {
    Wording {
        subject: subject.to_owned(),
        text: format!("{sentence}\n"),
        html: format!("<p>{}</p>\n", escape_html(sentence)),
    }
}

fn confirmed(lines: &[ConfirmedLine], total: &Money) -> Wording {
    let total = total.readable();
    let mut text =
        String::from("your purchase is confirmed. Its items are reserved at these prices:\n\n");
    let mut rows = String::new();
    for line in lines {
        let name = display_name(&line.product);
        let sku = line
            .product
            .sku
            .as_deref()
            .map(|sku| clean_display_text(sku, MAX_BODY_TITLE_CHARS))
            .unwrap_or_default();
        let unit_price = line.unit_price.readable();
        let line_total = line.line_total.readable();
        let sku_note = if sku.is_empty() {
            String::new()
        } else {
            format!(" (SKU {sku})")
        };
        text.push_str(&format!(
            "- {name}{sku_note}: {quantity} x {unit_price} = {line_total}\n",
            quantity = line.quantity,
        ));
        rows.push_str(&format!(
            "<tr><td>{name}</td><td>{sku}</td><td style=\"text-align:right\">{quantity}</td>\
             <td style=\"text-align:right;white-space:nowrap\">{unit_price}</td>\
             <td style=\"text-align:right;white-space:nowrap\">{line_total}</td></tr>\n",
            name = escape_html(&name),
            sku = escape_html(&sku),
            quantity = line.quantity,
            unit_price = escape_html(&unit_price),
            line_total = escape_html(&line_total),
        ));
    }
    text.push_str(&format!("\nTotal: {total}\n"));
    let html = format!(
        "<p>your purchase is confirmed. Its items are reserved at these prices:</p>\n\
         <table style=\"border-collapse:collapse\" cellpadding=\"4\">\n\
         <tr><th style=\"text-align:left\">Product</th><th style=\"text-align:left\">SKU</th>\
         <th style=\"text-align:right\">Quantity</th><th style=\"text-align:right\">Unit price</th>\
         <th style=\"text-align:right\">Line total</th></tr>\n\
         {rows}\
         <tr><td colspan=\"4\" style=\"text-align:right\"><strong>Total</strong></td>\
         <td style=\"text-align:right;white-space:nowrap\"><strong>{total}</strong></td></tr>\n\
         </table>\n",
        total = escape_html(&total),
    );
    Wording {
        subject: format!("Your Orders purchase is confirmed: {total}"),
        text,
        html,
    }
}

fn rejected(reason: &RejectionReason, product: Option<&ProductLabel>) -> Wording {
    let reason = reason.describe();
    let mut text = format!("your purchase could not be completed.\n\nReason: {reason}\n");
    let mut html = format!(
        "<p>your purchase could not be completed.</p>\n<p>Reason: {}</p>\n",
        escape_html(&reason)
    );
    if let Some(product) = product {
        let mut named = display_name(product);
        if let Some(sku) = product.sku.as_deref() {
            named.push_str(&format!(
                " (SKU {})",
                clean_display_text(sku, MAX_BODY_TITLE_CHARS)
            ));
        }
        text.push_str(&format!("Product: {named}\n"));
        html.push_str(&format!("<p>Product: {}</p>\n", escape_html(&named)));
    }
    Wording {
        subject: "Your Orders purchase could not be completed".to_owned(),
        text,
        html,
    }
}

/// The product's name, cleaned; a product without a usable name is "a product".
fn display_name(product: &ProductLabel) -> String {
    let name = clean_display_text(&product.name, MAX_BODY_TITLE_CHARS);
    if name.is_empty() {
        "a product".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use orders_domain::ids::ProductId;
    use orders_domain::money::Currency;

    use super::*;

    fn money(amount: &str) -> Money {
        Money::parse(amount, Currency::UAH).unwrap()
    }

    fn content(news: PurchaseNews) -> PurchaseMailContent {
        let purchase_id: PurchaseId = "0192f1a8-0000-7000-8000-000000000001".parse().unwrap();
        PurchaseMailContent {
            purchase_id,
            purchase_link: Url::parse(&format!(
                "https://orders.example/app/purchases/{purchase_id}"
            ))
            .unwrap(),
            news,
        }
    }

    fn mail(news: PurchaseNews) -> OutgoingMail {
        OutgoingMail::purchase(
            "p@orders.example".to_owned(),
            EmailAddress::parse("ann@example.com").unwrap(),
            &content(news),
        )
    }

    fn label(name: &str, sku: &str) -> ProductLabel {
        ProductLabel {
            name: name.to_owned(),
            sku: Some(sku.to_owned()),
        }
    }

    #[test]
    fn the_confirmation_lists_every_line_and_the_total() {
        let mail = mail(PurchaseNews::Confirmed {
            lines: vec![
                ConfirmedLine {
                    product: label("Чайник Philips", "KET-1"),
                    quantity: 2,
                    unit_price: money("1500"),
                    line_total: money("3000"),
                },
                ConfirmedLine {
                    product: label("Toaster", "TOA-9"),
                    quantity: 1,
                    unit_price: money("899.50"),
                    line_total: money("899.50"),
                },
            ],
            total: money("3899.50"),
        });
        assert_eq!(mail.purpose, MailPurpose::PurchaseConfirmed);
        assert_eq!(
            mail.subject,
            "Your Orders purchase is confirmed: 3 899.50 UAH"
        );
        assert!(mail
            .text_body
            .contains("- Чайник Philips (SKU KET-1): 2 x 1 500.00 UAH = 3 000.00 UAH\n"));
        assert!(mail
            .text_body
            .contains("- Toaster (SKU TOA-9): 1 x 899.50 UAH = 899.50 UAH\n"));
        assert!(mail.text_body.contains("Total: 3 899.50 UAH"));
        for expected in [
            "<td>Чайник Philips</td><td>KET-1</td>",
            "3 000.00 UAH",
            "899.50 UAH",
            "<strong>3 899.50 UAH</strong>",
        ] {
            assert!(mail.html_body.contains(expected), "{expected}");
        }
        assert!(mail.list_unsubscribe.is_none());
    }

    #[test]
    fn every_purchase_mail_links_to_the_purchase_page() {
        let link = "https://orders.example/app/purchases/0192f1a8-0000-7000-8000-000000000001";
        for news in [
            PurchaseNews::Shipped,
            PurchaseNews::Delivered,
            PurchaseNews::Cancelled {
                by: Canceller::Buyer,
            },
            PurchaseNews::Rejected {
                reason: RejectionReason::TimedOut,
                product: None,
            },
        ] {
            let mail = mail(news);
            assert!(mail.text_body.contains(link), "{}", mail.text_body);
            assert!(
                mail.html_body.contains(&format!("href=\"{link}\"")),
                "{}",
                mail.html_body
            );
        }
    }

    #[test]
    fn the_rejection_gives_the_reason_and_names_the_product() {
        let product_id = ProductId::new();
        let mail = mail(PurchaseNews::Rejected {
            reason: RejectionReason::OutOfStock {
                product_id,
                requested: 3,
                available: 1,
            },
            product: Some(label("Kettle", "KET-1")),
        });
        assert_eq!(mail.purpose, MailPurpose::PurchaseRejected);
        assert_eq!(mail.subject, "Your Orders purchase could not be completed");
        for body in [&mail.text_body, &mail.html_body] {
            assert!(
                body.contains("Reason: not enough stock: 3 requested, 1 available"),
                "{body}"
            );
            assert!(body.contains("Product: Kettle (SKU KET-1)"), "{body}");
        }
    }

    #[test]
    fn shipped_delivered_and_cancelled_say_so() {
        let cases = [
            (
                PurchaseNews::Shipped,
                MailPurpose::PurchaseShipped,
                "Your Orders purchase has shipped",
                "on its way",
            ),
            (
                PurchaseNews::Delivered,
                MailPurpose::PurchaseDelivered,
                "Your Orders purchase was delivered",
                "was delivered",
            ),
            (
                PurchaseNews::Cancelled {
                    by: Canceller::Administrator,
                },
                MailPurpose::PurchaseCancelled,
                "Your Orders purchase was cancelled",
                "cancelled by an administrator",
            ),
        ];
        for (news, purpose, subject, sentence) in cases {
            let mail = mail(news);
            assert_eq!(mail.purpose, purpose);
            assert_eq!(mail.subject, subject);
            assert!(mail.text_body.contains(sentence), "{}", mail.text_body);
            assert!(mail.html_body.contains(sentence), "{}", mail.html_body);
        }
    }

    #[test]
    fn a_hostile_product_name_is_escaped_and_kept_on_one_line() {
        let mail = mail(PurchaseNews::Confirmed {
            lines: vec![ConfirmedLine {
                product: label("<b>Kettle</b>\r\nBcc: x@example.com & 'co'", "K-1"),
                quantity: 1,
                unit_price: money("10"),
                line_total: money("10"),
            }],
            total: money("10"),
        });
        assert!(!mail.html_body.contains("<b>Kettle"));
        assert!(mail
            .html_body
            .contains("&lt;b&gt;Kettle&lt;/b&gt; Bcc: x@example.com &amp; &#39;co&#39;"));
        assert!(!mail.text_body.contains("\r\nBcc"));
    }
}
