"""The service's page in a real browser: headless Chromium (driven by Playwright) types a prompt, watches the reply
stream in and get tinted by expert, adds a specialist (progress bar from the job) and deletes it again."""
import importlib.util, os, time
from pathlib import Path
import pytest
from test_browser import CHROMIUM, FLAGS
from test_server import Server, make_project, WORDS

BUDGET = 300   # seconds for the whole test: tiny project training, page, reply, add, delete


def missing() -> list[str]:
    why = [] if Path(CHROMIUM).is_file() else [f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SMA_CHROMIUM)"]
    return why + [f"python package {m} is not installed" for m in ("playwright", "fastapi", "uvicorn", "httpx", "torch")
                  if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(missing()), reason="browser test needs " + "; ".join(missing()))
def test_page_chat_add_delete(tmp_path):
    from playwright.sync_api import sync_playwright, expect
    deadline = time.monotonic() + BUDGET
    left_ms = lambda: max(1000, int((deadline - time.monotonic()) * 1000))
    srv = Server(make_project(tmp_path / "proj"))
    try:
        srv.wait(lambda h: h["status"] == "ok" and h["initialized"], "initialisation", BUDGET - 60)
        (srv.project / "data" / "law").mkdir(); (srv.project / "data" / "law" / "a.txt").write_text(WORDS["law"] * 150)
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
                                                        args=FLAGS, viewport={"width": 1300, "height": 900})
            try:
                page = ctx.new_page()
                errors, external = [], []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("request", lambda r: None if r.url.startswith(srv.url) else external.append(r.url))
                page.on("dialog", lambda d: d.accept())            # the delete confirmation
                page.goto(srv.url + "/", timeout=left_ms())
                expect(page.locator("#status")).to_contain_text("ok", timeout=left_ms())
                page.fill("#max-new", "12")
                page.fill("#prompt", "the cat sat")
                page.click("#send")
                reply = page.locator(".turn.assistant.done").first
                expect(reply).to_be_visible(timeout=left_ms())
                assert reply.locator("span[data-expert]").count() >= 1, reply.inner_html()
                assert set(reply.locator("span[data-expert]").evaluate_all("els => els.map(e => e.dataset.expert)")) <= {"base", "math"}
                page.fill("#prompt", "and the dog")                # a second turn: the history goes along
                page.keyboard.press("Enter")
                expect(page.locator(".turn.assistant.done")).to_have_count(2, timeout=left_ms())
                expect(page.locator("#spec-list button[data-name=math]")).to_be_disabled(timeout=left_ms())   # the last one
                page.fill("#new-name", "law")
                page.click("#add")
                expect(page.locator("#progress")).to_be_visible(timeout=left_ms())
                expect(page.locator("#spec-msg")).to_have_text("added law", timeout=left_ms())
                law = page.locator("#spec-list button[data-name=law]")
                expect(law).to_be_enabled(timeout=left_ms())
                law.click()
                expect(law).to_have_count(0, timeout=left_ms())
                expect(page.locator("#spec-msg")).to_have_text("deleted law", timeout=left_ms())
                assert not errors, errors
                assert not external, external          # nothing fetched from elsewhere: the page works offline
            finally: ctx.close()
    finally: srv.stop()
