"Orchestrator evaluation on the real corpora (SMA_DATA_DIR; CI sets it): skipped with the reason without it."
from sma_kit.orchestrator_eval import heldout_prompts, overlap_report, SeenText


def test_heldout_prompts_cover_four_domains_and_drop_seen_ones(data_dir):
    P = heldout_prompts(data_dir, n=5, seen="")
    assert sorted(P) == ["business", "datascience", "math", "medical"] and all(len(v) == 5 for v in P.values())
    q = P["math"][0][0]
    assert q not in [p for p, _ in heldout_prompts(data_dir, n=2000, seen=q)["math"]]


def test_heldout_prompts_drop_a_guide_passage_whose_markup_differs_from_the_training_text(data_dir, tmp_path):
    "The training copy of a guide page is raw reStructuredText; its passages (markup stripped) must still count as seen."
    page = sorted((data_dir / "datascience/sklearn_user_guide").rglob("*.rst"))[0]
    raw = page.read_text(errors="replace")
    all_ds = heldout_prompts(data_dir, n=5000, seen="")["datascience"]
    left = heldout_prompts(data_dir, n=5000, seen=raw)["datascience"]
    S = SeenText(raw)
    assert len(left) < len(all_ds) and not any(S.share(p) > 0 for p, _ in left)


def test_overlap_report_flags_a_prompt_taken_from_the_training_text(data_dir):
    q = heldout_prompts(data_dir, n=2, seen="")["math"]
    rep = overlap_report({"math": [p for p, _ in q]}, "Some other text. " + q[0][0].upper() + " More text.")
    assert rep["math"]["contained"] == 1 and rep["math"]["max_ngram_share"] == 1.0 and rep["math"]["with_shared_ngram"] >= 1
