#!/usr/bin/env python3
"""Headless Chromium walks the operator console (Selenium/WebDriver) with axe-core.

Usage:
  console_browser.py --admin URL --token-id T --axe AXE_MIN_JS --shots DIR --out FILE

Signs in through the operator provider (the test provider signs in at once), opens
every console page, runs axe-core in each (WCAG 2.0/2.1 A and AA rules) and records
its serious and critical violations, takes screenshots at 1280 and 390 px wide
(DIR/<page>-<width>.png), checks that the page is usable by keyboard (the first Tab
reaches a focusable element with a visible outline), then, each through its
confirmation step with a reason, suspends the user's device, rotates the otp keys,
refreshes the trust lists and reloads the configuration. Writes
{"pages": [{"name", "violations", "csp"}], "suspended", "rotated", "refreshed", "reloaded": bool}
to FILE and exits 1 when anything failed.
"""
import argparse
import base64
import json
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait


def browser(profile_dir):
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
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir}",
        "--window-size=1280,900",
    ):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def csp_violations(driver):
    try:
        logs = driver.get_log("browser")
    except Exception:
        return []
    return [e["message"] for e in logs if "Content Security Policy" in e.get("message", "")]


def run_axe(driver, axe_source):
    driver.execute_script(axe_source)
    result = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
          .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                                 nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))))
          .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));
        """
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def screenshots(driver, shots, name):
    """The whole page (not only the viewport) at 1280 and 390 px wide."""
    for width in (1280, 390):
        driver.set_window_size(width, 900)
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        height = max(int(metrics["cssContentSize"]["height"]), 600)
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
        )
        with open(f"{shots}/{name}-{width}.png", "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    driver.set_window_size(1280, 900)


def keyboard_ok(driver):
    body = driver.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    return driver.execute_script(
        """
        const el = document.activeElement;
        if (!el || el === document.body) return false;
        const s = getComputedStyle(el);
        return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;
        """
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--admin", required=True)
    ap.add_argument("--token-id", required=True)
    ap.add_argument("--axe", required=True)
    ap.add_argument("--shots", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    axe_source = open(args.axe, encoding="utf-8").read()
    result = {"pages": [], "suspended": False, "rotated": False, "refreshed": False, "reloaded": False}
    failed = []
    with tempfile.TemporaryDirectory() as profile:
        driver = browser(profile)
        wait = WebDriverWait(driver, 20)

        def check(name):
            violations = run_axe(driver, axe_source)
            csp = csp_violations(driver)
            keys = keyboard_ok(driver)
            screenshots(driver, args.shots, name)
            result["pages"].append({"name": name, "violations": violations, "csp": csp, "keyboard": keys})
            print(f"page {name}: {len(violations)} serious/critical, keyboard focus visible: {keys}", flush=True)
            for v in violations:
                print(f"  {v['impact']} {v['id']}: {v['help']} at {v['nodes']}", flush=True)
            if violations or csp or not keys:
                failed.append(name)

        try:
            admin = args.admin
            driver.get(f"{admin}/console/")
            wait.until(ec.presence_of_element_located((By.ID, "signin-provider")))
            check("signin")
            driver.find_element(By.ID, "signin-provider").click()
            wait.until(ec.presence_of_element_located((By.ID, "operator")))
            assert driver.current_url == f"{admin}/console/", driver.current_url
            check("overview")
            driver.get(f"{admin}/console/users")
            check("users")
            field = driver.find_element(By.ID, "q-q")
            field.send_keys(args.token_id[:4])
            field.submit()
            wait.until(ec.presence_of_element_located((By.LINK_TEXT, args.token_id)))
            driver.find_element(By.LINK_TEXT, args.token_id).click()
            def confirmed(button, page, action, reason, done):
                """Clicks `button` on `page`, confirms `action` with `reason`; the notice's text."""
                check(page)
                button.click()
                wait.until(ec.presence_of_element_located((By.ID, "confirm")))
                check(f"confirm-{action}")
                driver.find_element(By.ID, "reason").send_keys(reason)
                driver.find_element(By.ID, "confirm").click()
                notice = wait.until(ec.presence_of_element_located((By.ID, "notice")))
                check(done)
                return notice.text

            suspend = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "a[id^=suspend-]")))
            text = confirmed(suspend, "user", "suspend", "phone reported lost, ticket 4711", "user-suspended")
            result["suspended"] = "suspended" in text
            driver.get(f"{admin}/console/keys")
            rotate = wait.until(ec.presence_of_element_located((By.ID, "rotate-otp")))
            result["rotated"] = "rotated" in confirmed(rotate, "keys", "rotate", "scheduled rotation", "keys-rotated")
            driver.get(f"{admin}/console/trust")
            refresh = wait.until(ec.presence_of_element_located((By.ID, "refresh-trust")))
            text = confirmed(refresh, "trust", "refresh", "CRL published early", "trust-refreshed")
            result["refreshed"] = "Refreshed" in text
            driver.get(f"{admin}/console/services")
            reload = wait.until(ec.presence_of_element_located((By.ID, "reload-config")))
            text = confirmed(reload, "services", "reload", "new relying party", "services-reloaded")
            result["reloaded"] = "reloaded" in text
            driver.get(f"{admin}/console/flows")
            check("flows")
            driver.get(f"{admin}/console/audit")
            check("audit")
            driver.find_element(By.ID, "verify").click()
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#chain .state-ok")))
            check("audit-verified")
            driver.find_element(By.ID, "signout").click()
            wait.until(ec.presence_of_element_located((By.ID, "signin-provider")))
            check("signed-out")
        except Exception as e:  # report what happened, then fail
            print(f"browser walk failed: {e!r} at {driver.current_url}", flush=True)
            driver.save_screenshot(f"{args.shots}/failure.png")
            failed.append("walk")
        finally:
            driver.quit()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f)
    if failed:
        print(f"failed: {failed}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
