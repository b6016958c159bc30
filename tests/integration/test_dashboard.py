"""/dashboard in a real browser: Debian's chromium driven by Playwright (never Playwright's own
browser download). The page loads without console errors, shows the digits zoo's variants and the
workers, answers a query sent through its form with the variant and the reason, and lists a
scale-up under load within seconds."""

from __future__ import annotations

import asyncio
import shutil
import threading

import pytest

from infaas.app import BackgroundServer
from infaas.loadgen import ramp
from infaas.policy.autoscale import capacity_rps
from infaas.settings import Settings
from tests.conftest import copy_data_dir, digits_body, scaling_settings

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser():  # per test: Playwright's sync API holds an event loop, and data fixtures may need asyncio.run
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (pip)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def open_page(browser, url: str):
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(url + "/dashboard")
    return page, problems


def test_the_page_shows_the_zoo_and_answers_a_query_from_its_form(browser, digits_profiled_dir, tmp_path):
    settings = Settings(data_dir=copy_data_dir(digits_profiled_dir, tmp_path / "d"), port=0, workers=1)
    server = BackgroundServer(settings).start()
    try:
        page, problems = open_page(browser, server.url)
        variants = [v for v in server.services.catalog.variants.values() if v.status == "ready"]
        page.wait_for_selector(f'#catalog tr[data-variant="{variants[0].name}"]', timeout=15_000)
        shown = page.eval_on_selector_all("#catalog tr[data-variant]", "rows => rows.map(r => r.dataset.variant)")
        assert {v.name for v in variants} <= set(shown)
        assert page.locator('#workers tr[data-worker="w0"]').count() == 1
        assert "digits-classification" in page.inner_text("#catalog")
        loaded = {n for w in server.services.cluster.workers for n in w.loaded_names()}
        page.wait_for_selector(f'#live tr[data-variant="{sorted(loaded)[0]}"]', timeout=10_000)

        page.select_option("#q-task", "digits-classification")
        page.fill("#q-acc", "0.9")
        page.fill("#q-lat", "500")
        page.click("#query button")
        page.wait_for_selector("#answer-variant", timeout=15_000)
        chosen = page.inner_text("#answer-variant")
        assert chosen in server.services.catalog.variants
        assert server.services.catalog.variants[chosen].accuracy >= 0.9
        assert page.inner_text("#answer-reason").strip()
        page.wait_for_timeout(2_000)  # a few refreshes: none may fail
        assert problems == [], problems
        assert "not updated" not in page.inner_text("#status")
    finally:
        server.stop()


def test_a_scale_up_under_load_appears_in_the_decision_list(browser, heavy_dir, tmp_path):
    settings = scaling_settings(heavy_dir, tmp_path / "d", scale_down_s=600.0)
    server = BackgroundServer(settings).start()
    try:
        page, problems = open_page(browser, server.url)
        page.wait_for_selector("#workers tr[data-worker]", timeout=15_000)
        assert page.locator('#decisions tr[data-kind="replicate"], #decisions tr[data-kind="add_worker"]').count() == 0
        (name,) = {n for w in server.services.cluster.workers for n in w.loaded_names()}
        profile, variant = server.services.catalog.profiles[name], server.services.catalog.variants[name]
        rate = 1.6 * capacity_rps(profile, variant.max_batch) / 16
        body = digits_body(16)
        load = threading.Thread(
            target=lambda: asyncio.run(
                ramp(
                    server.url, "/v2/models/digits-conv/infer", body, ["Content-Type: application/json"], [(rate, 8.0)]
                )
            ),
            daemon=True,
        )
        load.start()
        page.wait_for_selector(
            '#decisions tr[data-kind="replicate"], #decisions tr[data-kind="add_worker"]', timeout=30_000
        )
        rows = page.locator('#decisions tr[data-kind="replicate"], #decisions tr[data-kind="add_worker"]')
        texts = [rows.nth(i).inner_text() for i in range(rows.count())]
        assert all(t.split("\t")[-1].strip() for t in texts), texts  # each with its reason
        assert any("overloaded" in t for t in texts), texts  # the scale-up says what caused it
        load.join(30)
        assert problems == [], problems
    finally:
        server.stop()
