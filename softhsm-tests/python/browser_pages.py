#!/usr/bin/env python3
"""Headless Chromium on a 390 px wide phone screen walks Symbolon's sign-in pages.

Usage:
  browser_pages.py --saml-url SSO_URL --oidc-url AUTHORIZE_URL --error-url URL
                   --demo-url DEMO_URL --token-id T --wrong-token-id W
                   --acs-port P --out FILE

1. The SAML sign-in page: the wrong token id W is typed; its code shows; the "check
   the token id" hint is hidden, then shown (naming W) after 20 s without approval;
   Cancel goes back to the token id field. Then T is typed and "Cancel and return
   to ..." sends the flow back to the SP: the ACS on 127.0.0.1:P receives the POST.
2. The OIDC hosted page, an error page, and the demo page: T is typed, "OTP <code>"
   is printed on stdout for the caller to approve on the device, and the approved
   page (the decoded identity token) is awaited.
At every step the page's layout widths are recorded. FILE gets a JSON object:
{"widths": {step: [scrollWidth, innerWidth]}, "hint": ..., "cancel": ..., "acs": ...}.
CSP violations in the console are recorded too (the caller requires none).
"""
import argparse
import json
import sys
import tempfile
import threading
import time
from http.server import HTTPServer

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

# The ACS, the browser and the CSP check of the other browser test (same directory).
from browser_signin import Acs, browser, csp_violations, got_post, received

# The slow-hint delay of the page's script (src/web/signin.js), waited for once.
SLOW_HINT_AFTER_S = 20
PHONE_WIDTH = 390


def widths(driver):
    return driver.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth];"
    )


def shown(driver, element_id):
    return driver.find_element(By.ID, element_id).is_displayed()


def start(driver, token_id):
    field = WebDriverWait(driver, 20).until(ec.element_to_be_clickable((By.ID, "token-id")))
    field.clear()
    field.send_keys(token_id)
    driver.find_element(By.ID, "start-button").click()
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.ID, "otp").get_attribute("data-otp"))
    return driver.find_element(By.ID, "otp").get_attribute("data-otp")


def walk(driver, args):
    result = {"widths": {}}

    def record(step):
        result["widths"][step] = widths(driver)

    # 1. SAML sign-in page: a mistyped token id, the hint, Cancel.
    driver.get(args.saml_url)
    record("saml sign-in")
    start(driver, args.wrong_token_id)
    started = time.monotonic()
    record("saml code shown")
    hint = {"hidden_at_first": not shown(driver, "slow-hint")}
    WebDriverWait(driver, SLOW_HINT_AFTER_S + 15).until(lambda d: shown(d, "slow-hint"))
    hint["shown_after_s"] = round(time.monotonic() - started, 1)
    hint["text"] = driver.find_element(By.ID, "slow-hint").text
    record("saml hint shown")
    result["hint"] = hint
    driver.find_element(By.ID, "cancel-signin").click()
    WebDriverWait(driver, 10).until(lambda d: shown(d, "token-id"))
    result["cancel"] = {
        "code_hidden": not shown(driver, "otp"),
        "status": driver.find_element(By.ID, "status").text,
        "token_id_field": driver.find_element(By.ID, "token-id").get_attribute("value"),
    }
    # ... then the right token id, and Cancel the whole sign-in: back to the SP.
    start(driver, args.token_id)
    driver.find_element(By.ID, "cancel").click()
    if not got_post.wait(30):
        raise RuntimeError("no POST reached the ACS after Cancel; page: " + driver.page_source[:2000])
    WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.ID, "sp-done")))
    result["acs"] = dict(received)

    # 2. The OIDC hosted page and an error page, as they load.
    driver.get(args.oidc_url)
    WebDriverWait(driver, 20).until(ec.element_to_be_clickable((By.ID, "token-id")))
    record("oidc sign-in")
    driver.get(args.error_url)
    WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.ID, "request-id")))
    record("error")

    # 3. The demo page to its approved state (the identity token decoded).
    driver.get(args.demo_url)
    record("demo sign-in")
    otp = start(driver, args.token_id)
    print("OTP", otp, flush=True)
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "signature").get_attribute("data-verified"))
    record("demo approved")
    result["demo_verified"] = driver.find_element(By.ID, "signature").get_attribute("data-verified")
    result["csp_violations"] = csp_violations(driver)
    return result


def main():
    ap = argparse.ArgumentParser()
    for name in ("saml-url", "oidc-url", "error-url", "demo-url", "token-id", "wrong-token-id", "out"):
        ap.add_argument("--" + name, required=True)
    ap.add_argument("--acs-port", type=int, required=True)
    args = ap.parse_args()
    server = HTTPServer(("127.0.0.1", args.acs_port), Acs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        driver = browser(profile, phone_width=PHONE_WIDTH)
        try:
            result = walk(driver, args)
        finally:
            driver.quit()
            server.shutdown()
    with open(args.out, "w") as f:
        json.dump(result, f)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
