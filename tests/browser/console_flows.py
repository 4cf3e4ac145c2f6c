"""The console in headless Chromium (Debian's), driven by Playwright for Python.

Run by tests/console_browser.rs against a whole system it started in process
(API, relay, projectors, workers), with:
  BASE_URL     the console's server, e.g. http://127.0.0.1:41234
  MAILDIR      the test SMTP server's Maildir (the verification and alert mails)
  CHROMIUM     the browser executable
  SCREENSHOTS  where the pages' screenshots go (kept as artefacts under target/)

It serves its own shop page on 127.0.0.1 (the scraper may fetch it in tests), so it
can change the price while the shopper watches. Exits non-zero at the first failure,
saying which step failed.
"""

import email
import email.policy
import http.server
import mailbox
import os
import re
import sys
import threading
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
CONTROL_DIR = os.environ["CONTROL_DIR"]
PASSWORD = "a long enough password"

# Every event type: an EventSource message with a type reaches only its listeners.
EVENT_TYPES = [
    "UserRegistered", "EmailVerified", "VerificationMailRequested", "PasswordResetRequested",
    "PasswordChanged", "ProfileUpdated", "NotificationPreferencesChanged", "RoleGranted",
    "RoleRevoked", "UserDeactivated", "OrderPlaced", "PriceChanged", "TargetReached", "Rearmed",
    "TargetChanged", "OrderPaused", "OrderResumed", "OrderCancelled", "BecameAvailable",
    "BecameUnavailable", "PriceCheckRequested", "PriceObserved", "PriceCheckFailed",
]

PRICE = {"value": "3500.00"}


class Shop(http.server.BaseHTTPRequestHandler):
    """One product page whose price the test changes."""

    def do_GET(self):
        if self.path != "/p/kettle":
            self.send_response(404)
            self.end_headers()
            return
        body = f"""<!doctype html><html><head><title>Kettle</title>
<script type="application/ld+json">{{"@context": "https://schema.org", "@type": "Product",
"name": "Steel kettle", "offers": {{"@type": "Offer", "price": "{PRICE['value']}",
"priceCurrency": "UAH", "availability": "https://schema.org/InStock"}}}}</script></head>
<body><h1>Steel kettle</h1></body></html>""".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


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
    part = message.get_body(preferencelist=("plain",))
    return part.get_content()


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


def sign_in(page, address):
    page.goto(f"{BASE}/app/login")
    page.fill("#email", address)
    page.fill("#password", PASSWORD)
    page.locator("main form button[type=submit]").click()
    page.wait_for_url(f"{BASE}/app/")


def check_now_and_wait_for(page, price):
    """Asks for a check, then waits for `price` to appear without a reload."""
    page.get_by_role("button", name="Check now").click()
    page.wait_for_load_state()
    expect(page.locator("body")).to_have_attribute("data-live", "open", timeout=10_000)
    page.evaluate("window.notReloaded = true")
    try:
        expect(page.locator("#last-price")).to_have_text(f"{price} UAH", timeout=30_000)
    except AssertionError:
        page.reload()
        sys.exit(f"{price} did not appear; after a reload the page says: {page.locator('main').inner_text()}")
    if page.evaluate("window.notReloaded") is not True:
        sys.exit("the page was reloaded to show the price")


def positions(page):
    """The log positions of the event viewer's rows, as shown (newest first)."""
    return page.locator("tr[data-position]").evaluate_all(
        "rows => rows.map(row => row.dataset.position)"
    )


def as_key(position):
    tx, _, global_position = position.partition(".")
    return (int(tx), int(global_position))


def in_log_order_newest_first(page, what):
    shown = positions(page)
    keys = [as_key(position) for position in shown]
    if keys != sorted(keys, reverse=True) or len(set(keys)) != len(keys):
        sys.exit(f"{what}: the event viewer's rows are not in log order: {shown}")
    return shown


