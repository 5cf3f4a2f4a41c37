"""Tests for sma_kit.generate and sma_kit.qa_eval: answer extraction, likelihood multiple choice, TextLM, sma_evaluate.

GSM8K/PubMedQA/MBPP checks need the real data: set SMA_DATA_DIR (CI does); without it they are skipped with a message.
"""
import json, os, subprocess, sys
from pathlib import Path
from types import SimpleNamespace
import pytest
from collections import Counter
from conftest import one_error_line

from sma_kit.config import SmaError
from sma_kit.qa_eval import (extract_answer, read_gsm8k, read_pubmedqa, read_medqa, pubmedqa_item, eval_mc, eval_gsm8k,
                             mc_baselines, gsm8k_prompt, PUBMEDQA_OPTIONS)

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
MEDQA = [("Which organ pumps blood?", {"A": "the heart", "B": "the liver", "C": "the kidney", "D": "the skin"}, "A"),
         ("Which vitamin is made in sunlight?", {"A": "vitamin C", "B": "vitamin D", "C": "vitamin K", "D": "vitamin B12"}, "B"),
         ("Which cell carries oxygen?", {"A": "neutrophil", "B": "platelet", "C": "red blood cell", "D": "lymphocyte"}, "C"),
         ("Where is insulin made?", {"A": "the pancreas", "B": "the spleen", "C": "the stomach", "D": "the lung"}, "A"),
         ("What does a stethoscope do?", {"A": "cuts", "B": "heats", "C": "cools", "D": "listens to the body"}, "D"),
         ("Which bone is in the thigh?", {"A": "femur", "B": "ulna", "C": "radius", "D": "skull"}, "A")]


def run_evaluate(*args, env=None, tmp=None):
    "Run sma_evaluate (the console script if installed, else the same entry point from a script file)."
    exe = BIN / "sma_evaluate"
    if exe.exists(): cmd = [str(exe)]
    else:
        script = Path(tmp) / "sma_evaluate_entry.py"
        script.write_text("import sys\nfrom sma_kit.qa_eval import evaluate_cli\nsys.exit(evaluate_cli())\n")
        cmd = [sys.executable, str(script)]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=600, env=env or ENV)




@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    "A tiny random generalist, a shiftable model built from it (perturbed 'math' specialist), and a MedQA-style file."
    import torch
    from sma_kit.config import preset
    from sma_kit.tokenizer import byte_tokenizer
    from sma_kit.torch.model import DecoderLM
    from sma_kit.torch.shift import ShiftableLM
    from sma_kit.torch.train import save_model
    root = tmp_path_factory.mktemp("qa")
    tok = byte_tokenizer()
    torch.manual_seed(0)
    gen = DecoderLM(preset("tiny", vocab_size=tok.vocab_size))
    save_model(gen, root / "gen", tok)
    sh = ShiftableLM.from_base_model(gen, ["math"])
    with torch.no_grad():
        for n, p in sh.named_parameters():
            if "_experts.math" in n: p.add_(torch.randn_like(p) * 0.5)
    save_model(sh, root / "shift", tok)
    mq = root / "medqa.jsonl"
    mq.write_text("".join(json.dumps(dict(question=q, options=o, answer_idx=a)) + "\n" for q, o, a in MEDQA))
    return SimpleNamespace(root=root, gen=root / "gen", shift=root / "shift", medqa=mq, tok=tok, model=gen)


# ---------------------------------------------------------------- GSM8K extraction

@pytest.mark.parametrize("text,want", [("9 * 2 = 18\n#### 18", "18"), ("#### 1,080", "1080"), ("The answer is $18.", "18"),
                                       ("#### -10", "-10"), ("costs $2.50 each", "2.5"), ("<<16-3-4=9>>9 eggs", "9"),
                                       ("16-3", "3"), ("109,200,000 dollars", "109200000"), ("#### 7\n#### 8", "7"),
                                       ("nothing", None), ("-$5", "-5")])
def test_extract_answer_formats(text, want):
    assert extract_answer(text) == want


