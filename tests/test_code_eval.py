"""Tests for sma_kit.code_eval: dataset scoring, adversarial containment of the sandbox, pass@k and the CLI.

MBPP tests need the real data: set SMA_DATA_DIR (CI does); without it they are skipped with a message.
"""
import json, os, random, secrets, shutil, subprocess, sys, tempfile, textwrap, time
import pytest

import sma_kit.code_eval as ce
from sma_kit.code_eval import (pass_at_k, estimate_pass_at_k, run_program, run_many, score_samples, read_humaneval,
                               read_mbpp, default_mbpp_path, wrong_completion, sandbox_mode, available_sandbox_modes,
                               generate_samples, truncate_completion, HUMANEVAL_STOPS)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = available_sandbox_modes()
KERNEL = sandbox_mode() == "bwrap"
needs_bwrap = pytest.mark.skipif(not KERNEL, reason="kernel-isolation tests need bubblewrap (Debian package 'bubblewrap')")
needs_mbpp = pytest.mark.skipif(default_mbpp_path() is None or not os.path.isfile(default_mbpp_path() or ""),
                                reason="SMA_DATA_DIR not set (or no code_eval/mbpp/mbpp.jsonl under it): MBPP tests skipped")


@pytest.fixture(scope="module")
def he():
    return read_humaneval()


def _sandbox_pids():
    return ce._uid_pids(ce.SANDBOX_UID_BASE, 2**31)


def _leftover_tmpdirs():
    return {d for d in os.listdir(tempfile.gettempdir()) if d.startswith("sma_sbx_")}


# ---------------------------------------------------------------- datasets

def test_humaneval_canonical_all_pass_and_wrong_all_fail(he):
    t0 = time.time()
    good = score_samples([{"task_id": t, "completion": p["canonical_solution"]} for t, p in he.items()],
                         k=(1,), progress=False)
    t_good = time.time() - t0
    assert good["n_tasks"] == 164
    assert good["pass@1"] == 1.0, [r for r in good["results"] if r["status"] != "passed"]
    bad = score_samples([{"task_id": t, "completion": wrong_completion("humaneval", p)} for t, p in he.items()],
                        k=(1,), progress=False)
    assert bad["pass@1"] == 0.0, [r["task_id"] for r in bad["results"] if r["status"] == "passed"]
    assert bad["status_counts"]["failed"] == 164
    print(f"HumanEval canonical 164 programs: {t_good:.1f}s ({good['sandbox_mode']})")


@needs_mbpp
def test_mbpp_reference_all_pass():
    mb = read_mbpp()
    assert len(mb) == 500 and set(mb) == set(range(11, 511))
    t0 = time.time()
    res = score_samples([{"task_id": t, "completion": p["code"]} for t, p in mb.items()], "mbpp", k=(1,),
                        problems=mb, progress=False)
    assert res["pass@1"] == 1.0, [r for r in res["results"] if r["status"] != "passed"]
    print(f"MBPP reference 500 programs: {time.time() - t0:.1f}s")


@needs_mbpp
def test_mbpp_wrong_solutions_fail():
    mb = read_mbpp()
    ids = sorted(random.Random(0).sample(sorted(mb), 100))   # deterministic sample; the benchmark runs all 500
    res = score_samples([{"task_id": t, "completion": wrong_completion("mbpp", mb[t])} for t in ids], "mbpp",
                        k=(1,), problems=mb, progress=False)
    assert res["pass@1"] == 0.0, [r["task_id"] for r in res["results"] if r["status"] == "passed"]


@needs_mbpp
def test_mbpp_prompt_and_ids():
    mb = read_mbpp()
    p = mb[11]["prompt"]
    assert p.count("[BEGIN]") == 4 and p.count("[DONE]") == 3
    shots = ce._mbpp_rows(None)
    for i in (2, 3, 4):
        assert shots[i]["text"] in p
    assert mb[11]["text"] in p.rsplit("[DONE]", 1)[1]


