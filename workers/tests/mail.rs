//! The mails against a real SMTP server: the test catcher (aiosmtpd) started by
//! `make services` / `make test`, which stores every accepted mail in a Maildir.
//!
//! Each test sends to its own recipient (a UUID in the local part) and then looks for
//! that recipient's mail in `new/`, so tests running in parallel never see each
//! other's mails. The stored mail is read back the way a mail client would: headers
//! unfolded, RFC 2047 encoded-words decoded, the multipart/alternative split and each
//! part's transfer encoding undone — with small decoders here, not a new crate.
//!
//! Needs `ORDERS_TEST_SMTP_URL` and `ORDERS_TEST_MAILDIR` (`make services`, then
//! `set -a; . .data/test.env; set +a`); CI always sets them, so their absence fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use orders_domain::email::EmailAddress;
use orders_domain::money::{Currency, Money};
use orders_workers::mail::{
    MailPurpose, Mailer, OutgoingMail, PriceAlertContent, SendError, SendFailure,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use url::Url;
use uuid::Uuid;

const MAIL_FROM: &str = "Orders <orders@orders.test>";
/// aiosmtpd writes the mail before it answers `250`; the wait only covers slow disks.
const DELIVERY_WAIT: Duration = Duration::from_secs(10);

fn required_test_variable(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: start the test servers with `make services`, then \
             `set -a; . .data/test.env; set +a` (make test and CI set it)"
        )
    })
}

fn test_mailer() -> Mailer {
    Mailer::new(&required_test_variable("ORDERS_TEST_SMTP_URL"), MAIL_FROM)
        .expect("the test SMTP URL and sender are valid")
}

fn test_maildir() -> PathBuf {
    PathBuf::from(required_test_variable("ORDERS_TEST_MAILDIR"))
}

fn unique_recipient() -> EmailAddress {
    EmailAddress::parse(&format!("shopper-{}@example.com", Uuid::now_v7().simple())).unwrap()
}

fn money(amount: &str, code: &str) -> Money {
    Money::parse(amount, Currency::from_code(code).unwrap()).unwrap()
}

fn message_id_for(mailer: &Mailer, purpose: MailPurpose) -> String {
    orders_workers::message_id(Uuid::now_v7(), purpose.as_str(), mailer.message_id_domain())
}

fn price_alert(title: Option<&str>) -> PriceAlertContent {
    PriceAlertContent {
        product_title: title.map(str::to_owned),
        product_url: Url::parse(
            "https://shop.example.ua/catalog/sony-wh-1000xm5?color=black&ref=1",
        )
        .unwrap(),
        old_price: Some(money("13999", "UAH")),
        new_price: money("11499", "UAH"),
        target_price: money("12000", "UAH"),
        unsubscribe_link: Url::parse("https://orders.test/unsubscribe?token=unsub.tok3n").unwrap(),
    }
}