def test_extraction_recovers_every_reference(data_dir):
    for split, n in (("test", 1319), ("train", 7473)):
        recs = read_gsm8k(split, data_dir)
        assert len(recs) == n
        assert sum(extract_answer(r["answer"]) == r["target"] for r in recs) == n
        # without the '####' marker the last-number rule must find the same value
        body = [r["answer"].rsplit("####", 1)[0] + "The answer is " + r["answer"].rsplit("####", 1)[1].strip() + "." for r in recs]
        assert sum(extract_answer(b) == r["target"] for b, r in zip(body, recs)) == n
    assert {"-10", "-3", "2125"} <= {r["target"] for r in read_gsm8k("test", data_dir)}   # negative and large answers


def test_gsm8k_harness_with_stub():
    probs = [dict(id=str(i), question=f"What is {i}+{i}?", target=str(2 * i)) for i in range(6)]
    ans = {gsm8k_prompt(p["question"]): p["target"] for p in probs}
    class Stub:
        name, batch_size = "stub", 4
        def generate(self, prompts, max_new_tokens, temperature=0.0, stop=None, seed=0):
            return [f" so it is {ans[p]}.\n#### {ans[p]}" if int(ans[p]) % 4 == 0 else " #### 1" for p in prompts]
    r = eval_gsm8k(Stub(), probs)
    assert r["n"] == 6 and r["correct"] == 3 and r["accuracy"] == 0.5


# ---------------------------------------------------------------- multiple choice

class Knows:
    "Log-likelihood 0 for the gold option, -5 for the others."
    name, batch_size = "knows", 8
    def __init__(self, items): self.gold = {it["prompt"]: " " + it["options"][it["answer"]] for it in items}
    def loglik(self, pairs): return [0.0 if self.gold[c] == x else -5.0 for c, x in pairs]


def test_mc_picks_the_favoured_option(tiny):
    items = read_medqa(tiny.medqa) + [pubmedqa_item(str(i), dict(QUESTION=f"q{i}", CONTEXTS=["c"], final_decision=d))
                                      for i, d in enumerate(["no", "maybe", "yes"])]
    r = eval_mc(Knows(items), items, chunk=4)
    assert r["accuracy"] == r["accuracy_norm"] == 1.0 and r["n"] == 9
    assert [e["prediction"] for e in r["examples"]] == ["A", "B", "C", "A", "D", "A", "no", "maybe", "yes"]
    # a scorer that prefers the first option is right exactly on the items whose gold is the first option
    class First(Knows):
        def loglik(self, pairs): return [0.0] * len(pairs)
    r = eval_mc(First(items), items)
    assert r["accuracy"] == sum(it["answer"] == 0 for it in items) / 9


def test_mc_length_normalisation():
    items = [pubmedqa_item("1", dict(QUESTION="q", CONTEXTS=["c"], final_decision="maybe"))]
    class PerByte(Knows):
        def loglik(self, pairs): return [-len(x.encode()) * (1.0 if self.gold[c] == x else 1.5) for c, x in pairs]
    r = eval_mc(PerByte(items), items)
    assert (r["accuracy"], r["accuracy_norm"]) == (0.0, 1.0)


def test_baselines(data_dir):
    test = read_pubmedqa("test", data_dir)
    b = mc_baselines(test)
    assert len(test) == 500 and abs(b["chance"] - 1 / 3) < 1e-12 and b["majority_label"] == "yes" and b["majority"] == 276 / 500
    gt = json.loads((data_dir / "medical" / "pubmedqa" / "test_ground_truth.json").read_text())
    assert all(PUBMEDQA_OPTIONS[t["answer"]] == gt[t["id"]] for t in test)
    allq = read_pubmedqa("all", data_dir)
    assert len(allq) == 1000 and {t["id"] for t in test} <= {a["id"] for a in allq}
    assert Counter(PUBMEDQA_OPTIONS[t["answer"]] for t in allq) == {"yes": 552, "no": 338, "maybe": 110}
    assert test[0]["prompt"].startswith("Abstract: ") and test[0]["prompt"].endswith(test[0]["question"] + "\nAnswer:")


# ---------------------------------------------------------------- TextLM

def test_loglik_equals_manual_log_softmax(tiny):
    import torch, torch.nn.functional as F
    from sma_kit.generate import load_lm
    lm, tok = load_lm(tiny.gen), tiny.tok
    pairs = [("Question: is it? Answer:", " yes"), ("", "abc"), ("y" * 150, " truncated context"), ("a", "b" * 70)]
    got = lm.loglik(pairs)
    for (ctx, cont), g in zip(pairs, got):
        c, x = tok.encode(ctx) or [tok.eot_id], tok.encode(cont)[-64:]
        seq = (c + x)[-65:]
        with torch.no_grad(): lp = F.log_softmax(tiny.model.eval()(torch.tensor([seq[:-1]])).float(), -1)[0]
        want = sum(lp[p - 1, seq[p]].item() for p in range(len(seq) - len(x), len(seq)))
        assert abs(g - want) < 1e-4, (ctx[:10], g, want)


