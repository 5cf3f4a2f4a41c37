"""PyTorch/XLA trainer (sma_kit.torch.xla).

Run inside the venv that `.ci/xla_venv.sh` builds (torch 2.9.0 + torch_xla 2.9.0):
    PJRT_DEVICE=CPU "$(bash .ci/xla_venv.sh | tail -1)/bin/python" -m pytest -q tests/test_xla.py
Where torch_xla is not installed (the main venv) the XLA tests skip and the error path of `require_xla` is tested.
"""
import copy, json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from sma_kit.config import ModelConfig, SmaError, TrainConfig, preset
from sma_kit.data import MixtureSampler
from sma_kit.torch import xla as X
from sma_kit.torch.model import DecoderLM
from sma_kit.torch.train import Trainer, load_model, load_weights, train_generalist

HAVE_XLA = X.xla_available()
needs_xla = pytest.mark.skipif(not HAVE_XLA, reason="torch_xla is not installed: run tests/test_xla.py in the venv built by .ci/xla_venv.sh")
if HAVE_XLA:
    os.environ.setdefault("PJRT_DEVICE", "CPU")
    # start the runtime before any backward pass: autograd sizes its device queues on the first one (SPMD must come first of all)
    SPMD_CHILD = __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "spmd"
    X.xla_device(spmd=SPMD_CHILD)

STREAM = np.random.default_rng(1).integers(0, 512, 20_000).astype(np.int64)


