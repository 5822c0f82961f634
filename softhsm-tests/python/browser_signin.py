#!/usr/bin/env python3
"""Headless Chromium walks Symbolon's sign-in page (driven by Selenium/WebDriver).

Usage:
  browser_signin.py saml --url SSO_URL --token-id T --acs-port P --out FILE --screenshot PNG
  browser_signin.py demo --url DEMO_URL --token-id T --out FILE --screenshot PNG
  browser_signin.py mellon --url PROTECTED_URL --logout-url URL --idp-url ISSUER --token-id T
                    --out FILE --screenshot PNG

Both modes load the page, type the token id, wait for the OTP and print
"OTP <code>" on stdout (the caller approves on the device then), take the
screenshot of the OTP screen, and fail on any CSP violation in the console.
saml: a tiny HTTP server on 127.0.0.1:P plays the SP's ACS; the form POST it
receives (SAMLResponse, RelayState) is written to FILE as JSON.
demo: waits for the decoded identity token and the in-browser signature check;
writes {"verified": ..., "claims": ..., "header": ...} to FILE.
mellon: opens a page an Apache mod_auth_mellon SP protects, which sends the browser
to Symbolon's sign-in page; after the approval waits for the protected page (a CGI
printing its environment), then opens the SP's logout URL and waits until the
browser is back on Symbolon's sign-in page (the logout's ReturnTo is the protected
page again); writes {"protected_url", "protected_text", "after_logout_url",
"after_logout_has_form"} to FILE.
mellon with --end-session-url: instead of the SP's logout, opens Symbolon's OIDC
end_session URL (RP-initiated logout of another client of the same person), waits
until the browser arrives at --after-end-session (the post_logout_redirect_uri), then
opens the protected page again and waits for Symbolon's sign-in page; adds
"after_end_session_url".
"""
import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

received = {}
got_post = threading.Event()


class Acs(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode()
        fields = urllib.parse.parse_qs(body, keep_blank_values=True)
        received.update({k: v[0] for k, v in fields.items()})
        received["_path"] = self.path
        received["_content_type"] = self.headers.get("Content-Type", "")
        page = b"<!doctype html><title>SP</title><h1 id='sp-done'>Signed in at the SP</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)
        got_post.set()

    def log_message(self, *args):
        pass


def browser(profile_dir, phone_width=None):
    """Headless Chromium: a 900 px desktop window, or with `phone_width` a phone that
    many CSS pixels wide (the pages' viewport meta makes the layout that wide)."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
    ):
        opts.add_argument(a)
    if phone_width:
        metrics = {"width": phone_width, "height": 844, "pixelRatio": 3.0}
        opts.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    else:
        opts.add_argument("--window-size=900,900")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def csp_violations(driver):
    try:
        logs = driver.get_log("browser")
    except Exception:  # not every driver exposes logs
        return []
    return [e["message"] for e in logs if "Content Security Policy" in e.get("message", "")]


def sign_in(driver, url, token_id, screenshot):
    driver.get(url)
    wait = WebDriverWait(driver, 20)
    field = wait.until(ec.element_to_be_clickable((By.ID, "token-id")))
    label = driver.find_element(By.CSS_SELECTOR, "label[for=token-id]")
    assert label.text.strip(), "the token id field has a label"
    field.send_keys(token_id)
    driver.find_element(By.ID, "start-button").click()
    wait.until(lambda d: d.find_element(By.ID, "otp").get_attribute("data-otp"))
    otp = driver.find_element(By.ID, "otp").get_attribute("data-otp")
    assert driver.find_element(By.ID, "otp").is_displayed()
    status = driver.find_element(By.ID, "status")
    assert status.get_attribute("aria-live") == "polite"
    driver.save_screenshot(screenshot)
    print("OTP", otp, flush=True)
    return otp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["saml", "demo", "mellon"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--token-id", required=True)
    ap.add_argument("--acs-port", type=int)
    ap.add_argument("--logout-url", help="mellon: the SP's logout URL")
    ap.add_argument("--idp-url", help="mellon: Symbolon's issuer URL")
    ap.add_argument("--end-session-url", help="mellon: log out at Symbolon's end_session instead")
    ap.add_argument("--after-end-session", help="mellon: where end_session ends (post_logout_redirect_uri)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--result-screenshot", help="screenshot of the final page (demo: the token)")
    ap.add_argument(
        "--expect-failure",
        action="store_true",
        help="the caller rejects: wait for the alert and the retry button, press it, expect the form back",
    )
    args = ap.parse_args()

    server = None
    if args.mode == "saml":
        server = HTTPServer(("127.0.0.1", args.acs_port), Acs)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        driver = browser(profile)
        try:
            sign_in(driver, args.url, args.token_id, args.screenshot)
            if args.expect_failure:
                wait = WebDriverWait(driver, args.timeout)
                wait.until(ec.visibility_of_element_located((By.ID, "retry")))
                alert = driver.find_element(By.ID, "alert")
                assert alert.is_displayed() and alert.get_attribute("role") == "alert"
                result = {"alert": alert.text, "otp_hidden": not driver.find_element(By.ID, "otp").is_displayed()}
                if args.result_screenshot:
                    driver.save_screenshot(args.result_screenshot)
                driver.find_element(By.ID, "retry").click()
                wait.until(ec.visibility_of_element_located((By.ID, "token-id")))
                result["form_back"] = True
                result["acs_posted"] = got_post.is_set()
            elif args.mode == "mellon":
                wait = WebDriverWait(driver, args.timeout)
                wait.until(lambda d: d.current_url.startswith(args.url) and "MELLON_" in d.page_source)
                result = {
                    "protected_url": driver.current_url,
                    "protected_text": driver.find_element(By.TAG_NAME, "body").text,
                }
                if args.result_screenshot:
                    driver.save_screenshot(args.result_screenshot)
                if args.end_session_url:
                    driver.get(args.end_session_url)
                    wait.until(lambda d: d.current_url.startswith(args.after_end_session))
                    result["after_end_session_url"] = driver.current_url
                    driver.get(args.url)
                else:
                    driver.get(args.logout_url)
                wait.until(
                    lambda d: d.current_url.startswith(args.idp_url + "/saml/sso")
                    and d.find_elements(By.ID, "token-id")
                )
                result["after_logout_url"] = driver.current_url
                result["after_logout_has_form"] = bool(driver.find_elements(By.ID, "token-id"))
            elif args.mode == "saml":
                if not got_post.wait(args.timeout):
                    print("no POST reached the ACS; page:", driver.page_source[:2000], file=sys.stderr)
                    return 1
                WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.ID, "sp-done")))
                result = dict(received)
                result["final_url"] = driver.current_url
            else:
                WebDriverWait(driver, args.timeout).until(
                    lambda d: d.find_element(By.ID, "signature").get_attribute("data-verified")
                )
                result = {
                    "verified": driver.find_element(By.ID, "signature").get_attribute("data-verified"),
                    "signature_text": driver.find_element(By.ID, "signature").text,
                    "header": json.loads(driver.find_element(By.ID, "jwt-header").text),
                    "claims": json.loads(driver.find_element(By.ID, "jwt-claims").text),
                }
                if args.result_screenshot:
                    driver.save_screenshot(args.result_screenshot)
            violations = csp_violations(driver)
            if violations:
                print("CSP violations:", violations, file=sys.stderr)
                return 1
            with open(args.out, "w") as f:
                json.dump(result, f)
            print("DONE", flush=True)
            return 0
        finally:
            driver.quit()
            if server:
                server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
