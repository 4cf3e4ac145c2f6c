"""The shopper's account pages in headless Chromium (Debian's), driven by Playwright.

Run by tests/console_browser.rs against a whole system it started in process (API,
relay, projectors, workers), with the same variables as console_flows.py:
  BASE_URL     the console's server, e.g. http://127.0.0.1:41234
  MAILDIR      the test SMTP server's Maildir (the verification and reset mails)
  CHROMIUM     the browser executable
  SCREENSHOTS  where the pages' screenshots go (kept as artefacts under target/)

A shopper signs up, asks for the verification link again (too soon: the page says
when), follows the real mail's link to the landing page and back into the console;
then, in a browser with JavaScript turned off, asks for a password reset from the
sign-in page, opens the reset mail's link, is told a weak password is weak beside
the field, sets a new one and signs in with it; the first browser's session has
ended, and the used link says so. Each page is checked with axe-core. Exits
non-zero at the first failure, saying which step failed.
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
PASSWORD = "a long enough password"
NEW_PASSWORD = "a new password to remember"
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True}


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


def link_in(message, pattern):
    text = message.get_body(preferencelist=("plain",)).get_content()
    found = re.search(pattern, text)
    if not found:
        sys.exit(f"no link like {pattern} in the mail: {text}")
    return found.group(0)


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


def accessible_without_script(page, checker, name):
    """`accessible` for a page of a browser that runs no script, where axe-core
    cannot run (its timers never fire): the page as drawn is written into a page of
    `checker`, a browser that runs scripts, at one of our addresses so that the
    stylesheet loads, and checked there."""
    checker.goto(f"{BASE}/app/login")
    checker.set_content(page.content())
    accessible(checker, name)


def shot(page, name):
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


def submit(page):
    page.locator("main form button[type=submit]").click()


def sign_up_and_verify(page, address):
    step("sign up")
    page.goto(f"{BASE}/app/signup")
    page.fill("#email", address)
    page.fill("#password", PASSWORD)
    submit(page)
    page.wait_for_url(f"{BASE}/app/")

    step("send the verification link again: too soon, the page says when")
    page.get_by_role("button", name="Send the link again").click()
    expect(page.locator("main")).to_contain_text("We sent you a link less than a minute ago")
    accessible(page, "the orders page after asking too soon")

    step("the verification link from the real mail, and back into the console")
    link = link_in(mail_to(address, "Confirm"), r"https?://\S+verify\?token=\S+")
    page.goto(link)
    expect(page.locator("h1")).to_have_text("E-mail address verified")
    accessible(page, "the verification landing page")
    shot(page, "phone-verified")
    page.get_by_role("link", name="Go to your tracking orders").click()
    page.wait_for_url(f"{BASE}/app/")
    expect(page.get_by_role("button", name="Send the link again")).to_have_count(0)


def reset_without_javascript(page, checker, address):
    step("forgot the password: from the sign-in page, without JavaScript")
    page.goto(f"{BASE}/app/login")
    page.get_by_role("link", name="Forgot your password?").click()
    page.wait_for_url(f"{BASE}/app/forgot-password")
    accessible_without_script(page, checker, "the forgotten-password page")
    shot(page, "phone-forgot-password")
    page.get_by_label("E-mail address").fill(address)
    submit(page)
    page.wait_for_url(f"{BASE}/app/forgot-password?sent=1")
    expect(page.locator(".notice")).to_contain_text("If an account has this address")

    step("the reset mail's link opens the console's form")
    link = link_in(
        mail_to(address, "Reset your Orders password"),
        r"https?://\S+/auth/password-reset/confirm\?token=\S+",
    )
    page.goto(link)
    page.wait_for_url(re.compile(r"/app/reset-password\?token="))
    expect(page.locator("h1")).to_have_text("Choose a new password")
    accessible_without_script(page, checker, "the reset form")
    shot(page, "phone-reset-password")

    step("a weak password: the error beside the field")
    page.get_by_label("New password").fill("passwordpassword")
    submit(page)
    expect(page.locator("#password-error")).to_be_visible()
    expect(page.locator("#password")).to_have_attribute("aria-invalid", "true")
    accessible_without_script(page, checker, "the reset form with an error")

    step("a new password: to the sign-in page, with a notice")
    page.get_by_label("New password").fill(NEW_PASSWORD)
    submit(page)
    page.wait_for_url(re.compile(r"/app/login"))
    expect(page.locator(".notice")).to_contain_text("Your password was changed; sign in")
    accessible_without_script(page, checker, "the sign-in page after a reset")

    step("sign in with the new password, still without JavaScript")
    page.fill("#email", address)
    page.fill("#password", NEW_PASSWORD)
    submit(page)
    page.wait_for_url(f"{BASE}/app/")

    step("the used link says so, and offers a new one")
    response = page.goto(link)
    if response.status != 410:
        sys.exit(f"the used reset link answered {response.status}, not 410")
    expect(page.locator("h1")).to_have_text("This link no longer works")
    expect(page.get_by_role("link", name="Ask for a new link")).to_have_attribute(
        "href", "/app/forgot-password"
    )
    accessible_without_script(page, checker, "the used link's page")


def main():
    os.makedirs(SCREENSHOTS, exist_ok=True)
    address = f"account-{uuid.uuid4().hex[:12]}@example.com"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        phone = browser.new_context(**PHONE)
        page = phone.new_page()
        sign_up_and_verify(page, address)

        no_script = browser.new_context(java_script_enabled=False, **PHONE)
        checker = browser.new_context(**PHONE).new_page()
        reset_without_javascript(no_script.new_page(), checker, address)

        step("the first browser's session ended with the reset")
        page.goto(f"{BASE}/app/")
        page.wait_for_url(re.compile(r"/app/login\?next="))
        page.fill("#email", address)
        page.fill("#password", PASSWORD)
        submit(page)
        expect(page.locator(".error")).to_contain_text("do not match an account")

        browser.close()
    print("all account flows passed", flush=True)


if __name__ == "__main__":
    main()
