"""One real browser: Voila serves nbs/jobs/chat.ipynb, headless Chromium (driven by Playwright) types a prompt,
clicks Send and waits for the tinted reply and the gate heatmap. `.ci/browser.sh` installs what it needs."""
import importlib.util, os, signal, socket, subprocess, sys, time
from pathlib import Path
import pytest

CHROMIUM = os.environ.get("SMA_CHROMIUM", "/usr/bin/chromium")
NB = Path(__file__).resolve().parents[1] / "nbs" / "jobs" / "chat.ipynb"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
BUDGET = 180   # seconds for the whole test: server start, demo project training, page, reply


def missing() -> list[str]:
    why = [] if Path(CHROMIUM).is_file() else [f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SMA_CHROMIUM)"]
    why += [f"python package {m} is not installed" for m in ("voila", "playwright", "ipywidgets", "torch") if importlib.util.find_spec(m) is None]
    return why


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


@pytest.mark.skipif(bool(missing()), reason="browser test needs " + "; ".join(missing()) + " — run .ci/browser.sh")
def test_chat_app_in_voila(tmp_path):
    deadline = time.monotonic() + BUDGET
    left_ms = lambda: max(1000, int((deadline - time.monotonic()) * 1000))
    port, log = free_port(), open(tmp_path / "voila.log", "w")
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "SMA_CHAT_PROJECT": str(tmp_path / "project"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "voila", str(NB), "--no-browser", f"--port={port}", "--Voila.port_retries=0",
                               "--Voila.ip=127.0.0.1", "--show_tracebacks=True", f"--VoilaExecutor.timeout={BUDGET}"],
                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True)
    try:
        while True:   # the server is up when its port accepts connections (a GET would start a kernel)
            assert server.poll() is None, f"voila exited: {(tmp_path / 'voila.log').read_text()[-3000:]}"
            try: socket.create_connection(("127.0.0.1", port), timeout=2).close(); break
            except OSError:
                assert time.monotonic() < deadline, "voila did not start"
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
                                                        args=FLAGS, viewport={"width": 1400, "height": 1000})
            try:
                page = ctx.new_page()
                errors = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url, wait_until="commit", timeout=left_ms())   # the page streams while the notebook (and the demo training) runs
                page.wait_for_selector(".sma-prompt input", timeout=left_ms())
                assert page.locator(".sma-panel .sma-delete").count() == 2   # law, math
                page.fill(".sma-prompt input", "the court held")
                page.click("button.sma-send")
                page.wait_for_selector(".sma-log .sma-tok", timeout=left_ms())
                page.wait_for_selector(".sma-heatmap img", timeout=left_ms())
                log_text = page.inner_text(".sma-log")
                assert "the court held" in log_text and "thinking" not in log_text
                assert "mean gate" in page.inner_text(".sma-chat-status")
                assert page.locator(".sma-legend").count() == 3
                page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
                print(f"screenshot: {tmp_path / 'chat.png'}")
                assert "Traceback" not in page.inner_text("body") and not errors, errors
            finally:
                ctx.close()
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):   # the server and its kernels: one process group
            try: os.killpg(server.pid, sig)
            except ProcessLookupError: break
            try: server.wait(wait)
            except subprocess.TimeoutExpired: pass
        log.close()
    assert time.monotonic() < deadline
