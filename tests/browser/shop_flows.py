"""The shop in headless Chromium (Debian's), driven by Playwright for Python.

Run by tests/console_browser.rs against a whole system it started in process (API,
relay, projectors, workers with the purchase saga), with:
  BASE_URL        the console's server, e.g. http://127.0.0.1:41234
  MAILDIR         the test SMTP server's Maildir (verification and purchase mails)
  CHROMIUM        the browser executable
  SCREENSHOTS     where the pages' screenshots go (kept as artefacts under target/)
  ADMIN_EMAIL     an administrator's account, and its ADMIN_PASSWORD

An administrator adds two products on the admin products page. A buyer signs up,
follows the verification mail's link, adds both products to the cart (one twice),
checks out, and watches the purchase page turn confirmed; the administrator, in
another browser, ships the purchase and then delivers it from the admin purchases
page, and the buyer's page follows to shipped and delivered without reloading. The
confirmation, shipped and delivered mails arrive; the stock and the dashboard's
charts show the sale. Each page is checked with axe-core. Exits non-zero at the
first failure, saying which step failed.
"""

import email
import email.policy
import mailbox
import os
import re
import sys
import time
import uuid

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import expect, sync_playwright

BASE = os.environ["BASE_URL"].rstrip("/")
MAILDIR = os.environ["MAILDIR"]
CHROMIUM = os.environ["CHROMIUM"]
SCREENSHOTS = os.environ["SCREENSHOTS"]
ADMIN_EMAIL = os.environ["ADMIN_EMAIL"]
ADMIN_PASSWORD = os.environ["ADMIN_PASSWORD"]
PASSWORD = "a long enough password"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True}
DESKTOP = {"viewport": {"width": 1280, "height": 900}}


def step(text):
    print(f"step: {text}", flush=True)


def mail_to(address, subject_part, within=30):
    """The first mail to `address` whose subject contains `subject_part`."""
    deadline = time.time() + within
    while time.time() < deadline:
        for message in mailbox.Maildir(MAILDIR, factory=None, create=False):
            parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
            if address in str(parsed["To"]) and subject_part in str(parsed["Subject"]):
                return parsed
        time.sleep(0.2)
    sys.exit(f"no mail to {address} about {subject_part!r} within {within} s")


def text_of(message):
    return message.get_body(preferencelist=("plain",)).get_content()


AXE = Axe()


def accessible(page, name):
    """No serious or critical axe-core violation on the page."""
    results = AXE.run(page)
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    if bad:
        sys.exit(f"accessibility of {name}: " + "; ".join(bad))


def shot(page, name):
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


def add_product(admin, sku, name, price, stock):
    """Adds a product with the admin products page's form; answers its id."""
    admin.goto(f"{BASE}/app/admin/products")
    admin.fill("#sku", sku)
    admin.fill("#name", name)
    admin.fill("#price", price)
    admin.fill("#currency", "USD")
    admin.fill("#description", f"{name}, from the browser test")
    admin.fill("#stock", str(stock))
    admin.get_by_role("button", name="Add the product").click()
    admin.wait_for_url(re.compile(r"/app/admin/products/[0-9a-f-]+(\?at=[0-9.]+)?$"))
    expect(admin.locator("#product-on-hand")).to_have_text(str(stock))
    return admin.url.split("?")[0].rsplit("/", 1)[1]


def add_to_cart(page, name, quantity):
    page.goto(f"{BASE}/app/products")
    page.get_by_role("link", name=name).click()
    page.wait_for_url(re.compile(r"/app/products/[0-9a-f-]+$"))
    page.fill("#quantity", str(quantity))
    page.get_by_role("button", name="Add to cart").click()
    page.wait_for_url(f"{BASE}/app/cart")


def set_status(admin, purchase_id, label):
    """Presses a purchase's Ship or Deliver button on the admin purchases page."""
    admin.goto(f"{BASE}/app/admin/purchases")
    row = admin.locator(f"tr[data-purchase='{purchase_id}']")
    row.locator("button", has_text=label).click()
    admin.wait_for_url(re.compile(r"/app/admin/purchases\?.*at=[0-9.]+"))


def follows_live(page, status):
    """The buyer's purchase page shows `status` without being reloaded."""
    try:
        expect(page.locator("#purchase-status")).to_have_text(status, timeout=20_000)
    except AssertionError:
        sys.exit(f"the purchase page did not turn {status}: {page.locator('main').inner_text()}")
    if page.evaluate("window.notReloaded") is not True:
        sys.exit(f"the purchase page was reloaded to show {status}")


