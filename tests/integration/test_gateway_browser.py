"""The web inbox in real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium): a payment.completed event produced to Kafka goes route → deliver (in-app) → the
gateway's Socket.IO → the page shows it with an unread badge; "Mark read" clears the badge
and a `read` status is on the topic. A screenshot is kept in .local/test-artifacts/."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from schemas.settings import TidingsSettings
from streams.dev.demo import cloudevent
from streams.http.gateway import sign_recipient_token
from tests.integration.pipeline import World, make_world, wait_until
from tests.peers.npm import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".local" / "test-artifacts"
SECRET = "b" * 40
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    assert CHROMIUM and DRIVER, (
        "chromium and chromium-driver are missing: `make tools` installs them (Debian packages)"
    )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=900,700"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _world(settings: TidingsSettings, unique: str, tmp: Path, port: int) -> World:
    pay = f"test.{unique}.payment.completed"
    w = make_world(settings, unique, tmp, extra=lambda _sink: {
        "topics": {"events": [f"test.{unique}.order.created", f"test.{unique}.user.registered",
                              pay]},
        "gateway": {"port": port, "recipient_token_secrets": {"acme": [SECRET]}},
    })  # fmt: skip
    rules = tmp / "catalog" / "rules" / "payments.yaml"
    rules.write_text(rules.read_text().replace(
        'events: ["payment.completed"]', f'events: ["payment.completed", "{pay}"]'))  # fmt: skip
    return w


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_a_kafka_event_appears_live_in_the_browser_and_mark_read_clears_the_badge(
    settings: TidingsSettings, unique: str, tmp_path: Path, browser: webdriver.Chrome
) -> None:
    port = free_port()
    w = _world(settings, unique, tmp_path, port)
    rid = f"u-{unique[:8]}"
    token = sign_recipient_token(w.settings.gateway, "acme", rid, 600)
    try:
        with w.pipeline(("route", "deliver", "audit", "gateway")):
            wait_until(lambda: _up(port), 60, "the gateway to listen")
            browser.get(f"http://127.0.0.1:{port}/inbox#token={token}")
            wait = WebDriverWait(browser, 30)
            wait.until(ec.text_to_be_present_in_element((By.ID, "state"), "live"))
            assert browser.find_element(By.ID, "badge").text == "0"
            doc = cloudevent(f"test.{unique}.payment.completed", {
                "payment_id": f"pay-{unique}", "amount": "42.00", "currency": "EUR",
                "customer": {"user_id": rid, "email": f"{rid}@example.com"},
            }, source=f"urn:test:{unique}", tenant="acme")  # fmt: skip
            p = w.producer()
            p.produce(f"test.{unique}.payment.completed", json.dumps(doc).encode(), rid.encode())
            assert p.flush(30) == 0
            entry = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".entry.unread")))
            wait.until(ec.text_to_be_present_in_element((By.ID, "badge"), "1"))
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "inbox.png"))
            nid = entry.get_attribute("data-id")
            entry.find_element(By.CSS_SELECTOR, "button.read").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "badge"), "0"))
            assert not browser.find_elements(By.CSS_SELECTOR, ".entry.unread")
            assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None

            def read_status() -> bool:
                return any(e["type"] == "notification.read" and e["data"]["notification_id"] == nid
                           for e in w.status_events(idle_s=1.0))  # fmt: skip

            wait_until(read_status, 60, "the read status on the topic")
    finally:
        w.sink.stop()
