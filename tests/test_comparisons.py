"""What is paired with what (benchmarks/comparisons.py), the two-level spread, the summary across tasks, and
plan-seeds: on fixed runs whose differences are worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from benchmarks.comparisons import BOTH_LEVELS, FINE_TUNING_ONLY, paired_differences, tally
from benchmarks.stats import compare_paired, pairs_needed


def _run(method: str, pretrain_seed: int | None, seed: int, ap: float, framework: str = "detectron2",
         schedule: str = "1x", checkpoint: str | None = None) -> dict:
    return {"framework": framework, "schedule": schedule, "data": "coco", "opts": "", "arch": "resnet50",
            "method": method, "checkpoint": checkpoint or f"{method}-p{pretrain_seed}", "pretrain_seed": pretrain_seed,
            "seed": seed, "AP_bb": ap}


# two pretraining seeds x two fine-tuning seeds: look - sl is 1.0, 0.6 (pretraining seed 0) and 0.6, 0.8 (seed 1)
TWO_LEVELS = [
    _run("sl", 0, 0, 38.0), _run("sl", 0, 1, 38.4), _run("sl", 1, 0, 38.2), _run("sl", 1, 1, 38.6),
    _run("look", 0, 0, 39.0), _run("look", 0, 1, 39.0), _run("look", 1, 0, 38.8), _run("look", 1, 1, 39.4),
    _run("look", 2, 0, 50.0),  # no sl checkpoint with pretraining seed 2: left out
    _run("sl", 0, 0, 1.0, schedule="smoke"), _run("look", 0, 0, 9.0, schedule="smoke"),  # never compared
]


def test_two_pretraining_seeds_make_the_pretraining_seed_the_unit_and_give_the_fine_tuning_spread_beside():
    [d] = paired_differences(pd.DataFrame(TWO_LEVELS), "coco", ["AP_bb"])
    assert d.setting == ("detectron2", "1x", "coco", "", "resnet50")
    assert (d.method, d.baseline, d.covers) == ("look", "sl", BOTH_LEVELS)
    # units 0.8 and 0.7 (each pretraining seed's mean fine-tuning difference): sd 0.0707, standard error 0.05,
    # t(0.975, 1 df) = 12.7062047
    assert d.comparison.pairs == 2 and d.comparison.mean == pytest.approx(0.75)
    assert (d.comparison.low, d.comparison.high) == (pytest.approx(0.75 - 12.7062047 * 0.05),
                                                     pytest.approx(0.75 + 12.7062047 * 0.05))
    assert d.comparison.verdict == "better"
    # inside the pretraining seeds: squares 0.08 + 0.02 over 2 degrees of freedom
    assert d.fine_tuning_sd == pytest.approx(math.sqrt(0.05))
    assert d.left_out == ("look: pretraining seed 2, fine-tuning seed 0 (no sl run with its seeds)",)
    assert d.unit == "pretraining seeds" and d.needed(0.8) == pairs_needed(0.8, math.sqrt(0.005))


def test_one_pretraining_run_each_pairs_fine_tuning_seeds_and_two_checkpoints_with_one_seed_pair_nothing():
    runs = [_run("sl", None, s, v, "mmdet") for s, v in enumerate((38.0, 38.5, 38.2))]
    runs += [_run("sl-mlp", None, s, v, "mmdet") for s, v in enumerate((38.5, 38.7, 38.9))]
    runs += [_run("look", None, 0, 40.0, "mmdet", checkpoint="look-a"), _run("look", None, 0, 41.0, "mmdet",
                                                                              checkpoint="look-b")]
    found = {d.method: d for d in paired_differences(pd.DataFrame(runs), "coco", ["AP_bb"])}
    look, slmlp = found["look"], found["sl-mlp"]
    assert slmlp.covers == FINE_TUNING_ONLY and slmlp.comparison.pairs == 3
    # differences 0.5, 0.2, 0.7: mean 7/15, squares about it 0.78 - 3 (7/15)^2 = 0.38/3 over 2 degrees of freedom
    assert slmlp.comparison.mean == pytest.approx(7 / 15)
    assert slmlp.fine_tuning_sd == pytest.approx(math.sqrt(0.19 / 3))
    assert look.comparison.pairs == 0 and look.comparison.verdict == "no pair: no pair that is not ambiguous"
    unknown = "pretraining seed unknown, fine-tuning seed"
    assert look.left_out == (f"sl: {unknown} 1 (no look run with its seeds)",
                             f"sl: {unknown} 2 (no look run with its seeds)",
                             f"look or sl: {unknown} 0 (two checkpoints with these seeds: compare them by checkpoint "
                             "name, --baseline)")
    # named by checkpoint, the baseline pairs by fine-tuning seed alone, one checkpoint with another
    by_name = paired_differences(pd.DataFrame(runs), "coco", ["AP_bb"], baseline="look-a")
    assert {d.method: d.comparison.pairs for d in by_name} == {"look-b": 1, "sl-mlp-pNone": 1, "sl-pNone": 1}
    assert all(d.baseline == "look-a" for d in by_name)


def test_the_sign_test_needs_six_settings_and_counts_directions():
    [d] = paired_differences(pd.DataFrame(TWO_LEVELS), "coco", ["AP_bb"])
    better = [d.__class__(**{**d.__dict__, "comparison": compare_paired([1.0, 1.2, 0.8])})] * 6
    tie = d.__class__(**{**d.__dict__, "comparison": compare_paired([0.5, -0.5, 0.1])})
    [six] = tally(better)
    # binomial(6, 1/2), all six above zero: two-sided p = 2 / 2^6
    assert (six.better, six.worse, six.ties, six.positive, six.negative) == (6, 0, 0, 6, 0)
    assert six.p_value == pytest.approx(0.03125) and six.test == "sign test over 6 settings: p = 0.0312"
    [five] = tally(better[:4] + [tie])
    assert five.p_value is None and five.test.startswith("no test: 5 settings with a non-zero difference")
    assert (five.better, five.ties) == (4, 1)


def test_plan_seeds_answers_from_a_spread_and_refuses_what_it_cannot_plan(tmp_path):
    from benchmarks.cli import main
    from benchmarks.commands.plan_seeds import plan_seeds
    from pretrain.errors import UserError

    lines = plan_seeds("coco", 0.8, sd=0.4)
    assert lines[-1].endswith(f": {pairs_needed(0.8, 0.4)} pairs") and "0.67 with 5 pairs" in lines[0]
    with pytest.raises(UserError, match="no paired benchmark runs of coco under"):
        plan_seeds("coco", None, runs=tmp_path)
    with pytest.raises(UserError, match="give the effect to detect with --effect"):
        plan_seeds("voc", None, sd=1.0)
    with pytest.raises(UserError, match="unknown task 'cocoa'"):
        plan_seeds("cocoa", 0.8, sd=1.0)
    assert main(["plan-seeds", "--task", "coco", "--effect", "-1", "--sd", "1"]) != 0