def test_generate_samples_with_canonical_oracle(he):
    sub = {t: he[t] for t in list(he)[:10]}
    table = {p["prompt"]: p["canonical_solution"] for p in sub.values()}
    smp = generate_samples(lambda prompts, **kw: [table[q] + "\nif __name__ == '__main__':\n    1/0\n" for q in prompts],
                           "humaneval", n=2, problems=sub, batch_size=3)
    assert len(smp) == 20
    res = score_samples(smp, "humaneval", k=(1, 2), problems=sub, progress=False)
    assert res["pass@1"] == 1.0 and res["pass@2"] == 1.0


# ---------------------------------------------------------------- pass@k

@pytest.mark.parametrize("n,c,k,want", [(5, 2, 1, 0.4), (5, 2, 2, 0.7), (5, 0, 1, 0.0), (5, 0, 5, 0.0),
                                        (5, 4, 2, 1.0), (5, 5, 1, 1.0), (10, 3, 1, 0.3), (4, 1, 2, 0.5)])
def test_pass_at_k_hand_values(n, c, k, want):
    assert abs(pass_at_k(n, c, k) - want) < 1e-12


def test_pass_at_k_matches_binomials_and_vector():
    import math
    for n, c, k in [(200, 13, 10), (200, 1, 100), (1000, 999, 1), (50, 25, 25)]:
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert abs(pass_at_k(n, c, k) - exact) < 1e-12
    assert list(estimate_pass_at_k([5, 10], [2, 3], 1)) == pytest.approx([0.4, 0.3])
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_truncate_completion():
    assert truncate_completion("    return 1\n\n\ndef other():\n    pass\n", HUMANEVAL_STOPS) == "    return 1\n\n"
    assert truncate_completion("    return 1\nprint(f(2))", HUMANEVAL_STOPS) == "    return 1"
    assert truncate_completion("    return 1", HUMANEVAL_STOPS) == "    return 1"


# ---------------------------------------------------------------- sandbox basics

def test_sandbox_mode_reported():
    assert MODES[-1] == "limits" and sandbox_mode() in MODES
    if os.environ.get("SMA_SANDBOX_MODE"):
        assert sandbox_mode() == os.environ["SMA_SANDBOX_MODE"]
    elif shutil.which("bwrap"):
        assert sandbox_mode() == "bwrap", "bubblewrap is installed but does not work"
    else:
        print("NOTE: bubblewrap missing, sandbox mode is", sandbox_mode())


def test_stdin_closed_env_scrubbed_tmp_removed():
    before = _leftover_tmpdirs()
    os.environ["SMA_TEST_SECRET"] = "hunter2"
    try:
        prog = textwrap.dedent("""
            import os, sys
            assert 'SMA_TEST_SECRET' not in os.environ and 'SMA_DATA_DIR' not in os.environ
            assert os.environ['PATH'] == '/usr/local/bin:/usr/bin:/bin'
            try:
                input()
            except EOFError:
                pass
            else:
                raise SystemExit('stdin was readable')
            open('scratch.txt', 'w').write('ok')
            assert open('scratch.txt').read() == 'ok'
        """)
        r = run_program(prog)
        assert r.passed, r
    finally:
        del os.environ["SMA_TEST_SECRET"]
    assert _leftover_tmpdirs() <= before


@pytest.mark.parametrize("mode", MODES)
def test_threads_in_programs(mode):
    thr = "import threading\nt = threading.Thread(target=lambda: None)\nt.start(); t.join()"
    assert run_program([thr, "assert True"], mode=mode).passed
    t0 = time.time()
    r = run_program([thr, "assert False"], mode=mode, timeout=5)
    assert r.status == "failed" and time.time() - t0 < 3, r
    # a thread still running when the tests start could patch them: the program fails
    daemon = "import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()"
    r = run_program([daemon, "assert 1"], mode=mode, timeout=5)
    assert r.status == "failed" and "left threads running" in r.error, r


def test_results_in_order_and_parallel():
    progs = [f"assert {i} % 3 != 0" for i in range(9)]
    res = run_many(progs, workers=2, progress=False)
    assert [r.passed for r in res] == [i % 3 != 0 for i in range(9)]


# ---------------------------------------------------------------- adversarial programs (guard on, every mode)