#[tokio::test]
async fn a_verification_mail_arrives_with_its_message_id_and_both_parts() {
    let mailer = test_mailer();
    let recipient = unique_recipient();
    let message_id = message_id_for(&mailer, MailPurpose::VerifyEmail);
    let link = Url::parse("https://orders.test/auth/verify?token=v3rify.t0ken").unwrap();
    let mail = OutgoingMail::verification(
        message_id.clone(),
        recipient.clone(),
        &link,
        Utc.with_ymd_and_hms(2031, 5, 6, 7, 8, 0).unwrap(),
    );

    mailer
        .send(&mail)
        .await
        .expect("the catcher accepts the mail");

    let delivered = wait_for_mail_to(&recipient).await;
    assert_eq!(
        delivered.header("Message-ID"),
        Some(format!("<{message_id}>"))
    );
    assert_eq!(delivered.header("From").as_deref(), Some(MAIL_FROM));
    assert_eq!(delivered.header("To").as_deref(), Some(recipient.as_str()));
    assert_eq!(
        delivered.header("Subject").as_deref(),
        Some("Confirm your e-mail address for Orders")
    );
    assert_eq!(
        delivered.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert_eq!(delivered.header("List-Unsubscribe"), None);
    let (text, html) = delivered.text_and_html_parts();
    for part in [&text, &html] {
        assert!(part.contains("2031-05-06 07:08 UTC"), "{part}");
    }
    assert!(text.contains("https://orders.test/auth/verify?token=v3rify.t0ken"));
    assert!(html.contains("href=\"https://orders.test/auth/verify?token=v3rify.t0ken\""));
}

#[tokio::test]
async fn a_password_reset_mail_arrives_with_its_link() {
    let mailer = test_mailer();
    let recipient = unique_recipient();
    let message_id = message_id_for(&mailer, MailPurpose::PasswordReset);
    let link = Url::parse("https://orders.test/reset?token=r3set&lang=uk").unwrap();
    let mail = OutgoingMail::password_reset(
        message_id.clone(),
        recipient.clone(),
        &link,
        Utc.with_ymd_and_hms(2031, 5, 6, 7, 8, 0).unwrap(),
    );

    mailer
        .send(&mail)
        .await
        .expect("the catcher accepts the mail");

    let delivered = wait_for_mail_to(&recipient).await;
    assert_eq!(
        delivered.header("Message-ID"),
        Some(format!("<{message_id}>"))
    );
    assert_eq!(
        delivered.header("Subject").as_deref(),
        Some("Reset your Orders password")
    );
    let (text, html) = delivered.text_and_html_parts();
    assert!(text.contains("https://orders.test/reset?token=r3set&lang=uk"));
    assert!(html.contains("href=\"https://orders.test/reset?token=r3set&amp;lang=uk\""));
}

#[tokio::test]
async fn a_price_alert_with_a_ukrainian_title_arrives_with_an_encoded_subject() {
    let mailer = test_mailer();
    let recipient = unique_recipient();
    let message_id = message_id_for(&mailer, MailPurpose::PriceAlert);
    let mail = OutgoingMail::price_alert(
        message_id.clone(),
        recipient.clone(),
        &price_alert(Some("Навушники Sony WH-1000XM5")),
    );

    mailer
        .send(&mail)
        .await
        .expect("the catcher accepts the mail");

    let delivered = wait_for_mail_to(&recipient).await;
    assert!(
        delivered.raw_header("Subject").unwrap().is_ascii(),
        "headers travel as ASCII (RFC 2047): {:?}",
        delivered.raw_header("Subject")
    );
    assert_eq!(
        delivered.header("Subject").as_deref(),
        Some("Price alert: Навушники Sony WH-1000XM5 is now 11 499.00 UAH")
    );
    assert_eq!(
        delivered.header("Message-ID"),
        Some(format!("<{message_id}>"))
    );
    assert_eq!(
        delivered.header("List-Unsubscribe").as_deref(),
        Some("<https://orders.test/unsubscribe?token=unsub.tok3n>")
    );
    let (text, html) = delivered.text_and_html_parts();
    for part in [&text, &html] {
        assert!(part.contains("Навушники Sony WH-1000XM5"), "{part}");
        assert!(part.contains("11 499.00 UAH"), "{part}");
        assert!(part.contains("13 999.00 UAH"), "{part}");
        assert!(part.contains("12 000.00 UAH"), "{part}");
    }
    assert!(text.contains("https://shop.example.ua/catalog/sony-wh-1000xm5?color=black&ref=1"));
    assert!(text.contains("https://orders.test/unsubscribe?token=unsub.tok3n"));
    assert!(html.contains(
        "href=\"https://shop.example.ua/catalog/sony-wh-1000xm5?color=black&amp;ref=1\""
    ));
    assert!(html.contains("href=\"https://orders.test/unsubscribe?token=unsub.tok3n\""));
}

#[tokio::test]
async fn a_hostile_title_arrives_escaped_in_the_html_part() {
    let mailer = test_mailer();
    let recipient = unique_recipient();
    let mail = OutgoingMail::price_alert(
        message_id_for(&mailer, MailPurpose::PriceAlert),
        recipient.clone(),
        &price_alert(Some("<script>alert(1)</script>\r\nBcc: victim@example.com")),
    );

    mailer
        .send(&mail)
        .await
        .expect("the catcher accepts the mail");

    let delivered = wait_for_mail_to(&recipient).await;
    assert_eq!(delivered.header("Bcc"), None, "no header was injected");
    assert_eq!(
        delivered.header("Subject").as_deref(),
        Some("Price alert: <script>alert(1)</script> Bcc: victim@example.com is now 11 499.00 UAH")
    );
    let (_text, html) = delivered.text_and_html_parts();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
}

#[tokio::test]
async fn a_server_that_cannot_be_reached_is_a_transient_failure() {
    // A port that was free a moment ago: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let mailer = Mailer::new(&format!("smtp://127.0.0.1:{closed_port}"), MAIL_FROM).unwrap();
    let mail = OutgoingMail::verification(
        message_id_for(&mailer, MailPurpose::VerifyEmail),
        unique_recipient(),
        &Url::parse("https://orders.test/auth/verify?token=x").unwrap(),
        Utc::now(),
    );

    let error = mailer.send(&mail).await.unwrap_err();

    assert!(
        matches!(error, SendError::Transient(SendFailure::Smtp(_))),
        "{error:?}"
    );
    assert!(error.is_transient());
}

#[tokio::test]
async fn a_4xx_reply_is_transient_and_a_5xx_reply_is_permanent() {
    for (recipient_reply, expect_transient) in [
        ("450 4.2.1 mailbox busy, try later", true),
        ("550 5.1.1 no such user", false),
    ] {
        let server_port = start_scripted_smtp_server(recipient_reply).await;
        let mailer = Mailer::new(&format!("smtp://127.0.0.1:{server_port}"), MAIL_FROM).unwrap();
        let mail = OutgoingMail::verification(
            message_id_for(&mailer, MailPurpose::VerifyEmail),
            unique_recipient(),
            &Url::parse("https://orders.test/auth/verify?token=x").unwrap(),
            Utc::now(),
        );

        let error = mailer.send(&mail).await.unwrap_err();

        assert_eq!(
            error.is_transient(),
            expect_transient,
            "{recipient_reply}: {error:?}"
        );
        let SendFailure::Smtp(smtp_error) = error.failure() else {
            panic!("{recipient_reply}: not an SMTP failure: {error:?}");
        };
        assert_eq!(
            smtp_error.status().map(|code| code.to_string()),
            Some(recipient_reply[..3].to_owned())
        );
    }
}

#[tokio::test]
async fn a_mail_with_a_broken_message_id_is_refused_before_sending() {
    let mailer = test_mailer();
    let mut mail = OutgoingMail::verification(
        "not a message id".to_owned(),
        unique_recipient(),
        &Url::parse("https://orders.test/auth/verify?token=x").unwrap(),
        Utc::now(),
    );
    mail.message_id = "x@y.z>\r\nBcc: victim@example.com".to_owned();

    let error = mailer.send(&mail).await.unwrap_err();

    assert!(
        matches!(
            error,
            SendError::Permanent(SendFailure::InvalidMessageId(_))
        ),
        "{error:?}"
    );
}

/// A minimal SMTP server that accepts everything except `RCPT TO`, which gets
/// `recipient_reply`: enough to see how real negative replies are classified (the
/// catcher accepts every mail). Returns its port; it serves until the test ends.
async fn start_scripted_smtp_server(recipient_reply: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (reader, mut writer) = connection.into_split();
                let mut lines = BufReader::new(reader).lines();
                writer.write_all(b"220 scripted ESMTP\r\n").await?;
                while let Some(line) = lines.next_line().await? {
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply = match verb.as_str() {
                        "EHLO" | "HELO" => "250 scripted",
                        "RCPT" => recipient_reply,
                        "QUIT" => {
                            writer.write_all(b"221 bye\r\n").await?;
                            break;
                        }
                        "DATA" => "554 5.5.1 no valid recipients",
                        _ => "250 OK",
                    };
                    writer.write_all(format!("{reply}\r\n").as_bytes()).await?;
                }
                std::io::Result::Ok(())
            });
        }
    });
    port
}