def main():
    os.makedirs(SCREENSHOTS, exist_ok=True)
    run = uuid.uuid4().hex[:8]
    address = f"buyer-{run}@example.com"
    kettle, cups = f"Steel kettle {run}", f"Tea cups {run}"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])

        step("the administrator adds two products on the admin products page")
        admin = browser.new_context(**DESKTOP).new_page()
        admin.goto(f"{BASE}/app/login?next=/app/admin/products")
        admin.fill("#email", ADMIN_EMAIL)
        admin.fill("#password", ADMIN_PASSWORD)
        admin.locator("main form button[type=submit]").click()
        admin.wait_for_url(f"{BASE}/app/admin/products")
        accessible(admin, "the admin products page")
        admin.fill("#sku", f"BAD-{run}")
        admin.fill("#name", "A bad price")
        admin.fill("#price", "12.345")
        admin.fill("#currency", "USD")
        admin.get_by_role("button", name="Add the product").click()
        expect(admin.locator("#price-error")).to_be_visible()
        expect(admin.locator("#price")).to_have_attribute("aria-invalid", "true")
        kettle_id = add_product(admin, f"KETTLE-{run}", kettle, "29.99", 5)
        accessible(admin, "an admin product page")
        cups_id = add_product(admin, f"CUPS-{run}", cups, "12.50", 10)
        admin.goto(f"{BASE}/app/admin/products")
        expect(admin.locator("tbody tr")).to_have_count(2)
        shot(admin, "desktop-admin-products")

        step("a buyer signs up and follows the verification mail's link")
        page = browser.new_context(**PHONE).new_page()
        page.goto(f"{BASE}/app/signup")
        page.fill("#email", address)
        page.fill("#password", PASSWORD)
        page.locator("main form button[type=submit]").click()
        page.wait_for_url(f"{BASE}/app/")
        link = re.search(r"https?://\S+verify\?token=\S+", text_of(mail_to(address, "Confirm"))).group(0)
        page.goto(link)
        expect(page.locator("h1")).to_have_text("E-mail address verified")

        step("the catalog, and both products into the cart")
        page.goto(f"{BASE}/app/products")
        expect(page.get_by_role("link", name=kettle)).to_be_visible()
        expect(page.locator("main")).to_contain_text("29.99 USD")
        accessible(page, "the catalog")
        shot(page, "phone-shop")
        add_to_cart(page, kettle, 1)
        add_to_cart(page, cups, 1)
        add_to_cart(page, kettle, 1)
        expect(page.locator("table.cart tbody tr")).to_have_count(2)
        page.fill(f"#quantity-{cups_id}", "2")
        page.get_by_role("button", name=f"Update {cups}").click()
        page.wait_for_url(f"{BASE}/app/cart")
        expect(page.locator(f"#quantity-{cups_id}")).to_have_value("2")
        expect(page.locator(f"#quantity-{kettle_id}")).to_have_value("2")
        expect(page.locator("#cart-total")).to_have_text("84.98 USD")
        accessible(page, "the cart")
        shot(page, "phone-cart")

        step("checkout: the purchase page turns confirmed")
        page.get_by_role("button", name="Place purchase").click()
        page.wait_for_url(re.compile(r"/app/purchases/[0-9a-f-]+(\?at=[0-9.]+)?$"))
        purchase_id = page.url.split("?")[0].rsplit("/", 1)[1]
        print(f"    purchase page {page.url}", flush=True)
        expect(page.locator("body")).to_have_attribute("data-live", "open", timeout=10_000)
        page.evaluate("window.notReloaded = true")
        follows_live(page, "confirmed")
        expect(page.locator("#purchase-total")).to_have_text("84.98 USD")
        expect(page.get_by_role("button", name="Cancel the purchase")).to_be_visible()
        accessible(page, "the purchase page")
        shot(page, "phone-purchase")
        confirmed = mail_to(address, "is confirmed")
        if "84.98 USD" not in text_of(confirmed) or kettle not in text_of(confirmed):
            sys.exit(f"the confirmation mail lacks the lines or the total: {text_of(confirmed)}")

        step("the administrator ships it; the buyer's page follows")
        set_status(admin, purchase_id, "Ship")
        expect(admin.locator(f"tr[data-purchase='{purchase_id}']")).to_contain_text("shipped")
        accessible(admin, "the admin purchases page")
        shot(admin, "desktop-admin-purchases")
        follows_live(page, "shipped")
        expect(page.get_by_role("button", name="Cancel the purchase")).to_have_count(0)
        mail_to(address, "has shipped")

        step("the administrator delivers it; the buyer's page follows")
        set_status(admin, purchase_id, "Deliver")
        expect(admin.locator(f"tr[data-purchase='{purchase_id}']")).to_contain_text("delivered")
        follows_live(page, "delivered")
        steps = page.locator("ol.history li").evaluate_all("items => items.map(i => i.dataset.status)")
        if steps != ["pending", "confirmed", "shipped", "delivered"]:
            sys.exit(f"the history shows {steps}")
        mail_to(address, "was delivered")

        step("the purchases list, the stock and the dashboard show the sale")
        page.goto(f"{BASE}/app/purchases")
        expect(page.locator(f"tr[data-purchase='{purchase_id}']")).to_contain_text("delivered")
        accessible(page, "the purchases list")
        admin.goto(f"{BASE}/app/admin/products/{kettle_id}")
        expect(admin.locator("#product-on-hand")).to_have_text("3", timeout=10_000)
        expect(admin.locator("#product-reserved")).to_have_text("0")
        admin.goto(f"{BASE}/app/admin/")
        expect(admin.locator("svg.analytics")).to_have_count(3)
        expect(admin.locator("#status-distribution")).to_contain_text("delivered")
        accessible(admin, "the dashboard with the shop's charts")
        shot(admin, "desktop-admin-shop-dashboard")

        browser.close()
    print("all shop flows passed", flush=True)


if __name__ == "__main__":
    main()
