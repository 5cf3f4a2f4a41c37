"Orchestrator evaluation on the real corpora (SMA_DATA_DIR; CI sets it): skipped with the reason without it."
from sma_kit.orchestrator_eval import heldout_prompts


def test_heldout_prompts_cover_four_domains_and_drop_seen_ones(data_dir):
    P = heldout_prompts(data_dir, n=5, seen="")
    assert sorted(P) == ["business", "datascience", "math", "medical"] and all(len(v) == 5 for v in P.values())
    q = P["math"][0][0]
    assert q not in [p for p, _ in heldout_prompts(data_dir, n=2000, seen=q)["math"]]