// ---------------------------------------------------------------------------------
// Reading the Maildir

/// Waits until a mail addressed to `recipient` is in the Maildir's `new/`.
async fn wait_for_mail_to(recipient: &EmailAddress) -> DeliveredMail {
    let new_mails = test_maildir().join("new");
    let deadline = Instant::now() + DELIVERY_WAIT;
    loop {
        if let Some(mail) = find_mail_to(&new_mails, recipient) {
            return mail;
        }
        assert!(
            Instant::now() < deadline,
            "no mail to {recipient} arrived in {} within {DELIVERY_WAIT:?}",
            new_mails.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find_mail_to(new_mails: &Path, recipient: &EmailAddress) -> Option<DeliveredMail> {
    let entries = std::fs::read_dir(new_mails)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", new_mails.display()));
    entries
        .filter_map(|entry| std::fs::read(entry.ok()?.path()).ok())
        .map(|bytes| DeliveredMail::parse(&String::from_utf8_lossy(&bytes)))
        .find(|mail| mail.header("To").as_deref() == Some(recipient.as_str()))
}

/// A stored mail: unfolded top-level headers and the raw body.
#[derive(Debug)]
struct DeliveredMail {
    headers: Vec<(String, String)>,
    body: String,
}

impl DeliveredMail {
    fn parse(stored: &str) -> DeliveredMail {
        let (headers, body) = split_headers_and_body(stored);
        DeliveredMail { headers, body }
    }

    /// The header as it travelled (encoded-words left alone).
    fn raw_header(&self, name: &str) -> Option<String> {
        find_header(&self.headers, name)
    }

    /// The header as a reader sees it: encoded-words decoded.
    fn header(&self, name: &str) -> Option<String> {
        self.raw_header(name)
            .map(|value| decode_encoded_words(&value))
    }

    /// Checks the mail is multipart/alternative with exactly a text/plain and a
    /// text/html part, and returns their decoded contents.
    fn text_and_html_parts(&self) -> (String, String) {
        let content_type = self.raw_header("Content-Type").expect("a Content-Type");
        assert!(
            content_type.starts_with("multipart/alternative"),
            "{content_type}"
        );
        let boundary = header_parameter(&content_type, "boundary").expect("a boundary");
        let parts = split_multipart(&self.body, &boundary);
        assert_eq!(parts.len(), 2, "a text and an HTML part: {parts:?}");
        let (text_headers, text) = &parts[0];
        let (html_headers, html) = &parts[1];
        let part_type = |headers: &[(String, String)]| {
            find_header(headers, "Content-Type")
                .unwrap_or_default()
                .to_ascii_lowercase()
        };
        assert!(part_type(text_headers).starts_with("text/plain; charset=utf-8"));
        assert!(part_type(html_headers).starts_with("text/html; charset=utf-8"));
        (text.clone(), html.clone())
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
                // Unfolding (RFC 5322 2.2.3) removes only the line break.
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

/// `boundary` from `multipart/alternative; boundary="abc"`.
fn header_parameter(value: &str, parameter: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|pair| {
        let (name, parameter_value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case(parameter)
            .then(|| parameter_value.trim().trim_matches('"').to_owned())
    })
}

/// The parts between `--boundary` lines, each with its headers and its decoded body.
fn split_multipart(body: &str, boundary: &str) -> Vec<(Vec<(String, String)>, String)> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in body.lines() {
        if line.trim_end() == delimiter || line.trim_end() == format!("{delimiter}--") {
            if let Some(lines) = current.take() {
                parts.push(lines.join("\n"));
            }
            if line.trim_end() != delimiter {
                break;
            }
            current = Some(Vec::new());
        } else if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    parts
        .iter()
        .map(|part| {
            let (headers, encoded_body) = split_headers_and_body(part);
            let encoding = find_header(&headers, "Content-Transfer-Encoding")
                .unwrap_or_else(|| "7bit".to_owned())
                .to_ascii_lowercase();
            let decoded = match encoding.as_str() {
                "base64" => decode_base64(&encoded_body),
                "quoted-printable" => decode_quoted_printable(&encoded_body),
                _ => encoded_body.into_bytes(),
            };
            (headers, String::from_utf8(decoded).expect("UTF-8 part"))
        })
        .collect()
}

/// Decodes RFC 2047 encoded-words (`=?utf-8?b?...?=`, `=?utf-8?q?...?=`); the
/// whitespace between two adjacent encoded-words is not part of the text.
fn decode_encoded_words(value: &str) -> String {
    let mut decoded = String::new();
    let mut rest = value;
    let mut previous_was_encoded_word = false;
    while !rest.is_empty() {
        let Some(start) = rest.find("=?") else {
            decoded.push_str(rest);
            break;
        };
        let (before, candidate) = rest.split_at(start);
        let Some((word_bytes, word_length)) = parse_encoded_word(candidate) else {
            decoded.push_str(&rest[..start + 2]);
            rest = &rest[start + 2..];
            previous_was_encoded_word = false;
            continue;
        };
        if !(previous_was_encoded_word && before.trim().is_empty()) {
            decoded.push_str(before);
        }
        decoded.push_str(&String::from_utf8(word_bytes).expect("UTF-8 encoded-word"));
        rest = &candidate[word_length..];
        previous_was_encoded_word = true;
    }
    decoded
}

/// One `=?charset?encoding?text?=` at the start of `candidate`: its bytes and length.
fn parse_encoded_word(candidate: &str) -> Option<(Vec<u8>, usize)> {
    let inner = candidate.strip_prefix("=?")?;
    let (charset, inner) = inner.split_once('?')?;
    let (encoding, inner) = inner.split_once('?')?;
    let end = inner.find("?=")?;
    let text = &inner[..end];
    if !charset.eq_ignore_ascii_case("utf-8") || text.contains(char::is_whitespace) {
        return None;
    }
    let bytes = match encoding {
        "B" | "b" => decode_base64(text),
        // In the Q encoding `_` stands for a space.
        "Q" | "q" => decode_quoted_printable(&text.replace('_', " ")),
        _ => return None,
    };
    let length = 2 + charset.len() + 1 + encoding.len() + 1 + end + 2;
    Some((bytes, length))
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
        let bytes = bits.to_be_bytes();
        decoded.extend_from_slice(&bytes[1..chunk.len()]);
    }
    decoded
}

/// Quoted-printable (RFC 2045 6.7): `=XX` is a byte, `=` at a line end is a soft
/// line break.
fn decode_quoted_printable(encoded: &str) -> Vec<u8> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'=' if bytes.get(index + 1) == Some(&b'\n') => index += 2,
            b'=' if bytes.get(index + 1..index + 3) == Some(b"\r\n") => index += 3,
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

#[test]
fn the_test_decoders_decode_what_they_claim() {
    assert_eq!(decode_base64("0J3QsNCy"), "Нав".as_bytes());
    assert_eq!(decode_base64("YQ=="), b"a");
    assert_eq!(decode_base64("YWI="), b"ab");
    assert_eq!(
        decode_quoted_printable("a=3Db=\nc=C3=A9"),
        "a=bcé".as_bytes()
    );
    assert_eq!(
        decode_encoded_words("Price: =?utf-8?b?0J3QsNCy?= =?utf-8?q?=D0=B8_x?= end"),
        "Price: Нави x end"
    );
}