def run(trainer_cls, model, out, steps=10, batch=4, seq=32, log_every=1, eval_every=None, **kw):
    "Train `model` on the random stream; returns (trainer, result, per-step train losses from metrics.jsonl)."
    tc = TrainConfig(batch_size=batch, seq_len=seq, max_steps=steps, log_every=log_every, eval_every=eval_every or steps,
                     warmup_steps=3, seed=0, **{k: kw.pop(k) for k in ("stop_after",) if k in kw})
    device = "cpu" if trainer_cls is Trainer else kw.pop("device", "xla")
    resume = kw.pop("resume", False)
    tr = trainer_cls(model, None, MixtureSampler({"general": STREAM[:16_000]}, seq, seed=0), {"general": STREAM[16_000:]},
                     tc, out, device, progress=False, **kw)
    res = tr.fit(resume=resume)
    losses = [json.loads(l)["train_loss"] for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return tr, res, losses


# -- without torch_xla ---------------------------------------------------------------------------------------
@pytest.mark.skipif(HAVE_XLA, reason="torch_xla is installed here; the missing-package path is tested in the main venv")
def test_require_xla_says_what_to_install():
    for f in (X.require_xla, lambda: X.xla_train_generalist("data", "out"), lambda: X.xla_device("xla")):
        with pytest.raises(SmaError) as e: f()
        msg = str(e.value)
        assert "not installed" in msg and "pip install torch==2.9.0 torch_xla==2.9.0" in msg and "\n" not in msg


def test_mismatched_torch_is_one_line(monkeypatch):
    with pytest.raises(SmaError, match=r"torch_xla 2\.9\.0 needs torch==2\.9\.0, but torch 2\.13\.0\+cpu is installed"):
        X.check_xla_versions("2.13.0+cpu", "2.9.0")


@needs_xla
def test_require_xla_checks_the_installed_torch(monkeypatch):
    "The real check, before torch_xla would be imported against the wrong torch."
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    with pytest.raises(SmaError, match="needs torch==2.9.0") as e: X.require_xla()
    assert "\n" not in str(e.value)


# -- one XLA device (the first tests here count compiles: they run before anything else compiles) -------------
@needs_xla
def test_same_graph_compiles_once_and_spmd_comes_too_late():
    import torch_xla
    assert X.require_xla().__name__ == "torch_xla"
    with pytest.raises(SmaError, match="cuda:0"): X.xla_device("cuda:0")
    dev = X.xla_device("xla")
    n0 = X.compile_count()
    a = torch.arange(6.0).reshape(2, 3).to(dev)
    for _ in range(3):  # the same small graph three times: compiled once
        with torch_xla.compile(): b = (a * 2 + 1).sum(0)
    assert X.compile_count() - n0 == 1 and torch.equal(b.cpu(), torch.tensor([8.0, 12.0, 16.0]))
    with pytest.raises(SmaError, match="before the XLA device is first used"): X.xla_device(spmd=True)


@needs_xla
def test_to_xla_sends_data_not_a_graph():
    import torch_xla
    dev = X.xla_device("xla")
    n0 = X.compile_count()
    z = X.to_xla(torch.zeros(()), dev); torch_xla.sync()
    assert X.compile_count() == n0 and float(z) == 0.0                 # data: nothing to compile
    z = torch.zeros(()).to(dev); torch_xla.sync()
    assert X.compile_count() == n0 + 1                                  # a constant: a graph of its own
    b = X.put_batch(np.arange(8).reshape(2, 4), dev)
    assert b.device == dev and b.cpu().tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


@needs_xla
def test_xla_eval_loss_equals_eager_with_one_graph():
    from sma_kit.torch.train import eval_loss
    torch.manual_seed(0); m = DecoderLM(preset("tiny"))
    val = np.random.default_rng(0).integers(0, 512, 32 * 5 + 1)           # 5 windows of 32: batches of 4 and a padded 1
    ref = eval_loss(m, val, 32, 4)
    n0 = X.compile_count()
    got = X.xla_eval_loss(copy.deepcopy(m).to(X.xla_device()), val, 32, 4)
    assert abs(got - ref) < 1e-4 and X.compile_count() - n0 == 1, (got, ref, X.compile_count() - n0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    "The same tiny model trained 10 steps by the eager CPU trainer and by the XLA trainer."
    d = tmp_path_factory.mktemp("xla_pair")
    torch.manual_seed(0)
    base = DecoderLM(preset("tiny"))
    cpu = run(Trainer, copy.deepcopy(base), d / "cpu")
    xla = run(X.XlaTrainer, copy.deepcopy(base), d / "xla")
    return base, cpu, xla, d


@needs_xla
def test_ten_steps_match_cpu_eager(pair):
    _, (_, rc, cpu_losses), (tx, rx, xla_losses), _ = pair
    assert tx.device.type == "xla" and len(cpu_losses) == len(xla_losses) == 10
    diff = max(abs(a - b) for a, b in zip(cpu_losses, xla_losses))
    assert diff < 1e-3, (cpu_losses, xla_losses)
    assert abs(rc["best_val_loss"] - rx["best_val_loss"]) < 1e-3
    assert cpu_losses[-1] < cpu_losses[0]   # it does learn


@needs_xla
def test_checkpoint_loads_on_cpu_with_identical_logits(pair):
    _, _, (tx, _, _), d = pair
    out = d / "xla"
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    cpu = load_weights(DecoderLM(ModelConfig.load(out / "config.json")), out / "model.safetensors").eval()
    dev_state = {k: v.cpu() for k, v in tx.model.state_dict().items()}
    assert all(torch.equal(cpu.state_dict()[k], v) for k, v in dev_state.items())
    twin = DecoderLM(cpu.cfg).eval(); twin.load_state_dict(dev_state)
    ids = (torch.arange(64).reshape(2, 32) * 7) % 512
    with torch.no_grad():
        assert torch.equal(cpu(ids), twin(ids))                                   # the file is the device's weights, bit for bit
        assert torch.allclose(cpu(ids), tx.model.eval()(ids.to(tx.device)).cpu(), atol=1e-5)


@needs_xla
def test_steady_state_step_does_not_recompile(tmp_path):
    "Shapes used by no other test, so every graph here is compiled in this test: 1 train graph + 1 eval graph."
    torch.manual_seed(0)
    n0 = X.compile_count()
    tr, res, losses = run(X.XlaTrainer, DecoderLM(preset("tiny")), tmp_path / "r", steps=30, batch=3, seq=24, log_every=7, eval_every=10)
    assert res["step"] == 30 and len(losses) == 7       # logs at 7, 10, 14, 20, 21, 28, 30: the lr changed every step
    assert len(tr.step_compiles) == 30 and tr.step_compiles[0] == 1 and tr.steady_state_recompiles() == 0, tr.step_compiles
    assert res["xla"]["compiles"] == {"train": 1, "eval": 1}
    assert X.compile_count() - n0 == 2


@needs_xla
def test_interrupt_and_resume_on_xla(pair, tmp_path):
    "stop_after saves train_state (the lr as a float, AdamW state from the device); resuming gives the uninterrupted run."
    base, _, (tx, _, full), _ = pair
    _, r1, _ = run(X.XlaTrainer, copy.deepcopy(base), tmp_path / "r", stop_after=4)
    assert r1["interrupted"] and r1["step"] == 4
    tr, r2, losses = run(X.XlaTrainer, copy.deepcopy(base), tmp_path / "r", resume=True)
    assert r2["step"] == 10 and len(losses) == 10
    assert max(abs(a - b) for a, b in zip(losses, full)) < 1e-5
    for k, v in tx.model.state_dict().items(): assert torch.allclose(tr.model.state_dict()[k].cpu(), v.cpu(), atol=1e-5), k


@needs_xla
def test_xla_train_generalist_writes_the_shared_format(tiny_corpus, tmp_path):
    "The generalist run with the XLA trainer swapped in: a model dir that CPU `load_model` reads, close to the CPU run."
    tc = dict(batch_size=4, seq_len=32, max_steps=6, eval_every=3, warmup_steps=2, seed=0)
    cfg = dict(d_model=32, n_layers=1, n_heads=2, ffn_dim=64)
    rx = X.xla_train_generalist(tiny_corpus, tmp_path / "xla", cfg, TrainConfig(**tc), tokenizer="byte", progress=False)
    rc = train_generalist(tiny_corpus, tmp_path / "cpu", cfg, TrainConfig(**tc), tokenizer="byte", device="cpu", progress=False)
    assert rx["xla"]["compiles"] == {"train": 1, "eval": 1} and rx["step"] == 6
    assert abs(rx["best_val_loss"] - rc["best_val_loss"]) < 1e-3
    mx, tok = load_model(tmp_path / "xla")
    mc, _ = load_model(tmp_path / "cpu")
    ids = torch.tensor([tok.encode("3 little pigs went to market")])
    with torch.no_grad(): assert torch.allclose(mx(ids), mc(ids), atol=1e-3)
    from sma_kit.torch import train as T
    assert T.Trainer is Trainer and T.pick_device("cpu").type == "cpu"      # nothing left swapped


@needs_xla
def test_shiftable_specialists_on_xla(tiny_corpus, tmp_path):
    "The shiftable model trains on XLA too (its gate reads values back, so several graphs per step, but none recompiles)."
    from sma_kit.torch.train import train_specialists
    tc = dict(batch_size=4, seq_len=32, max_steps=6, eval_every=3, warmup_steps=2, seed=0)
    train_generalist(tiny_corpus, tmp_path / "gen", dict(d_model=32, n_layers=1, n_heads=2, ffn_dim=64), TrainConfig(**tc),
                     tokenizer="byte", device="cpu", progress=False)
    rx = X.xla_train_specialists(tmp_path / "gen", tmp_path / "xla", data_dir=tiny_corpus, tc=TrainConfig(**tc), progress=False)
    rc = train_specialists(tmp_path / "gen", tmp_path / "cpu", data_dir=tiny_corpus, tc=TrainConfig(**tc), device="cpu", progress=False)
    assert abs(rx["best_val_loss"] - rc["best_val_loss"]) < 1e-3 and rx["xla"]["steady_state_recompiles"] == 0, (rx, rc)
    m, _ = load_model(tmp_path / "xla")
    assert type(m).__name__ == "ShiftableLM" and m.specialists == ["math"]


@needs_xla
def test_bad_device_and_mesh_are_one_line():
    with pytest.raises(SmaError, match="not an XLA device"): X.xla_device("cuda:0")
    with pytest.raises(SmaError, match="xla:0 to xla:"): X.xla_device("xla:99")
    with pytest.raises(SmaError, match="before the XLA device is first used"): X.xla_mesh("1,1")   # this process is not SPMD
    with pytest.raises(SmaError, match="--mesh"): X.mesh_shape("3,3", 8)


# -- SPMD: a child process, since SPMD is a switch for the whole process ----------------------------------------
def _spmd_child(out: str, mesh: str):
    import torch_xla, torch_xla.runtime as xr
    assert xr.is_spmd()
    torch.manual_seed(0)
    base = DecoderLM(preset("tiny"))
    _, rc, cpu_losses = run(Trainer, copy.deepcopy(base), Path(out) / "cpu", batch=8)
    n0 = X.compile_count()
    tx, rx, xla_losses = run(X.XlaTrainer, copy.deepcopy(base), Path(out) / "xla", batch=8, mesh=mesh)
    compiles = X.compile_count() - n0
    q = tx.model.blocks[0].attn.qkv_proj.weight
    loaded = load_weights(DecoderLM(base.cfg), Path(out) / "xla" / "model.safetensors").eval()
    ids = (torch.arange(64).reshape(2, 32) * 7) % 512
    with torch.no_grad(): logit_diff = float((loaded(ids) - tx.model.eval()(ids.to(tx.device)).cpu()).abs().max())
    try: X.XlaTrainer(copy.deepcopy(base), None, MixtureSampler({"g": STREAM}, 32), {}, TrainConfig(batch_size=6, seq_len=32, max_steps=1), Path(out) / "bad", mesh=mesh)
    except SmaError as e: bad_batch = str(e)
    print("RESULT " + json.dumps({
        "devices": xr.global_runtime_device_count(), "mesh": rx["xla"]["mesh"], "cpu_losses": cpu_losses, "xla_losses": xla_losses,
        "cpu_val": rc["best_val_loss"], "xla_val": rx["best_val_loss"], "compiles": compiles, "report": rx["xla"],
        "q_sharding": torch_xla._XLAC._get_xla_sharding_spec(q), "moment_sharding": torch_xla._XLAC._get_xla_sharding_spec(tx.opt.state[q]["exp_avg"]),
        "logit_diff": logit_diff, "bad_batch": bad_batch}))


@needs_xla
def test_spmd_fsdp_over_8_cpu_devices_matches(tmp_path):
    env = {**os.environ, "PJRT_DEVICE": "CPU", "CPU_NUM_DEVICES": "8", "TF_CPP_MIN_LOG_LEVEL": "2"}
    p = subprocess.run([sys.executable, __file__, "spmd", str(tmp_path), "2,4"], capture_output=True, text=True, env=env, timeout=900)
    line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert p.returncode == 0 and line, p.stdout[-2000:] + p.stderr[-4000:]
    r = json.loads(line[len("RESULT "):])
    assert r["devices"] == 8 and r["mesh"] == {"data": 2, "fsdp": 4}
    assert max(abs(a - b) for a, b in zip(r["cpu_losses"], r["xla_losses"])) < 1e-3, r
    assert abs(r["cpu_val"] - r["xla_val"]) < 1e-3
    assert r["report"]["compiles"] == {"train": 1, "eval": 1} and r["report"]["steady_state_recompiles"] == 0 and r["compiles"] == 2, r
    # qkv_proj [out, d] split over fsdp (4) on its input side and replicated over data (2); its AdamW moment likewise
    assert r["q_sharding"].startswith("{devices=[1,4,2]") and "last_tile_dim_replicate" in r["q_sharding"], r["q_sharding"]
    assert r["moment_sharding"] == r["q_sharding"]
    assert r["logit_diff"] < 1e-5
    assert "--batch_size 6 is not divisible by the 8 devices" in r["bad_batch"]


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "spmd":
    _spmd_child(sys.argv[2], sys.argv[3])