def admin_signs_in(browser):
    """The administrator's desktop browser, on the event log viewer, live."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    admin = context.new_page()
    admin.goto(f"{BASE}/app/login?next=/app/admin/events")
    admin.fill("#email", ADMIN_EMAIL)
    admin.fill("#password", ADMIN_PASSWORD)
    admin.locator("main form button[type=submit]").click()
    admin.wait_for_url(f"{BASE}/app/admin/events")
    expect(admin.locator("body")).to_have_attribute("data-live", "open", timeout=10_000)
    admin.evaluate("window.notReloaded = true")
    accessible(admin, "the event log viewer")
    return admin


def restart_the_service():
    """Asks the test (tests/console_browser.rs) to stop every service and start them
    again on the same port; waits until it has."""
    done = os.path.join(CONTROL_DIR, "restarted")
    open(os.path.join(CONTROL_DIR, "restart"), "w").close()
    deadline = time.time() + 60
    while not os.path.exists(done):
        if time.time() > deadline:
            sys.exit("the service was not restarted within 60 s")
        time.sleep(0.1)
    os.remove(done)


def record_live_events(page, after):
    """A second EventSource in the page, as the browser runs it (it reconnects with
    Last-Event-ID by itself), recording every event id it receives."""
    page.evaluate(
        """([after, types]) => {
             window.seen = [];
             const source = new EventSource('/live?after=' + encodeURIComponent(after));
             for (const type of types) source.addEventListener(type, e => window.seen.push(e.lastEventId));
             window.recorder = source;
           }""",
        [after, EVENT_TYPES],
    )


def main():
    os.makedirs(SCREENSHOTS, exist_ok=True)
    shop = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Shop)
    threading.Thread(target=shop.serve_forever, daemon=True).start()
    product = f"http://127.0.0.1:{shop.server_address[1]}/p/kettle"
    address = f"shopper-{uuid.uuid4().hex[:12]}@example.com"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        step("an administrator opens the event log viewer in another browser")
        admin = admin_signs_in(browser)

        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
        page = phone.new_page()

        step("sign up")
        page.goto(f"{BASE}/app/signup")
        accessible(page, "the sign-up page")
        shot(page, "phone-signup")
        page.fill("#email", address)
        page.fill("#password", PASSWORD)
        page.locator("main form button[type=submit]").click()
        page.wait_for_url(f"{BASE}/app/")
        expect(page.locator(".notice")).to_contain_text("Confirm your e-mail address")

        step("the verification link from the real mail")
        mail = mail_to(address, "Confirm")
        link = re.search(r"https?://\S+verify\?token=\S+", text_of(mail)).group(0)
        page.goto(link)
        expect(page.locator("h1")).to_have_text("E-mail address verified")

        step("sign out and in again")
        page.goto(f"{BASE}/app/")
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r"/app/login"))
        accessible(page, "the sign-in page")
        shot(page, "phone-login")
        sign_in(page, address)
        expect(page.locator(".notice")).to_have_count(0)

        step("a field's error beside it")
        page.fill("#url", product)
        page.fill("#target_price", "30.001")
        page.get_by_role("button", name="Start tracking").click()
        expect(page.locator("#target_price-error")).to_be_visible()
        expect(page.locator("#target_price")).to_have_attribute("aria-invalid", "true")

        step("place a tracking order")
        page.fill("#target_price", "3000.00")
        page.get_by_role("button", name="Start tracking").click()
        page.wait_for_url(re.compile(r"/app/orders/[0-9a-f-]+(\?at=[0-9.]+)?$"))
        order_url = page.url.split("?")[0]
        print(f"    order page {page.url}", flush=True)
        expect(page.locator("#last-price")).to_have_text("not seen yet")

        step("the first price appears without a reload")
        check_now_and_wait_for(page, "3 500.00")
        expect(page.locator("h1")).to_have_text("Steel kettle")
        accessible(page, "the order page")
        shot(page, "phone-order")

        step("a price change draws the chart and reaches the target")
        PRICE["value"] = "2900.00"
        check_now_and_wait_for(page, "2 900.00")
        expect(page.locator("svg.chart circle")).to_have_count(2)
        expect(page.locator("#facts")).not_to_contain_text("alert armed")
        expect(page.locator("#alerts tbody tr")).to_have_count(1)
        expect(page.locator("#alerts tbody tr")).to_contain_text("2 900.00 UAH")
        expect(page.locator("#checks tr.check-ok")).to_have_count(2)
        alert = mail_to(address, "Steel kettle")
        if "2 900.00 UAH" not in text_of(alert):
            sys.exit("the price alert does not give the new price")

        step("the administrator saw it all live, in log order")
        for kind in ["UserRegistered", "OrderPlaced", "PriceObserved", "PriceChanged", "TargetReached"]:
            expect(admin.locator(f"tr[data-type={kind}]").first).to_be_visible(timeout=10_000)
        if admin.evaluate("window.notReloaded") is not True:
            sys.exit("the event viewer was reloaded")
        in_log_order_newest_first(admin, "live")
        shot(admin, "desktop-admin-events")

        step("a correlation id opens the trace as a tree")
        admin.locator("tr[data-type=TargetReached] a.correlation").first.click()
        admin.wait_for_url(re.compile(r"/app/admin/trace/"))
        expect(admin.locator(".trace-node").first).to_be_visible()
        depths = admin.locator(".trace-node").evaluate_all("nodes => nodes.map(n => +n.dataset.depth)")
        if len(depths) < 3 or max(depths) < 1 or depths[0] != 0:
            sys.exit(f"the trace is not a tree of what the check caused: depths {depths}")
        accessible(admin, "the trace page")
        shot(admin, "desktop-admin-trace")
        admin.locator(".trace-node a").first.click()
        admin.wait_for_url(re.compile(r"/app/admin/events/[0-9]+$"))
        expect(admin.locator("pre.payload")).to_be_visible()
        accessible(admin, "an event's envelope")

        step("the dashboard and the users")
        admin.goto(f"{BASE}/app/admin/")
        expect(admin.locator("h1")).to_have_text("Dashboard")
        accessible(admin, "the dashboard")
        shot(admin, "desktop-admin-dashboard")
        admin.goto(f"{BASE}/app/admin/users?email={address}")
        expect(admin.locator(f"tr[data-user='{address}']")).to_be_visible()
        accessible(admin, "the users page")
        admin.goto(f"{BASE}/app/admin/orders")
        expect(admin.locator("tbody tr")).to_have_count(1)
        accessible(admin, "all tracking orders")
        admin.goto(f"{BASE}/app/admin/dead-letters")
        accessible(admin, "the dead letters")

        step("a shopper gets the 403 page on an admin page")
        response = page.goto(f"{BASE}/app/admin/")
        if response.status != 403:
            sys.exit(f"a shopper's admin page answered {response.status}")
        expect(page.locator("h1")).to_have_text("Not for this account")
        accessible(page, "the 403 page")
        page.goto(order_url)

        step("the service restarts: the live pages resume with no gap and no repeat")
        admin.goto(f"{BASE}/app/admin/events")
        expect(admin.locator("body")).to_have_attribute("data-live", "open", timeout=10_000)
        time.sleep(1)
        admin.goto(f"{BASE}/app/admin/events")
        expect(admin.locator("body")).to_have_attribute("data-live", "open", timeout=10_000)
        start = positions(admin)[0]
        record_live_events(admin, start)
        admin.evaluate("window.notReloaded = true")
        restart_the_service()
        PRICE["value"] = "3100.00"
        expect(page.locator("body")).to_have_attribute("data-live", "open", timeout=15_000)
        check_now_and_wait_for(page, "3 100.00")
        expect(admin.locator("tr[data-type=Rearmed]").first).to_be_visible(timeout=15_000)
        time.sleep(1)
        if admin.evaluate("window.notReloaded") is not True:
            sys.exit("the event viewer was reloaded")
        shown = in_log_order_newest_first(admin, "after the restart")
        expected = [p for p in reversed(shown) if as_key(p) > as_key(start)]
        seen = admin.evaluate("window.seen")
        if seen != expected:
            sys.exit(f"across the restart the live feed gave {seen}, the log has {expected}")
        print(f"    {len(seen)} events across the restart, none missing or repeated", flush=True)
        admin.evaluate("window.recorder.close()")

        step("the list")
        page.goto(f"{BASE}/app/")
        expect(page.locator("tbody tr")).to_have_count(1)
        expect(page.locator("tbody")).to_contain_text("3 100.00 UAH")
        accessible(page, "the orders page")
        shot(page, "phone-orders")

        step("settings: a display name saved")
        page.get_by_role("link", name="Settings").click()
        page.wait_for_url(f"{BASE}/app/settings")
        accessible(page, "the settings page")
        page.fill("#display_name", "Ann")
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".notice")).to_have_text("Saved.")
        expect(page.locator("#display_name")).to_have_value("Ann")
        shot(page, "phone-settings")
        page.goto(f"{BASE}/app/")

        step("a form without its token changes nothing")
        status = page.evaluate(
            """() => fetch('/app/orders', {method: 'POST',
                 headers: {'content-type': 'application/x-www-form-urlencoded'},
                 body: 'url=https%3A%2F%2Fshop.example.com%2Fp&target_price=1.00&currency=UAH'})
               .then(response => response.status)"""
        )
        if status != 403:
            sys.exit(f"a form without its CSRF token answered {status}, not 403")
        expect(page.locator("tbody tr")).to_have_count(1)

        step("another user's order is a 404 page")
        desktop = browser.new_context(viewport={"width": 1280, "height": 800})
        other = desktop.new_page()
        other.goto(f"{BASE}/app/signup")
        other.fill("#email", f"other-{uuid.uuid4().hex[:12]}@example.com")
        other.fill("#password", PASSWORD)
        other.locator("main form button[type=submit]").click()
        other.wait_for_url(f"{BASE}/app/")
        shot(other, "desktop-orders-empty")
        response = other.goto(order_url)
        if response.status != 404:
            sys.exit(f"another user's order answered {response.status}")
        expect(other.locator("h1")).to_have_text("Page not found")
        accessible(other, "the 404 page")

        browser.close()
    shop.shutdown()
    print("all console flows passed", flush=True)


if __name__ == "__main__":
    main()