EARLY_EXITS = {
    "sys.exit(0)": "import sys\nsys.exit(0)",
    "os._exit(0)": "import os\nos._exit(0)",
    "raise SystemExit": "raise SystemExit(0)",
    "StopIteration": "raise StopIteration",
    "KeyboardInterrupt": "raise KeyboardInterrupt",
    "interrupt_main": "import _thread, time\n_thread.interrupt_main()\ntime.sleep(0.2)",
    "fake marker": "print('passed')\nprint('0' * 32)\nimport os\nos._exit(0)",
    "exit in thread": "import threading, os\nthreading.Thread(target=lambda: os._exit(0)).start()\nimport time\ntime.sleep(1)",
    "kill self": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
}
REDEFINITIONS = {
    "AssertionError": "import builtins\nclass AssertionError(Exception): pass\nbuiltins.AssertionError = AssertionError",
    "builtins.abs": "import builtins\nbuiltins.abs = lambda x: 0",
    "sys.modules": "import sys, types\nm = types.ModuleType('math')\nm.fabs = lambda x: 0.0\nsys.modules['math'] = m",
    "stdout/excepthooks": "import sys, io\nsys.stdout = io.StringIO(); sys.excepthook = lambda *a: None\nsys.unraisablehook = lambda *a: None",
    "settrace": "import sys\ndef tr(f, e, a):\n    return tr\nsys.settrace(tr)",
    "__builtins__": "__builtins__ = dict(vars(__builtins__), abs=lambda x: 0)",
    "patcher thread": ("import threading, time, builtins\ndef p():\n    for _ in range(400):\n"
                       "        builtins.abs = lambda x: 0\n        time.sleep(0.005)\n"
                       "threading.Thread(target=p, daemon=True).start()"),
    "frame walk": "import sys\nf = sys._getframe()\nassert f.f_back is None\nimport gc\ngc.get_objects()",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(EARLY_EXITS))
def test_early_exit_is_not_a_pass(mode, name):
    r = run_program([EARLY_EXITS[name], "assert False, 'tests ran'"], mode=mode, timeout=5)
    assert r.status != "passed", r


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(REDEFINITIONS))
def test_redefinitions_do_not_turn_failure_into_pass(mode, name):
    test = "import math\nassert abs(-1) == 0 or math.fabs(-1.0) == 0.0"   # false with the real builtins/math
    r = run_program([REDEFINITIONS[name], test], mode=mode)
    assert r.status == "failed", r


def test_frame_walk_finds_no_harness_frame():
    assert run_program("import sys\nassert sys._getframe().f_back is None").passed
    r = run_program("import gc\ngc.get_referrers(gc)")
    assert r.status == "failed" and "blocked" in r.error, r


@pytest.mark.parametrize("mode", MODES)
def test_infinite_loop_times_out(mode):
    t0 = time.time()
    r = run_program("while True:\n    pass", timeout=1, mode=mode)
    assert r.status == "timeout", r
    assert time.time() - t0 < 6


@pytest.mark.parametrize("mode", MODES)
def test_memory_hog_is_contained(mode):
    r = run_program("x = bytearray(16 << 30)", memory_mb=512, mode=mode)
    assert r.status in ("failed", "crashed") and "MemoryError" in r.error, r
    r = run_program("xs = []\nwhile True:\n    xs.append(bytearray(1 << 24))", memory_mb=512, mode=mode, timeout=10)
    assert r.status in ("failed", "crashed"), r


@pytest.mark.parametrize("mode", MODES)
def test_output_flood_is_bounded(mode):
    r = run_program("while True:\n    print('x' * 100000)", fsize_mb=4, mode=mode, timeout=5)
    assert r.status in ("crashed", "failed", "timeout") and len(r.stdout) <= 4096, r.status


