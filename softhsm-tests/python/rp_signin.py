#!/usr/bin/env python3
"""Headless Chromium signs in at a relying party that sends it to Symbolon.

Usage:
  rp_signin.py --url PROTECTED_URL --token-id T --out FILE --screenshot PNG

Opens the relying party's protected URL (e.g. an Apache location guarded by
mod_auth_openidc), which redirects to Symbolon's /authorize and its hosted
sign-in page; types the token id, waits for the code and prints "OTP <code>"
(the caller approves on the device then). Symbolon sends the browser back to the
relying party, which exchanges the code and shows the protected page. The page's
element #claims must hold a JSON object (the claims the relying party received);
it is written to FILE with the final URL. Fails on any CSP violation on the way.
"""
import argparse
import json
import sys
import tempfile

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from browser_signin import browser, csp_violations, sign_in


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token-id", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        driver = browser(profile)
        try:
            sign_in(driver, args.url, args.token_id, args.screenshot)
            violations = csp_violations(driver)
            try:
                WebDriverWait(driver, args.timeout).until(ec.presence_of_element_located((By.ID, "claims")))
            except Exception:
                print("the protected page did not appear; at", driver.current_url, file=sys.stderr)
                print(driver.page_source[:3000], file=sys.stderr)
                return 1
            result = {
                "final_url": driver.current_url,
                "claims": json.loads(driver.find_element(By.ID, "claims").text),
            }
            if violations:
                print("CSP violations:", violations, file=sys.stderr)
                return 1
            with open(args.out, "w") as f:
                json.dump(result, f)
            print("DONE", flush=True)
            return 0
        finally:
            driver.quit()


if __name__ == "__main__":
    sys.exit(main())
