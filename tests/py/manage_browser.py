"""The /manage page in a real browser: Debian's headless Chromium, driven
by selenium through Debian's chromedriver. Loads the page, types the TOTP
code of the moment, sees the session, clears it, switches profile, and
keeps a screenshot. Usage: manage_browser.py PAGE_URL TOTP_SECRET OUT_DIR IMDS_URL

Between the code and the screenshot, a workload (this script) reads its
credentials from IMDS_URL, so the page shows a role served and to whom.

Prints what the page showed at each step as JSON."""

import base64
import hashlib
import hmac
import json
import os
import struct
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select


def totp(secret):
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF
    return "%06d" % (value % 1000000)


def main():
    url, secret, out_dir, imds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="imds-chromium-")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1000,900", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    text = lambda element_id: text_of(driver, element_id)
    report = {}
    try:
        return steps(driver, url, secret, out_dir, imds, text, report)
    except Exception:
        print(driver.current_url.split("?")[0], driver.page_source, file=sys.stderr)
        driver.save_screenshot(os.path.join(out_dir, "manage-failed.png"))
        raise
    finally:
        driver.quit()


def text_of(driver, element_id):
    # While a code is needed the page reloads itself every 3 s: an element
    # found just before a reload is gone when read; read it again.
    for _ in range(10):
        try:
            return driver.find_element(By.ID, element_id).text
        except StaleElementReferenceException:
            time.sleep(0.2)
    return driver.find_element(By.ID, element_id).text


def settled(driver, element_id, wanted, timeout=10.0):
    # A click on a form button posts and loads the answer page; reading right
    # after the click may read the page before it. Poll until the element
    # shows what the step leads to, or time is up; return the last text seen
    # so the test's assertion reports what the page really showed.
    deadline = time.monotonic() + timeout
    while True:
        try:
            seen = text_of(driver, element_id)
        except NoSuchElementException:
            seen = ""
        if wanted(seen) or time.monotonic() > deadline:
            return seen
        time.sleep(0.2)


def switch_profile(driver, name):
    # The page may reload itself (a code is needed after a clear) between
    # choosing and clicking: try again until the page says it switched.
    for _ in range(5):
        try:
            Select(driver.find_element(By.ID, "profile-choice")).select_by_visible_text(name)
            driver.find_element(By.ID, "switch").click()
            if "Profile switched." in text_of(driver, "notice"):
                return
        except (StaleElementReferenceException, NoSuchElementException):
            pass
        time.sleep(0.3)
    raise RuntimeError("the profile was not switched")


def credentials_of_a_workload(imds):
    for _ in range(100):
        with urllib.request.urlopen(imds + "/latest/meta-data/iam/security-credentials/app", timeout=5) as r:
            if json.load(r)["Code"] == "Success":
                return
        time.sleep(0.1)
    raise RuntimeError("the workload got no credentials")


def steps(driver, url, secret, out_dir, imds, text, report):
    driver.get(url)
    report["session_before"] = text("session")
    driver.find_element(By.ID, "token").send_keys(totp(secret))
    driver.find_element(By.ID, "submit-code").click()
    report["notice_after_code"] = settled(driver, "notice", lambda t: "session is open" in t)
    report["session_after_code"] = settled(driver, "session", lambda t: "expires" in t)
    credentials_of_a_workload(imds)
    driver.find_element(By.ID, "reload").click()
    report["roles_after_code"] = settled(
        driver, "roles", lambda t: "app" in t and "expires" in t)
    driver.save_screenshot(os.path.join(out_dir, "manage.png"))
    driver.find_element(By.ID, "clear").click()
    report["session_after_clear"] = settled(driver, "session", lambda t: t == "none open")
    switch_profile(driver, "other")
    report["profile_after_switch"] = text("profile")
    driver.save_screenshot(os.path.join(out_dir, "manage-switched.png"))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