def test_generate_cuts_at_stop_strings_and_end_of_text(tiny):
    import torch, torch.nn.functional as F
    from sma_kit.generate import TextLM
    tok = tiny.tok
    script = "Q: 2+2? A: 2 plus 2 is 4. #### 4\n\nQuestion: next"
    ids = tok.encode(script)
    class Scripted(torch.nn.Module):
        "Predicts byte t+1 of the script at position t, then end-of-text."
        def __init__(self):
            super().__init__(); self.cfg = SimpleNamespace(max_seq_len=64); self.w = torch.nn.Parameter(torch.zeros(1)); self.calls = 0
        def new_cache(self, batch_size=1): return [{"k": torch.zeros(batch_size, 1)}]
        def head(self, h): return h             # the stepper asks for hidden states, then the head of the last one
        def hidden(self, idx, cache=None, pos=0, pad=None):
            self.calls += 1                      # a left-padded row's positions start at its first real token
            pad = [0] * idx.shape[0] if pad is None else pad.tolist()
            nxt = [[ids[p + 1] if p + 1 < len(ids) else tok.eot_id for p in range(pos - d, pos - d + idx.shape[1])] for d in pad]
            return F.one_hot(torch.tensor(nxt), tok.vocab_size).float()
    lm = TextLM(Scripted(), tok, "scripted")
    assert lm.generate(["Q: 2+2?"], 200) == [script[7:]]                       # ends at end-of-text
    assert lm.generate(["Q: 2+2?", "Q"], 200, stop=["\n\nQuestion:"]) == [" A: 2 plus 2 is 4. #### 4", ": 2+2? A: 2 plus 2 is 4. #### 4"]
    lm.model.calls = 0
    assert lm.generate(["Q: 2+2?"], 200, stop=["####"]) == [" A: 2 plus 2 is 4. "]
    assert lm.model.calls <= len(" A: 2 plus 2 is 4. ####") + 1                 # stopped early, not at 200 tokens
    assert lm.generate(["Q: 2+2?"], 4) == [" A: "]


def test_forced_base_expert_equals_generalist(tiny):
    from sma_kit.generate import load_lm
    pairs = [("The answer is", " yes"), ("Context", " maybe so")]
    g, s = load_lm(tiny.gen), load_lm(tiny.shift)
    assert s.experts == ["base", "math"] and g.experts == []
    assert all(abs(a - b) < 1e-4 for a, b in zip(s.with_routing(force_expert="base").loglik(pairs), g.loglik(pairs)))
    assert all(abs(a - b) > 1e-3 for a, b in zip(s.with_routing(force_expert="math").loglik(pairs), g.loglik(pairs)))
    with pytest.raises(SmaError, match="unknown expert"): s.with_routing(force_expert="law")


