"""The dashboard for real: a `smoke --dashboard --chaos crash=1` run watched in a headless Chromium
(Playwright), and a tab enlarged to its live view on `tabs --dashboard`."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, sync_playwright

from browser_pool.chromium import find_chromium
from orchestrator.doctor import playwright_chromium
from orchestrator.ports import free_block
from tests.conftest import OutputReader, cli_process, read_events, run_cli, wait_for_line, wait_until

pytestmark = pytest.mark.browser

# Every value a card's data-state held (MutationObserver's oldValue), in order, per tab: a state
# set and replaced within one task of the page is seen too.
WATCH_STATES = """
window.__states = {};
new MutationObserver((records) => {
  for (const record of records) {
    const tab = record.target.dataset.tab;
    if (tab !== undefined && record.oldValue !== null) (window.__states[tab] ||= []).push(record.oldValue);
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state'], attributeOldValue: true });
"""

# Each card's picture as shown: [tab, a hash of its pixels, its natural width].
PICTURES = """() => [...document.querySelectorAll('.card')].map((card) => {
  const img = card.querySelector('img');
  if (img.hidden || !img.complete || !img.naturalWidth) return [card.dataset.tab, null, 0];
  const canvas = Object.assign(document.createElement('canvas'), { width: 64, height: 48 });
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0, 64, 48);
  let hash = 0;
  for (const value of context.getImageData(0, 0, 64, 48).data) hash = (hash * 31 + value) >>> 0;
  return [card.dataset.tab, hash, img.naturalWidth];
})"""


@pytest.fixture
def viewer() -> Iterator[tuple[Page, list[str]]]:
    """A headless Chromium page to watch the dashboard in, and the page's console errors."""
    executable = find_chromium(None, playwright_chromium()).executable
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            # Which request failed, for the message (a failed one also logs a console error); closing the
            # push channel at the run's end aborts its request, which is no error.
            page.on("requestfailed", lambda request: None if request.url.split("?")[0].endswith("/stream")
                    else errors.append(f"{request.url}: {request.failure}"))
            page.add_init_script(WATCH_STATES)
            yield page, errors
        finally:
            browser.close()


def _dashboard_url(proc: Any) -> str:
    line = wait_for_line(proc, "[Dashboard] http", timeout=120)[-1]
    return line.split("[Dashboard] ", 1)[1].strip()


def test_a_smoke_run_is_watched_live_through_a_crash_to_100_percent(tmp_path: Path, ports, viewer, no_leftovers) -> None:
    page, errors = viewer
    app, base = ports
    port = free_block(base + 20, 1)
    runs = tmp_path / "runs"
    args = ["smoke", "--envs", "2", "--timesteps", "4096", "--n-steps", "512", "--chaos", "crash=1", "--dashboard", str(port),
            "--monitor-interval", "1", "--app-port", str(app), "--base-port", str(base), "--runs-dir", str(runs),
            "--progress", "lines"]
    with cli_process(args, tmp_path) as proc:
        url = _dashboard_url(proc)
        assert url.startswith(f"http://127.0.0.1:{port}/?token="), url
        output = OutputReader(proc)
        page.goto(url)
        seen: dict[str, set[int]] = {}
        ended = False
        deadline = time.monotonic() + 300
        while not ended and time.monotonic() < deadline:
            for tab, picture, _ in page.evaluate(PICTURES):
                if picture is not None:
                    seen.setdefault(tab, set()).add(picture)
            ended = page.locator("#banner").is_visible()
            time.sleep(0.3)
        assert ended, f"the page never said the run ended; run output:\n{output.text()}"
        for tab, picture, _ in page.evaluate(PICTURES):  # the last pictures, taken as the run ended
            seen.setdefault(tab, set()).add(picture)
        assert output.finish() and proc.returncode == 0, output.text()

    run_dir = next(runs.iterdir())
    crashed = next(e for e in read_events(run_dir) if e["event"] == "chaos")["tab"] + 1
    assert page.locator(".card").count() == 2
    assert sorted(seen) == ["1", "2"]
    assert all(len(pictures) >= 2 for pictures in seen.values()), f"a tab's picture never changed: {seen}"
    states = page.evaluate("window.__states")
    states[str(crashed)].append(page.locator(f".card[data-tab='{crashed}']").get_attribute("data-state"))
    history = states[str(crashed)]
    assert "replacing" in history and "stepping" in history[history.index("replacing"):], history
    assert page.locator("#percent").inner_text() == "100 %"
    assert "completed" in page.locator("#run").inner_text()
    assert page.locator("#events li[data-kind='tab_failed']").count() >= 1
    assert page.locator("#events li[data-kind='tab_recovered']").count() >= 1
    assert errors == [], "\n".join(errors)


def test_a_tab_enlarged_on_the_dashboard_is_shown_live_and_larger(tmp_path: Path, ports, viewer, no_leftovers) -> None:
    page, errors = viewer
    app, base = ports
    port = free_block(base + 20, 1)
    args = ["tabs", "--envs", "2", "--dashboard", str(port), "--app-port", str(app), "--base-port", str(base),
            "--runs-dir", str(tmp_path / "runs")]
    with cli_process(args, tmp_path) as proc:
        url = _dashboard_url(proc)
        output = OutputReader(proc)
        page.goto(url)
        # `tabs` writes status.json every 2 s; the pages wait for a trainer, their rovers still.
        # Judged on one reading: a card whose next picture is still loading shows none for a moment.
        def both_pictures() -> list[list[Any]] | None:
            shown = page.evaluate(PICTURES)
            return shown if len(shown) == 2 and all(picture is not None for _, picture, _ in shown) else None

        shown = wait_until(both_pictures, 60, "both cards with a picture")
        assert {width for _, _, width in shown} == {240}
        page.locator(".card[data-tab='2']").click()
        assert page.locator("#enlarged").is_visible()
        wait_until(lambda: page.evaluate("document.getElementById('enlarged-img').naturalWidth") == 680, 30,
                   "tab 2's live view, taken at the arena's full width")
        before = page.evaluate("document.getElementById('enlarged-img').src")
        wait_until(lambda: page.evaluate("document.getElementById('enlarged-img').src") != before, 10,
                   "a next frame of the live view")
        page.locator("#close").click()
        proc.send_signal(signal.SIGINT)
        output.finish(60)
        assert proc.returncode == 0, output.text()
    assert errors == [], "\n".join(errors)


def test_the_page_holds_64_tabs_and_a_reload(tmp_path: Path, viewer) -> None:
    """A run folder of 64 tabs served as `lunarfleet dashboard` serves it: a card and a picture each,
    the same again after the page reloads, no console error."""
    import io
    import json

    from PIL import Image

    from orchestrator.dashboard import Dashboard
    from orchestrator.status_file import write_status

    page, errors = viewer
    run_dir = tmp_path / "runs" / "20260101-000000-train"
    (run_dir / "thumbnails").mkdir(parents=True)
    tabs = [{"tab": i + 1, "port": 9000 + i, "state": "stepping", "steps_per_s": 50.0, "restarts": i % 3,
             "cpu_percent": 3.0, "pss_mb": 30.0, "last_failure": "crash" if i % 3 else None} for i in range(64)]
    write_status(run_dir / "status.json", {"run_id": run_dir.name, "command": "train", "state": "running",
                                           "updated": time.time(), "timesteps": 5000, "target_timesteps": 10000,
                                           "fps": 100.0, "tabs": tabs})
    (run_dir / "events.jsonl").write_text("".join(
        json.dumps({"time": time.time(), "event": "progress", "steps": 1000 * k, "fps": 90.0 + k, "mean_reward": -10.0 + k}) + "\n"
        for k in range(1, 6)))
    for i in range(64):
        picture = io.BytesIO()
        Image.new("RGB", (240, 176), (i * 4, 80, 160)).save(picture, "JPEG")
        (run_dir / "thumbnails" / f"tab-{i + 1}.jpg").write_bytes(picture.getvalue())
    dashboard = Dashboard(run_dir, free_block(20950, 1), live=False)
    try:
        for attempt in ("first load", "reload"):
            if attempt == "first load":
                page.goto(dashboard.url)
            else:
                page.reload()
            wait_until(lambda: page.locator(".card").count() == 64
                       and all(p is not None for _, p, _ in page.evaluate(PICTURES)), 30, f"64 cards with pictures ({attempt})")
            assert page.locator("#percent").inner_text() == "50 %"
            assert page.locator("#reward-chart polyline").count() == 1
            assert page.locator(".card[data-tab='2'] .failure").inner_text() == "last failure: crash"
    finally:
        dashboard.close()
    assert errors == [], "\n".join(errors)


def test_a_supervised_train_keeps_its_dashboard_url_across_a_trainer_restart(tmp_path: Path, ports, no_leftovers) -> None:
    app, base = ports
    port = free_block(base + 20, 1)
    result = run_cli(
        ["train", "--envs", "2", "--n-steps", "128", "--timesteps", "1024", "--save-freq", "256", "--chaos", "trainer=1",
         "--max-restarts", "2", "--dashboard", str(port), "--app-port", str(app), "--base-port", str(base),
         "--models-dir", str(tmp_path / "models"), "--runs-dir", str(tmp_path / "runs"), "--progress", "lines"],
        cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[Supervisor] ↻ the run died" in result.stdout
    urls = [line.split("[Dashboard] ", 1)[1] for line in result.stdout.splitlines() if line.startswith("[Dashboard] http")]
    assert len(urls) == 2 and urls[0] == urls[1], urls  # the first attempt's and the restarted one's
    assert urls[0].startswith(f"http://127.0.0.1:{port}/?token=")
