"Widgets driven headless (values set, buttons clicked, threads joined) on the tiny demo project: chat, gates, specialists panel, console."
import json, subprocess, sys
from pathlib import Path
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("torch")


def loaded_after(module: str) -> set:
    "The heavy and sma_kit modules that `import module` loads, in a fresh interpreter."
    code = f"import sys, {module}\nprint(' '.join(m for m in sys.modules if m.split('.')[0] in ('torch', 'jax', 'ipywidgets', 'matplotlib') or m.startswith('sma_kit')))"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return set(p.stdout.split())


def test_import_loads_neither_torch_nor_ipywidgets():
    for m in ("sma_kit.widgets", "sma_kit.chat", "sma_kit.manager"):
        assert not {x for x in loaded_after(m) if not x.startswith("sma_kit")}, m


def test_dependencies_point_one_way():
    "manager <- chat <- widgets: the manager imports neither chat nor widgets, chat does not import widgets."
    assert not {"sma_kit.chat", "sma_kit.widgets"} & loaded_after("sma_kit.manager")
    assert "sma_kit.widgets" not in loaded_after("sma_kit.chat") and "sma_kit.manager" in loaded_after("sma_kit.chat")


CHAT_JOB = Path(__file__).resolve().parents[1] / "nbs" / "jobs" / "chat.ipynb"


def run_chat_job(project_dir, tmp_path):
    "Run the chat job notebook's code cells with `project_dir` (what papermill or voila do), in a fresh interpreter."
    cells = ["".join(c["source"]) for c in json.loads(CHAT_JOB.read_text())["cells"] if c["cell_type"] == "code"]
    cells[1] = f"project_dir = {str(project_dir)!r}"
    script = tmp_path / "chat_job.py"; script.write_text("\n".join(c for c in cells if c.strip() not in ("ui",)))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)


def test_chat_job_never_writes_demo_data_into_a_used_folder(tmp_path):
    mine = tmp_path / "mine"; mine.mkdir()
    (mine / "notes.txt").write_text("mine"); (mine / "sma_project.json").write_text('{"seq_len": 32}')
    p = run_chat_job(mine, tmp_path)
    assert p.returncode != 0 and "not empty; demo_project writes its demo data only into a new or empty folder" in p.stderr, p.stderr[-2000:]
    assert sorted(x.name for x in mine.iterdir()) == ["notes.txt", "sma_project.json"] and (mine / "sma_project.json").read_text() == '{"seq_len": 32}'


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    from sma_kit.widgets import app
    from sma_kit.chat import demo_project
    proj = demo_project(tmp_path_factory.mktemp("chat") / "demo")
    return app(proj, seed=0)


def no_traceback(*ws):
    for w in ws: assert "Traceback" not in w.value


def test_chat_reply_history_and_gates(ui):
    chat, viz = ui.chat, ui.viz
    chat.prompt.value = ""
    chat._on_msg(chat.prompt, {"event": "submit"}, [])            # Enter with nothing typed
    assert chat.message == "empty prompt: type some text first" and chat._thread is None and chat.history == []
    chat.prompt.value = "the court held"
    chat._on_msg(chat.prompt, {"event": "submit"}, [])            # Enter
    assert chat.busy and "thinking" in chat.log.value
    res = chat.wait(120)
    assert chat.error is None and len(chat.history) == 2 and chat.history[0] == ("user", "the court held")
    assert chat.log.value.count('class="sma-tok"') == res["n_tokens"] >= 1 and "you:</b> the court held" in chat.log.value
    assert "sma-legend" in chat.legend.value and viz.png[:4] == b"\x89PNG" and viz.gates.shape[2] == 3
    chat.send.click()                                             # Send with an empty box again
    assert chat.message.startswith("empty prompt") and len(chat.history) == 2
    chat.ask("z" * 300); chat.wait(120)                           # longer than the whole window
    assert "only its last 40 tokens were used" in chat.message and len(chat.history) == 4
    assert chat.history[2] == ("user", "z" * 300)
    no_traceback(chat.status, chat.log, viz.status)


def test_panel_add_delete_and_bad_input(ui):
    panel, mgr, chat = ui.panel, ui.manager, ui.chat
    assert mgr.list_specialists() == ["law", "math"] and list(panel.delete_buttons) == ["law", "math"]
    for name, msg in [("Bad Name", "invalid"), ("law", "already exists"), ("nope", "no corpus folder")]:
        panel.name.value = name; panel.add.click()
        assert msg in panel.message and not panel.busy, (name, panel.message)
    # a corpus the manager rejects while training: a message in the panel, the project unchanged
    (mgr.data / "bin").mkdir(); (mgr.data / "bin" / "x.txt").write_bytes(b"\x00\x01\x02" * 200)
    panel.add_specialist("bin"); panel.wait(120)
    assert panel.message.startswith("training 'bin' failed:") and "binary" in panel.message, panel.message
    assert mgr.list_specialists() == ["law", "math"] and not list(mgr.outputs.glob(".shiftable.*"))
    assert "Traceback" in panel.traceback   # kept for debugging, not shown
    # add code; a second add and a delete while it trains are refused; the chat still answers meanwhile
    seen = []
    panel.progress.observe(lambda ch: seen.append(ch["new"]), "value")
    panel.steps = 24   # enough steps for the progress bar to show intermediate values
    panel.name.value = "code"; panel.add.click()
    assert panel.busy and panel.add.disabled and panel.progress.max == 24
    panel.name.value = "law"; panel.add.click()
    assert panel.message == "busy training 'code'; try again when it has finished"
    panel.delete_buttons["law"].click()
    assert panel.message.startswith("busy training 'code'")
    chat.ask("the cat"); chat.wait(120)
    assert chat.error is None
    assert panel.wait(180)["specialists"] == ["law", "math", "code"]
    assert list(panel.delete_buttons) == ["law", "math", "code"] and mgr.list_specialists() == ["law", "math", "code"]
    assert panel.progress.value == panel.progress.max == 24 and panel.message.startswith("added 'code' (24 steps")
    assert any(0 < v < 24 for v in seen), seen
    # delete clicked twice: one delete; clicked again later: a message
    b = panel.delete_buttons["math"]
    b.click(); b.click()
    assert panel.message.startswith("busy deleting 'math'")
    panel.wait(120)
    assert mgr.list_specialists() == ["law", "code"] and list(panel.delete_buttons) == ["law", "code"]
    assert any(mgr.data.glob(".trash/math-*/math.txt"))
    b.click()
    assert panel.message == "'math' is not a specialist (any more); nothing deleted" and mgr.list_specialists() == ["law", "code"]
    panel.delete("code"); panel.wait(120)
    assert panel.delete_buttons["law"].disabled
    panel.delete_buttons["law"].click()
    assert panel.message == "cannot delete 'law': it is the last specialist" and mgr.list_specialists() == ["law"]
    # the chat and the gates follow the new model
    chat.ask("the cat"); chat.wait(120)
    assert chat.last["gate"]["experts"] == ["base", "law"] and list(ui.viz.expert.options) == ["all experts", "base", "law"]
    no_traceback(panel.status, panel.pending, chat.status)


def test_console(ui):
    from sma_kit.chat import chat_console
    lines, said = iter(["  ", "the dog", "/quit", "never read"]), []
    hist = chat_console(ui.manager, input=lambda _: next(lines), print=said.append, max_new_tokens=6, seed=0)
    assert "(empty prompt: type some text, or /quit)" in said and sum(s.startswith("model> ") for s in said) == 1
    assert hist[0] == ("user", "the dog") and len(hist) == 2 and next(lines) == "never read"