def test_import_is_torch_free():
    p = subprocess.run([sys.executable, "-c", "import sys, sma_kit.generate, sma_kit.qa_eval; assert 'torch' not in sys.modules"],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------- sma_evaluate

def _check_outputs(out, datasets, labels):
    res = json.loads((out / "results.json").read_text())
    assert [m["label"] for m in res["models"]] == labels and list(res["results"]) == datasets
    for ds in datasets:
        assert res["datasets"][ds]["n"] == 5 and set(res["results"][ds]) == set(labels)
    pngs = sorted(p.name for p in (out / "plots").iterdir())
    assert pngs == sorted([f"{d}.png" for d in datasets] + ["overview.png"])
    assert all((out / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    return res


def test_cli_end_to_end_without_data(tiny, tmp_path):
    env = {k: v for k, v in ENV.items() if k != "SMA_DATA_DIR"}
    out = tmp_path / "out"
    p = run_evaluate("--model_dirs", f"{tiny.gen},{tiny.shift}", "--datasets", "medqa,humaneval", "--medqa_path", tiny.medqa,
                     "--sample_size", 5, "--max_new_tokens", 16, "--device", "cpu", "--with_specialists", "--save_examples",
                     "--num_examples", 2, "--output_dir", out, "--quiet", env=env, tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    labels = ["gen", "shift", "shift[base]", "shift[math]"]
    res = _check_outputs(out, ["medqa", "humaneval"], labels)
    assert res["datasets"]["medqa"]["chance"] == 0.25
    for key in ("accuracy", "accuracy_norm"):
        assert res["results"]["medqa"]["gen"][key] == res["results"]["medqa"]["shift[base]"][key]
    assert res["results"]["humaneval"]["gen"]["pass@1"] == 0.0      # a random tiny model writes no working code
    assert "(chance 0.2500, majority " in p.stdout and "| medqa | accuracy | 5 |" in p.stdout
    ex = [json.loads(l) for l in (out / "examples" / "humaneval.jsonl").read_text().splitlines()]
    assert len(ex) == 8 and {e["status"] for e in ex} <= {"passed", "failed", "timeout", "crashed"}


def test_cli_end_to_end_real_data(tiny, tmp_path, data_dir):
    out = tmp_path / "out"
    p = run_evaluate("--model_dirs", f"{tiny.gen},{tiny.shift}", "--datasets", "gsm8k,pubmedqa,mbpp", "--sample_size", 5,
                     "--max_new_tokens", 16, "--device", "cpu", "--with_specialists", "--output_dir", out, "--quiet",
                     env={**ENV, "SMA_DATA_DIR": str(data_dir)}, tmp=tmp_path)
    assert p.returncode == 0, p.stderr
    res = _check_outputs(out, ["gsm8k", "pubmedqa", "mbpp"], ["gen", "shift", "shift[base]", "shift[math]"])
    assert res["datasets"]["pubmedqa"]["chance"] == pytest.approx(1 / 3) and res["datasets"]["gsm8k"]["shots"] == 5
    for ds, key in (("gsm8k", "accuracy"), ("pubmedqa", "accuracy"), ("pubmedqa", "accuracy_norm"), ("mbpp", "pass@1")):
        assert res["results"][ds]["gen"][key] == res["results"][ds]["shift[base]"][key]


def test_cli_bad_input(tiny, tmp_path):
    env = {**ENV, "SMA_DATA_DIR": str(tmp_path)}          # an empty data folder
    g, o = str(tiny.gen), tmp_path / "o"
    run = lambda *a: run_evaluate(*a, "--output_dir", o, env=env, tmp=tmp_path)
    one_error_line(run("--datasets", "medqa"), "--model_dirs")
    one_error_line(run("--model_dirs", f"{g},{tmp_path / 'missing'}", "--datasets", "medqa", "--medqa_path", tiny.medqa),
                   "missing: model dir not found")
    one_error_line(run("--model_dirs", g, "--datasets", "gsm8k,trivia"), "unknown dataset 'trivia'")
    one_error_line(run("--model_dirs", g, "--datasets", "gsm8k"), "GSM8K test split not found")
    one_error_line(run("--model_dirs", g, "--datasets", "pubmedqa", "--data_dir", tmp_path / "nope"), "data folder not found")
    one_error_line(run("--model_dirs", g, "--datasets", "medqa"), "--medqa_path is required")
    one_error_line(run("--model_dirs", g, "--datasets", "medqa", "--medqa_path", tmp_path / "no.jsonl"), "no.jsonl: MedQA file not found")
    one_error_line(run("--model_dirs", g, "--datasets", "medqa", "--medqa_path", tiny.medqa, "--sample_size", 0), "--sample_size")
    assert not o.exists()                                 # nothing is written before the inputs are checked


def test_results_are_written_atomically(tiny, tmp_path, monkeypatch):
    "A failure while results.json is being written leaves the previous results.json whole and no temporary file."
    import sma_kit.checkpoint
    from sma_kit.qa_eval import evaluate_main
    out = tmp_path / "out"
    kw = dict(datasets="medqa", medqa_path=tiny.medqa, no_plots=True, device="cpu", output_dir=out, log=lambda *a: None)
    evaluate_main(str(tiny.gen), sample_size=2, **kw)
    before = (out / "results.json").read_bytes()
    def fail(fd): raise OSError("disk full")
    monkeypatch.setattr(sma_kit.checkpoint.os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"): evaluate_main(str(tiny.gen), sample_size=3, **kw)
    assert (out / "results.json").read_bytes() == before and json.loads(before)["config"]["sample_size"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md"]