@pytest.mark.parametrize("mode", MODES)
def test_guard_blocks_network_processes_and_writes(mode):
    tag = secrets.token_hex(8)
    outside = [f"/tmp/sma_escape_{tag}", os.path.join(REPO, f"sma_escape_{tag}")]
    progs = {
        "socket": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)",
        "socket-local": "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))",
        "os.system": f"import os\nos.system('touch {outside[0]}')",
        "subprocess": f"import subprocess\nsubprocess.run(['touch', '{outside[0]}'])",
        "fork": "import os\nos.fork()",
        "write /tmp": f"open('{outside[0]}', 'w').write('x')",
        "write repo": f"open('{outside[1]}', 'w').write('x')",
        "os.open": f"import os\nos.open('{outside[0]}', os.O_CREAT | os.O_WRONLY)",
        "dir_fd": f"import os\nd = os.open('/tmp', os.O_RDONLY)\nos.open('sma_escape_{tag}', os.O_CREAT | os.O_WRONLY, dir_fd=d)",
        "proc mem": "open('/proc/self/mem', 'rb').read(1)",
        "ctypes": "import ctypes",
    }
    for name, prog in progs.items():
        r = run_program(prog, mode=mode)
        assert r.status == "failed", (name, r)
    for p in outside:
        assert not os.path.exists(p), p


# ---------------------------------------------------------------- kernel isolation alone (guard off)

@needs_bwrap
def test_kernel_network_isolation():
    r = run_program("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)", guard=False)
    assert r.status == "failed" and "unreachable" in r.error.lower(), r
    r = run_program("import socket\nsocket.getaddrinfo('pypi.org', 443)", guard=False)
    assert r.status == "failed", r


@needs_bwrap
def test_kernel_filesystem_isolation_with_shell_commands():
    tag = secrets.token_hex(8)
    targets = [f"/tmp/sma_escape_{tag}", os.path.join(REPO, f"sma_escape_{tag}"), f"/var/tmp/sma_escape_{tag}",
               f"/dev/shm/sma_escape_{tag}", f"/root/sma_escape_{tag}"]
    cmds = " ; ".join(f"touch {t}" for t in targets)
    prog = textwrap.dedent(f"""
        import os, subprocess
        os.system({cmds!r})
        subprocess.run(['sh', '-c', {cmds!r}])
        for t in {targets!r}:
            try:
                open(t, 'w').write('x')
            except OSError:
                pass
        os.system('kill -9 -1')   # would kill every process of this uid; only reaches the sandbox
    """)
    r = run_program(prog, guard=False)
    assert r.status in ("passed", "failed", "crashed"), r
    for t in targets:
        assert not os.path.exists(t), t
    # the sandbox sees its own private /tmp and nothing of the host's processes
    r = run_program("import os\nassert len([p for p in os.listdir('/proc') if p.isdigit()]) <= 3", guard=False)
    assert r.passed, r


@needs_bwrap
def test_fork_bomb_is_contained_and_host_survives():
    t0 = time.time()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    r = run_program(bomb, timeout=2, guard=False, nproc=16)
    assert r.status == "timeout", r
    assert time.time() - t0 < 15
    assert _sandbox_pids() == [], "fork bomb processes survived"
    # a thread bomb or a fork bomb running next to normal programs (which need a thread each):
    # the neighbours still pass, because every sandbox has its own uid and so its own RLIMIT_NPROC budget
    thread_bomb = ("import threading, time\nwhile True:\n    try:\n"
                   "        threading.Thread(target=time.sleep, args=(60,)).start()\n    except RuntimeError:\n        pass")
    normal = "import threading, time\nt = threading.Thread(target=time.sleep, args=(0.05,))\nt.start(); t.join()\nassert sum(range(10)) == 45"
    for b in (thread_bomb, bomb):
        res = run_many([b] + [normal] * 6, workers=2, progress=False, timeout=3, guard=False, nproc=16)
        assert res[0].status == "timeout", res[0]
        assert all(x.passed for x in res[1:]), res[1:]
        assert _sandbox_pids() == []
    assert run_program("pass").passed
    assert os.getloadavg()[0] < 64


@needs_bwrap
def test_sandbox_runs_unprivileged():
    if os.geteuid() != 0:
        pytest.skip("only meaningful when the kit runs as root")
    prog = textwrap.dedent("""
        import os
        assert os.getuid() >= 2_000_000_000 and os.getgid() >= 2_000_000_000 and os.getgroups() == []
        st = open('/proc/self/status').read()
        assert 'CapEff:\\t0000000000000000' in st and 'NoNewPrivs:\\t1' in st
    """)
    r = run_program(prog, guard=False)
    assert r.passed, r


