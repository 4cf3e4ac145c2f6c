//! The shop's console pages as a browser without JavaScript uses them: the
//! catalog, the cart (add, change, remove), the checkout (one purchase however often
//! its form is sent; an unverified address and a refused line said beside them),
//! the buyer's purchases (another buyer's is the 404 page), and the admin pages
//! (products with their errors beside the fields, purchases shipped and delivered,
//! an auditor who sees no button and is refused if they post), and the dashboard's
//! charts. The saga's step runs in process, as `serve workers` runs it.

use std::time::Duration;

use orders_application::accounts::{change_role, RoleChange};
use orders_domain::ids::{PurchaseId, UserId};
use orders_domain::money::{Currency, Money};
use orders_domain::user::{Role, User, UserCommand};
use orders_store::event_store::CommandMetadata;
use orders_workers::saga::Saga;
use reqwest::StatusCode;

use crate::console::{csrf_of, location, Browser, PASSWORD};
use crate::helpers::{spawn_app_with_log, TestApp};

/// A user signed in to the console: their browser and id.
struct Shopper {
    browser: Browser,
    user_id: UserId,
}

/// Registers through the API, verifies the address (unless `verified` is false),
/// grants `role`, and signs in through the console's form.
async fn shopper(app: &TestApp, verified: bool, role: Option<Role>) -> Shopper {
    let session = app.signed_up_user().await;
    let user_id = UserId::from_uuid(session.user_id);
    let setup = CommandMetadata::new_job("test:setup");
    if verified {
        app.state
            .events
            .execute::<User>(&user_id.to_string(), UserCommand::VerifyEmail, &setup)
            .await
            .unwrap();
    }
    if let Some(role) = role {
        change_role(&app.state.events, user_id, RoleChange::Grant(role), &setup)
            .await
            .unwrap();
    }
    let mut browser = Browser::new(app);
    let form = browser.get_page("/app/login").await;
    let response = browser
        .post_form(
            "/app/login",
            &[
                ("_csrf", &csrf_of(&form)),
                ("email", &session.email),
                ("password", PASSWORD),
                ("next", "/app/"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    Shopper { browser, user_id }
}

/// A product of the catalog (a fixture): its id and name.
async fn product(app: &TestApp, price: &str, stock: u64) -> (String, String) {
    let (product_id, name, _) = product_with_sku(app, price, stock).await;
    (product_id, name)
}

/// A product of the catalog (a fixture): its id, name and SKU.
async fn product_with_sku(app: &TestApp, price: &str, stock: u64) -> (String, String, String) {
    let price = Money::parse(price, Currency::from_code("USD").unwrap()).unwrap();
    let product_id = orders_test_support::shop::product(&app.state.events, price, stock)
        .await
        .unwrap();
    let (name, sku): (String, String) = sqlx::query_as(
        "SELECT payload -> 'ProductAdded' ->> 'name', payload -> 'ProductAdded' ->> 'sku'
           FROM events
          WHERE aggregate_type = 'product' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(product_id.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    (product_id.to_string(), name, sku)
}

/// `path` once it answers 200 with `marker` in it (the views follow the log).
async fn page_with(browser: &mut Browser, path: &str, marker: &str) -> String {
    let mut last = String::new();
    for _ in 0..500 {
        let response = browser.get(path).await;
        let status = response.status();
        last = response.text().await.unwrap();
        if status == StatusCode::OK && last.contains(marker) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never showed {marker:?}; last: {last}");
}

/// Adds `quantity` of a product from its page.
async fn add_to_cart(browser: &mut Browser, product_id: &str, quantity: &str) {
    let page = page_with(
        browser,
        &format!("/app/products/{product_id}"),
        "Add to cart",
    )
    .await;
    let response = browser
        .post_form(
            "/app/cart/add",
            &[
                ("_csrf", &csrf_of(&page)),
                ("product_id", product_id),
                ("quantity", quantity),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "added");
    assert_eq!(location(&response), "/app/cart");
}

/// The value of the hidden field `name` of a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let at = page.find(&marker).expect("the field") + marker.len();
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

/// The purchase id of a checkout's redirect (`/app/purchases/{id}?at=...`).
fn purchase_of(location: &str) -> String {
    location
        .trim_start_matches("/app/purchases/")
        .split('?')
        .next()
        .unwrap()
        .to_owned()
}

async fn settle(app: &TestApp, purchase_id: &str) {
    Saga::new(app.state.events.clone(), Duration::from_secs(30))
        .settle(
            purchase_id.parse::<PurchaseId>().unwrap(),
            &CommandMetadata::new_job("system:saga"),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_shopper_finds_products_and_fills_and_changes_the_cart_without_javascript() {
    let app = spawn_app_with_log().await;
    let (kettle, _, kettle_sku) = product_with_sku(&app, "29.99", 5).await;
    let (teapot, _, teapot_sku) = product_with_sku(&app, "12.50", 0).await;
    let Shopper { mut browser, .. } = shopper(&app, true, None).await;
    // Fixtures' names may be alike: rows are told apart by their SKUs.
    let (kettle_row, teapot_row) = (
        format!(r#"data-product="{kettle_sku}""#),
        format!(r#"data-product="{teapot_sku}""#),
    );

    let catalog = page_with(&mut browser, "/app/products", &teapot_row).await;
    assert!(
        catalog.contains(&kettle_row) && catalog.contains("29.99 USD"),
        "{catalog}"
    );
    assert!(
        catalog.contains("5 available") && catalog.contains("out of stock"),
        "{catalog}"
    );
    let searched = browser
        .get_page(&format!("/app/products?q={}", kettle_sku.to_lowercase()))
        .await;
    assert!(searched.contains(&kettle_row) && !searched.contains(&teapot_row));

    // A bad quantity is said beside the field, and nothing is added.
    let page = browser.get_page(&format!("/app/products/{kettle}")).await;
    let refused = browser
        .post_form(
            "/app/cart/add",
            &[
                ("_csrf", &csrf_of(&page)),
                ("product_id", &kettle),
                ("quantity", "two"),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = refused.text().await.unwrap();
    assert!(refused.contains(r#"id="quantity-error""#) && refused.contains(r#"value="two""#));
    assert!(browser
        .get_page("/app/cart")
        .await
        .contains("Your cart is empty"));

    add_to_cart(&mut browser, &kettle, "2").await;
    add_to_cart(&mut browser, &teapot, "1").await;
    add_to_cart(&mut browser, &kettle, "1").await;
    let cart = browser.get_page("/app/cart").await;
    let kettle_field = format!(
        r#"id="quantity-{kettle}" name="quantity" type="number" min="0" inputmode="numeric" value="3""#
    );
    assert!(
        cart.contains(&kettle_field),
        "the same product adds up: {cart}"
    );
    assert!(
        cart.contains("89.97 USD") && cart.contains("102.47 USD"),
        "{cart}"
    );
    let csrf = csrf_of(&cart);

    // Change a quantity; a bad one is said beside its line; 0 removes the line.
    let changed = browser
        .post_form(
            &format!("/app/cart/lines/{teapot}"),
            &[("_csrf", &csrf), ("quantity", "4")],
        )
        .await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    assert!(browser.get_page("/app/cart").await.contains("50.00 USD"));
    let refused = browser
        .post_form(
            &format!("/app/cart/lines/{teapot}"),
            &[("_csrf", &csrf), ("quantity", "-1")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = refused.text().await.unwrap();
    assert!(
        refused.contains(&format!(r#"id="quantity-{teapot}-error""#)),
        "{refused}"
    );
    let removed = browser
        .post_form(
            &format!("/app/cart/lines/{teapot}"),
            &[("_csrf", &csrf), ("quantity", "0")],
        )
        .await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    let cart = browser.get_page("/app/cart").await;
    assert!(
        !cart.contains(&format!(r#"data-line="{teapot_sku}""#))
            && cart.contains(&format!(r#"data-line="{kettle_sku}""#)),
        "{cart}"
    );
    let removed = browser
        .post_form(
            &format!("/app/cart/lines/{kettle}/remove"),
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    assert!(browser
        .get_page("/app/cart")
        .await
        .contains("Your cart is empty"));

    // Without the session's token, nothing changes.
    add_to_cart(&mut browser, &kettle, "1").await;
    let forged = browser
        .post_form(
            &format!("/app/cart/lines/{kettle}/remove"),
            &[("_csrf", "forged")],
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(browser
        .get_page("/app/cart")
        .await
        .contains(&format!(r#"data-line="{kettle_sku}""#)));
}

#[tokio::test]
async fn the_checkout_places_one_purchase_even_when_its_form_is_sent_twice() {
    let app = spawn_app_with_log().await;
    let (kettle, kettle_name) = product(&app, "29.99", 5).await;
    let (teapot, _) = product(&app, "12.50", 5).await;
    let Shopper { mut browser, .. } = shopper(&app, true, None).await;
    add_to_cart(&mut browser, &kettle, "2").await;
    add_to_cart(&mut browser, &teapot, "1").await;
    let cart = browser.get_page("/app/cart").await;
    let form = [("_csrf", csrf_of(&cart)), ("cart", hidden(&cart, "cart"))];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let first = browser.post_form("/app/cart/checkout", &form).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let shown_at = location(&first);
    assert!(shown_at.contains("?at="), "{shown_at}");
    let purchase_id = purchase_of(&shown_at);
    let again = browser.post_form("/app/cart/checkout", &form).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        purchase_of(&location(&again)),
        purchase_id,
        "the same purchase"
    );
    assert_eq!(app.count_events("PurchasePlaced").await, 1);
    assert!(browser
        .get_page("/app/cart")
        .await
        .contains("Your cart is empty"));

    let page = browser.get_page(&shown_at).await;
    assert!(
        page.contains(r#"id="purchase-status" class="status status-pending">pending"#),
        "{page}"
    );
    assert!(
        page.contains(&kettle_name) && page.contains("Cancel the purchase"),
        "{page}"
    );
    assert!(page.contains("you"), "the history names the buyer: {page}");

    settle(&app, &purchase_id).await;
    let page = page_with(
        &mut browser,
        &format!("/app/purchases/{purchase_id}"),
        "status-confirmed\">confirmed",
    )
    .await;
    assert!(
        page.contains("59.98 USD") && page.contains("72.48 USD"),
        "lines and total: {page}"
    );
    assert!(page.contains("the shop (stock reservation)"), "{page}");
    let list = browser.get_page("/app/purchases?status=confirmed").await;
    assert!(
        list.contains(&purchase_id) && list.contains("72.48 USD"),
        "{list}"
    );
    let none = browser.get_page("/app/purchases?status=shipped").await;
    assert!(!none.contains(&purchase_id) && none.contains("No purchase is shipped"));

    // A form drawn before the cart changed buys nothing.
    add_to_cart(&mut browser, &kettle, "1").await;
    let cart = browser.get_page("/app/cart").await;
    let stale_key = hidden(&cart, "cart");
    add_to_cart(&mut browser, &teapot, "1").await;
    let stale = browser
        .post_form(
            "/app/cart/checkout",
            &[("_csrf", &csrf_of(&cart)), ("cart", &stale_key)],
        )
        .await;
    assert_eq!(stale.status(), StatusCode::CONFLICT);
    assert!(stale.text().await.unwrap().contains("Your cart changed"));

    // A line the purchase refuses is said beside it (the API's 422, items[1].quantity).
    let csrf = csrf_of(&cart);
    browser
        .post_form(
            &format!("/app/cart/lines/{teapot}"),
            &[("_csrf", &csrf), ("quantity", "1001")],
        )
        .await;
    let cart = browser.get_page("/app/cart").await;
    let refused = browser
        .post_form(
            "/app/cart/checkout",
            &[("_csrf", &csrf), ("cart", &hidden(&cart, "cart"))],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = refused.text().await.unwrap();
    assert!(
        refused.contains(&format!(r#"id="quantity-{teapot}-error""#)),
        "{refused}"
    );
    assert!(refused.contains("between 1 and 1000"), "{refused}");
    assert_eq!(app.count_events("PurchasePlaced").await, 1);

    // The buyer cancels it while confirmed; then there is no button.
    let page = browser
        .get_page(&format!("/app/purchases/{purchase_id}"))
        .await;
    let cancelled = browser
        .post_form(
            &format!("/app/purchases/{purchase_id}/cancel"),
            &[("_csrf", &csrf_of(&page))],
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::SEE_OTHER);
    let page = browser.get_page(&location(&cancelled)).await;
    assert!(
        page.contains("status-cancelled\">cancelled") && !page.contains("Cancel the purchase"),
        "{page}"
    );
    let again = browser
        .post_form(
            &format!("/app/purchases/{purchase_id}/cancel"),
            &[("_csrf", &csrf_of(&page))],
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn an_unverified_buyer_is_told_to_confirm_the_address_and_buys_nothing() {
    let app = spawn_app_with_log().await;
    let (kettle, _) = product(&app, "29.99", 5).await;
    let Shopper { mut browser, .. } = shopper(&app, false, None).await;
    add_to_cart(&mut browser, &kettle, "1").await;
    let cart = browser.get_page("/app/cart").await;
    let refused = browser
        .post_form(
            "/app/cart/checkout",
            &[("_csrf", &csrf_of(&cart)), ("cart", &hidden(&cart, "cart"))],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "the API's 403");
    let page = refused.text().await.unwrap();
    assert!(
        page.contains(r#"id="cart-error""#) && page.contains("Confirm your e-mail address"),
        "{page}"
    );
    assert!(
        page.contains(r#"action="/app/verify/resend""#),
        "the mail can be sent again: {page}"
    );
    assert!(page.contains("Place purchase"), "the cart is still there");
    assert_eq!(app.count_events("PurchasePlaced").await, 0);
}

#[tokio::test]
async fn another_buyers_purchase_is_the_404_page() {
    let app = spawn_app_with_log().await;
    let (kettle, _) = product(&app, "29.99", 5).await;
    let Shopper { mut browser, .. } = shopper(&app, true, None).await;
    add_to_cart(&mut browser, &kettle, "1").await;
    let cart = browser.get_page("/app/cart").await;
    let placed = browser
        .post_form(
            "/app/cart/checkout",
            &[("_csrf", &csrf_of(&cart)), ("cart", &hidden(&cart, "cart"))],
        )
        .await;
    let shown_at = location(&placed);
    let purchase_id = purchase_of(&shown_at);
    browser.get_page(&shown_at).await;

    let Shopper {
        browser: mut stranger,
        ..
    } = shopper(&app, true, None).await;
    let response = stranger.get(&format!("/app/purchases/{purchase_id}")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.text().await.unwrap().contains("Page not found"));
    let own = stranger.get_page("/app/purchases").await;
    assert!(!own.contains(&purchase_id) && own.contains("You have bought nothing yet"));
    let csrf = csrf_of(&own);
    let response = stranger
        .post_form(
            &format!("/app/purchases/{purchase_id}/cancel"),
            &[("_csrf", &csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.count_events("PurchaseCancelled").await, 0);
    for path in [
        "/app/purchases/not-an-id",
        "/app/purchases?status=lost",
        "/app/products/nope",
    ] {
        assert_eq!(
            stranger.get(path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_administrator_adds_and_changes_products_with_errors_beside_their_fields() {
    let app = spawn_app_with_log().await;
    let Shopper {
        browser: mut admin, ..
    } = shopper(&app, true, Some(Role::Admin)).await;
    let page = admin.get_page("/app/admin/products").await;
    assert!(page.contains("Add a product") && page.contains(r#"href="/app/admin/products""#));
    let csrf = csrf_of(&page);
    let product = |price: &'static str| {
        vec![
            ("_csrf", csrf.clone()),
            ("sku", "KETTLE-7".to_owned()),
            ("name", "Steel kettle".to_owned()),
            ("price", price.to_owned()),
            ("currency", "usd".to_owned()),
            ("description", "Boils water".to_owned()),
            ("image_url", String::new()),
            ("stock", "4".to_owned()),
        ]
    };
    let as_form =
        |fields: &[(&'static str, String)]| -> Vec<(&'static str, String)> { fields.to_vec() };
    let bad = as_form(&product("12.345"));
    let bad: Vec<(&str, &str)> = bad.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = admin.post_form("/app/admin/products", &bad).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = refused.text().await.unwrap();
    assert!(refused.contains(r#"id="price-error""#), "{refused}");
    assert!(refused.contains(r#"aria-describedby="price-error""#));
    assert!(
        refused.contains(r#"value="Steel kettle""#),
        "what was typed stays"
    );
    assert_eq!(app.count_events("ProductAdded").await, 0);

    let good = as_form(&product("29.99"));
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let added = admin.post_form("/app/admin/products", &good).await;
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    let shown_at = location(&added);
    let product_path = shown_at.split('?').next().unwrap().to_owned();
    let page = admin.get_page(&shown_at).await;
    assert!(
        page.contains("Steel kettle") && page.contains(r#"id="product-on-hand">4<"#),
        "{page}"
    );
    let taken = admin.post_form("/app/admin/products", &good).await;
    assert_eq!(taken.status(), StatusCode::CONFLICT, "the SKU is taken");

    // Change the price; a bad stock adjustment is said beside its field.
    let csrf = csrf_of(&page);
    let changed = admin
        .post_form(
            &product_path,
            &[
                ("_csrf", &csrf),
                ("name", "Steel kettle"),
                ("description", "Boils water"),
                ("price", "24.00"),
                ("image_url", "https://img.example.com/kettle.png"),
            ],
        )
        .await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    let page = admin.get_page(&location(&changed)).await;
    assert!(
        page.contains("24.00 USD") && page.contains("https://img.example.com/kettle.png"),
        "{page}"
    );
    let refused = admin
        .post_form(
            &format!("{product_path}/stock"),
            &[("_csrf", &csrf), ("quantity", "many"), ("reason", "count")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains(r#"id="quantity-error""#));
    let refused = admin
        .post_form(
            &format!("{product_path}/stock"),
            &[("_csrf", &csrf), ("quantity", "-10"), ("reason", "count")],
        )
        .await;
    assert_eq!(
        refused.status(),
        StatusCode::CONFLICT,
        "never below what is reserved"
    );
    let adjusted = admin
        .post_form(
            &format!("{product_path}/stock"),
            &[("_csrf", &csrf), ("quantity", "3"), ("reason", "delivery")],
        )
        .await;
    assert_eq!(adjusted.status(), StatusCode::SEE_OTHER);
    let page = admin.get_page(&location(&adjusted)).await;
    assert!(page.contains(r#"id="product-on-hand">7<"#), "{page}");

    let retired = admin
        .post_form(&format!("{product_path}/retire"), &[("_csrf", &csrf)])
        .await;
    assert_eq!(retired.status(), StatusCode::SEE_OTHER);
    let list = admin
        .get_page(&format!(
            "/app/admin/products?at={}",
            location(&retired).split("?at=").nth(1).unwrap()
        ))
        .await;
    assert!(
        list.contains("Steel kettle") && list.contains("retired"),
        "retired ones are listed: {list}"
    );
    let again = admin
        .post_form(&format!("{product_path}/retire"), &[("_csrf", &csrf)])
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(again.text().await.unwrap().contains("retired"));

    let Shopper {
        browser: mut shopper,
        ..
    } = shopper(&app, true, None).await;
    for path in ["/app/admin/products", &product_path, "/app/admin/purchases"] {
        let response = shopper.get(path).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let csrf = csrf_of(&shopper.get_page("/app/").await);
    let response = shopper
        .post_form(
            "/app/admin/products",
            &[
                ("_csrf", &csrf),
                ("sku", "X-1"),
                ("name", "X"),
                ("price", "1"),
                ("currency", "USD"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count_events("ProductAdded").await, 1);
}

#[tokio::test]
async fn administrators_ship_and_deliver_and_an_auditor_sees_no_button_and_is_refused() {
    let app = spawn_app_with_log().await;
    let (kettle, _) = product(&app, "29.99", 5).await;
    let Shopper {
        mut browser,
        user_id: buyer,
    } = shopper(&app, true, None).await;
    add_to_cart(&mut browser, &kettle, "2").await;
    let cart = browser.get_page("/app/cart").await;
    let placed = browser
        .post_form(
            "/app/cart/checkout",
            &[("_csrf", &csrf_of(&cart)), ("cart", &hidden(&cart, "cart"))],
        )
        .await;
    let purchase_id = purchase_of(&location(&placed));
    settle(&app, &purchase_id).await;
    let Shopper {
        browser: mut admin, ..
    } = shopper(&app, true, Some(Role::Admin)).await;
    let Shopper {
        browser: mut auditor,
        ..
    } = shopper(&app, true, Some(Role::Auditor)).await;

    let list = page_with(
        &mut admin,
        "/app/admin/purchases?status=confirmed",
        &purchase_id,
    )
    .await;
    assert!(
        list.contains(">Ship<") && list.contains(">Cancel<"),
        "{list}"
    );
    let seen = page_with(&mut auditor, "/app/admin/purchases", &purchase_id).await;
    assert!(
        !seen.contains(">Ship<") && !seen.contains("/status\""),
        "no buttons: {seen}"
    );
    let by_owner = auditor
        .get_page(&format!("/app/admin/purchases?owner={buyer}"))
        .await;
    assert!(by_owner.contains(&purchase_id));
    let bad = auditor.get("/app/admin/purchases?owner=someone").await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains(r#"id="filter-error""#));
    let products = auditor.get_page("/app/admin/products").await;
    assert!(
        products.contains("on-hand") && !products.contains("Add a product"),
        "{products}"
    );

    // An auditor's post is refused before it is read, and changes nothing.
    let csrf = csrf_of(&seen);
    let refused = auditor
        .post_form(
            &format!("/app/admin/purchases/{purchase_id}/status"),
            &[("_csrf", &csrf), ("status", "shipped")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("Not for this account"));
    let refused = auditor
        .post_form(
            &format!("/app/admin/products/{kettle}/stock"),
            &[("_csrf", &csrf), ("quantity", "x"), ("reason", "")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count_events("PurchaseShipped").await, 0);

    // Deliver before shipping is the 409, said on the page; then ship and deliver.
    let csrf = csrf_of(&list);
    let early = admin
        .post_form(
            &format!("/app/admin/purchases/{purchase_id}/status"),
            &[("_csrf", &csrf), ("status", "delivered")],
        )
        .await;
    assert_eq!(early.status(), StatusCode::CONFLICT);
    assert!(
        early.text().await.unwrap().contains("confirmed"),
        "names the status"
    );
    let shipped = admin
        .post_form(
            &format!("/app/admin/purchases/{purchase_id}/status"),
            &[
                ("_csrf", &csrf),
                ("status", "shipped"),
                ("list_status", "confirmed"),
                ("list_owner", ""),
            ],
        )
        .await;
    assert_eq!(shipped.status(), StatusCode::SEE_OTHER);
    let back = location(&shipped);
    assert!(
        back.starts_with("/app/admin/purchases?status=confirmed&at="),
        "{back}"
    );
    let list = admin.get_page(&back).await;
    assert!(!list.contains(&purchase_id), "no longer confirmed: {list}");
    let list = admin.get_page("/app/admin/purchases?status=shipped").await;
    assert!(
        list.contains(&purchase_id) && list.contains(">Deliver<"),
        "{list}"
    );
    let delivered = admin
        .post_form(
            &format!("/app/admin/purchases/{purchase_id}/status"),
            &[("_csrf", &csrf), ("status", "delivered")],
        )
        .await;
    assert_eq!(delivered.status(), StatusCode::SEE_OTHER);
    let page = browser
        .get_page(&format!(
            "/app/purchases/{purchase_id}?{}",
            location(&delivered).split('?').nth(1).unwrap()
        ))
        .await;
    assert!(page.contains("status-delivered\">delivered"), "{page}");
    assert!(
        page.contains("an administrator") && !page.contains("Cancel the purchase"),
        "{page}"
    );
    // The saga turns the shipped purchase's reservation into shipped stock.
    settle(&app, &purchase_id).await;
    let product = page_with(
        &mut admin,
        &format!("/app/admin/products/{kettle}"),
        r#"id="product-on-hand">3<"#,
    )
    .await;
    assert!(product.contains(r#"id="product-reserved">0<"#), "{product}");
}

#[tokio::test]
async fn the_dashboard_draws_the_shop_with_tables_beside_its_charts() {
    let app = spawn_app_with_log().await;
    let (kettle, _) = product(&app, "29.99", 5).await;
    let Shopper { mut browser, .. } = shopper(&app, true, None).await;
    add_to_cart(&mut browser, &kettle, "2").await;
    let cart = browser.get_page("/app/cart").await;
    let placed = browser
        .post_form(
            "/app/cart/checkout",
            &[("_csrf", &csrf_of(&cart)), ("cart", &hidden(&cart, "cart"))],
        )
        .await;
    settle(&app, &purchase_of(&location(&placed))).await;
    let Shopper {
        browser: mut admin, ..
    } = shopper(&app, true, Some(Role::Admin)).await;

    let dashboard = page_with(&mut admin, "/app/admin/", "59.98 USD").await;
    assert!(
        dashboard.contains(r#"id="chart-purchases-title""#),
        "{dashboard}"
    );
    assert!(dashboard.contains(r#"id="chart-revenue-usd-title""#));
    assert!(dashboard.contains(r#"id="chart-statuses-title""#));
    assert!(
        dashboard.contains("1 placed, 1 confirmed"),
        "the chart says it in words"
    );
    assert!(
        dashboard.contains(r#"<th scope="row">confirmed</th><td>1</td>"#),
        "{dashboard}"
    );
    assert!(dashboard.matches("<tr><th scope=\"row\">20").count() >= 14 * 3);
    let month = admin.get_page("/app/admin/?days=30").await;
    assert!(
        month.contains("the last 30 days") && month.contains("30 days from"),
        "{month}"
    );
}
