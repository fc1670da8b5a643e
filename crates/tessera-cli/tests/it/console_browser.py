# Drives the Tessera console in headless Chromium (Debian's chromium + chromium-driver)
# through Selenium, the way a person uses it: sign in, open every page, decide review
# pairs. Prints one JSON document of what it saw; the Rust test checks it against SQL.
#
# Input (environment TESSERA_CONSOLE_TEST, JSON): base URL, accounts, screenshot folder.
import json
import os
import re
import sys
import tempfile
import urllib.parse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

cfg = json.loads(os.environ["TESSERA_CONSOLE_TEST"])
base = cfg["base"]
shots = cfg["screenshots"]
os.makedirs(shots, exist_ok=True)

PAGES = [
    ("overview", "/ui/"),
    ("sources", "/ui/sources"),
    ("identity", "/ui/identity"),
    ("review", "/ui/review"),
    ("segments", "/ui/segments"),
    ("models", "/ui/models"),
    ("activation", "/ui/activation"),
    ("privacy", "/ui/privacy"),
]


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = cfg.get("chromium", "/usr/bin/chromium")
    for flag in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,900",
        "--user-data-dir=" + tempfile.mkdtemp(prefix="tessera-chromium-"),
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=cfg.get("chromedriver", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=options)


def requests_seen(driver):
    """Every URL the browser asked for since the last call (Chrome's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver):
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def sign_in(driver, user, password):
    driver.get(base + "/ui/login")
    driver.find_element(By.NAME, "user").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "form.login button"))


def click_and_wait(driver, element):
    """Clicks `element` and waits until the page it was on has been replaced."""
    html = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 30).until(EC.staleness_of(html))


def page_weight(driver):
    return driver.execute_script(
        "var n = performance.getEntriesByType('navigation')[0];"
        "var total = n ? (n.transferSize || n.encodedBodySize || 0) : 0;"
        "performance.getEntriesByType('resource').forEach(function (r) {"
        "  total += (r.transferSize || r.encodedBodySize || 0); });"
        "return total;"
    )


def metrics(driver):
    out = {}
    for el in driver.find_elements(By.CSS_SELECTOR, "[data-metric]"):
        out[el.get_attribute("data-metric")] = el.text
    return out


def visit(driver, name, path, prefix):
    # A fresh load of every asset: the weight counts what a first visit transfers.
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    driver.get(base + path)
    driver.execute_script("return document.readyState")
    page = {
        "url": driver.current_url,
        "title": driver.title,
        "metrics": metrics(driver),
        "weight": page_weight(driver),
        "source": driver.page_source,
        "charts": [
            {"id": c.get_attribute("id"), "points": c.get_attribute("data-points"),
             "canvas": len(c.find_elements(By.TAG_NAME, "canvas"))}
            for c in driver.find_elements(By.CSS_SELECTOR, "div.chart")
        ],
        "largest": [int(r.get_attribute("data-identifiers"))
                    for r in driver.find_elements(By.CSS_SELECTOR, "table[data-table=largest] tr[data-identifiers]")],
        "errors": console_errors(driver),
        "requests": requests_seen(driver),
    }
    driver.save_screenshot(os.path.join(shots, prefix + name + ".png"))
    return page


result = {"admin": {}, "viewer": {}}

driver = browser()
try:
    requests_seen(driver)
    # A wrong password first: a clear message, no session.
    sign_in(driver, cfg["admin"]["user"], "not-the-password")
    result["wrong_password"] = {
        "url": driver.current_url,
        "alert": " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, "[role=alert]")),
        "cookies": [c["name"] for c in driver.get_cookies()],
        # The 401 of the refused sign-in, as the browser logs it.
        "errors": console_errors(driver),
    }
    requests_seen(driver)
    sign_in(driver, cfg["admin"]["user"], cfg["admin"]["password"])
    result["admin_cookie"] = [
        {k: c.get(k) for k in ("name", "httpOnly", "sameSite", "path")} for c in driver.get_cookies()
    ]
    for name, path in PAGES:
        result["admin"][name] = visit(driver, name, path, "admin-")
    # One profile, from the largest-profiles table.
    driver.get(base + "/ui/identity")
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "table[data-table=largest] a"))
    result["admin"]["profile"] = visit(driver, "profile", driver.current_url[len(base):], "admin-")
    by_email = "/ui/profile?id=" + urllib.parse.quote("email:" + cfg["email"])
    result["admin"]["profile_email"] = visit(driver, "profile_email", by_email, "admin-")

    # Decide the two most likely review pairs: accept the first, reject the second.
    driver.get(base + "/ui/review")
    pairs = driver.find_elements(By.CSS_SELECTOR, "article.pair")
    keys = [p.get_attribute("data-pair") for p in pairs[:2]]
    decided = []
    for key, button in zip(keys, ["accept", "reject"]):
        article = driver.find_element(By.CSS_SELECTOR, "article.pair[data-pair='%s']" % key)
        click_and_wait(driver, article.find_element(By.CSS_SELECTOR, "button." + button))
        status = " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, "[role=status]"))
        still = len(driver.find_elements(By.CSS_SELECTOR, "article.pair[data-pair='%s']" % key))
        decided.append({"key": key, "decision": button, "status": status, "still_listed": still})
    result["decided"] = decided
    result["review_after"] = metrics(driver)
    result["review_errors"] = console_errors(driver)

    # Sign out: the session ends.
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "form.signout button"))
    driver.get(base + "/ui/identity")
    result["after_signout"] = driver.current_url
finally:
    driver.quit()

driver = browser()
try:
    requests_seen(driver)
    sign_in(driver, cfg["viewer"]["user"], cfg["viewer"]["password"])
    for name, path in [("identity", "/ui/identity"), ("review", "/ui/review"), ("sources", "/ui/sources")]:
        result["viewer"][name] = visit(driver, name, path, "viewer-")
    driver.get(base + "/ui/identity")
    click_and_wait(driver, driver.find_element(By.CSS_SELECTOR, "table[data-table=largest] a"))
    result["viewer"]["profile"] = visit(driver, "profile", driver.current_url[len(base):], "viewer-")
    by_email = "/ui/profile?id=" + urllib.parse.quote("email:" + cfg["email"])
    result["viewer"]["profile_email"] = visit(driver, "profile_email", by_email, "viewer-")
finally:
    driver.quit()

print(json.dumps(result))