# ---------------------------------------------------------------- CLI

CONSOLE_SCRIPT = """import re, sys
from sma_kit.code_eval import code_eval_cli
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(code_eval_cli())
"""


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    installed = os.path.join(os.path.dirname(sys.executable), "sma_code_eval")
    if os.path.exists(installed):      # the registered console script
        cmd = [installed]
    else:                              # the same wrapper pip generates for console_scripts
        script = d / "sma_code_eval"
        script.write_text(CONSOLE_SCRIPT)
        cmd = [sys.executable, str(script)]

    def run(*args, env=None):
        e = dict(os.environ) if env is None else env
        return subprocess.run(cmd + list(map(str, args)), capture_output=True, text=True, env=e, timeout=300)
    run.dir = d
    return run


def _write(path, recs):
    with open(path, "w") as f:
        for r in recs:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def test_cli_scores_humaneval(cli, he):
    recs = []
    for t in list(he)[:4]:
        recs += [{"task_id": t, "completion": he[t]["canonical_solution"]}, {"task_id": t, "completion": "    return None\n"}]
    f = _write(cli.dir / "s.jsonl", recs)
    out = cli.dir / "res" / "r.json"
    p = cli("--samples", f, "--k", "1,2", "--out", out, "--quiet")
    assert p.returncode == 0, p.stderr
    assert "pass@1: 0.5000" in p.stdout and "pass@2: 1.0000" in p.stdout
    res = json.loads(out.read_text())
    assert res["pass@1"] == 0.5 and res["status_counts"]["passed"] == 4 and len(res["results"]) == 8


@needs_mbpp
def test_cli_scores_mbpp(cli):
    mb = read_mbpp(ids=[11, 12, 13])
    f = _write(cli.dir / "m.jsonl", [{"task_id": t, "completion": p["code"]} for t, p in mb.items()])
    p = cli("--samples", f, "--dataset", "mbpp", "--k", "1", "--quiet")
    assert p.returncode == 0 and "pass@1: 1.0000" in p.stdout, p.stderr


def test_cli_bad_inputs(cli, he):
    good = _write(cli.dir / "g.jsonl", [{"task_id": "HumanEval/0", "completion": "    return False\n"}])
    cases = {
        "missing file": (["--samples", cli.dir / "nope.jsonl"], "nope.jsonl"),
        "bad json": (["--samples", _write(cli.dir / "b.jsonl", [{"task_id": "HumanEval/0", "completion": ""}, "{oops"]),
                      "--k", "1"], "b.jsonl:2"),
        "unknown task": (["--samples", _write(cli.dir / "u.jsonl", [{"task_id": "HumanEval/999", "completion": ""}]),
                          "--k", "1"], "HumanEval/999"),
        "k > n": (["--samples", good, "--k", "1,10"], "k=10"),
        "bad k": (["--samples", good, "--k", "one"], "'one'"),
        "bad dataset": (["--samples", good, "--dataset", "apps"], "'apps'"),
        "missing keys": (["--samples", _write(cli.dir / "k.jsonl", [{"id": 1}]), "--k", "1"], "k.jsonl:1"),
        "no samples arg": ([], "--samples"),
        "mbpp without data": (["--samples", good, "--dataset", "mbpp", "--k", "1"], "SMA_DATA_DIR"),
    }
    for name, (args, needle) in cases.items():
        env = {k: v for k, v in os.environ.items() if k != "SMA_DATA_DIR"} if name == "mbpp without data" else None
        p = cli(*args, env=env)
        assert p.returncode == 2, (name, p.returncode, p.stderr)
        assert "Traceback" not in p.stderr, (name, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (name, p.stderr)


# ---------------------------------------------------------------- the host is fine afterwards

def test_zz_host_is_clean():
    assert _sandbox_pids() == []
    assert not any(n.startswith("sma_escape_") for n in os.listdir("/tmp"))
    assert not any(n.startswith("sma_escape_") for n in os.listdir(REPO))
    assert run_program("assert True").passed
