"""Paired comparisons (benchmarks/stats.py) against values known independently of this code."""

from __future__ import annotations

import pytest

from benchmarks.stats import (
    compare_paired,
    detectable_difference,
    mean_and_spread,
    paired_power,
    pairs_needed,
)

# "Student" (1908), Cushny and Peebles' sleep data: extra hours of sleep with drug 2 minus drug 1, 10 patients.
# R: t.test(extra ~ group, data = sleep, paired = TRUE) gives a mean difference of -1.58, t = -4.0621, df = 9,
# p = 0.002833 and the 95 % interval [-2.4598858, -0.7001142] for drug 1 minus drug 2.
SLEEP_DIFFERENCES = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]


def test_the_interval_of_students_sleep_data_is_rs():
    c = compare_paired(SLEEP_DIFFERENCES)
    assert (c.pairs, c.mean) == (10, pytest.approx(1.58))
    assert (c.low, c.high) == (pytest.approx(0.7001142, abs=1e-7), pytest.approx(2.4598858, abs=1e-7))
    assert c.verdict == "better" and c.interval() == "[+0.70, +2.46]"
    assert compare_paired([-d for d in SLEEP_DIFFERENCES]).verdict == "worse"


def test_the_verdict_on_both_sides_of_zero_a_tie_and_a_single_pair():
    assert compare_paired([-1.0, -1.2, -0.8]).verdict == "worse"
    assert compare_paired([-1.0, -1.2, -0.8], higher_is_better=False).verdict == "better"
    assert compare_paired([1.0, 1.2, 0.8]).verdict == "better"
    tie = compare_paired([0.5, -0.5, 0.1])
    assert tie.verdict == "not distinguishable with 3 pairs" and tie.low < 0 < tie.high
    # 2 pairs: Student's t with 1 degree of freedom, t = 12.706: [1 - 12.706 * 0.1, 1 + 12.706 * 0.1]
    two = compare_paired([0.9, 1.1])
    assert (two.low, two.high) == (pytest.approx(1 - 12.7062047 * 0.1), pytest.approx(1 + 12.7062047 * 0.1))
    assert two.verdict == "not distinguishable with 2 pairs"
    one = compare_paired([2.0])
    assert (one.verdict, one.low, one.detectable, one.interval()) == ("one pair: no interval", None, None, "—")
    with pytest.raises(ValueError, match="no pairs"):
        compare_paired([])


def test_power_and_pairs_needed_agree_with_rs_power_t_test():
    # R: power.t.test(delta = 0.5, sd = 1, power = 0.8, type = "one.sample") gives n = 33.36713 (a paired test is a
    # one-sample test of the differences)
    assert paired_power(0.5, 1.0, 33.36713) == pytest.approx(0.8, abs=1e-5)
    assert pairs_needed(0.5, 1.0) == 34 and pairs_needed(-0.5, 1.0) == 34  # the next whole pair
    assert paired_power(0.5, 1.0, 33) < 0.8 <= paired_power(0.5, 1.0, 34)
    assert pairs_needed(1.0, 2.0) == 34  # only the effect in units of the spread counts
    # the detectable difference inverts the power: 34 pairs detect 0.5 sd, 33 pairs do not quite
    assert detectable_difference(1.0, 34) < 0.5 < detectable_difference(1.0, 33)
    assert paired_power(detectable_difference(0.4, 5), 0.4, 5) == pytest.approx(0.8, abs=1e-8)
    # at no effect the test says "different" with probability alpha
    assert paired_power(1e-12, 1.0, 10) == pytest.approx(0.05, abs=1e-6)


def test_a_spread_that_is_not_zero_never_reads_as_zero():
    assert mean_and_spread([0.412, 0.409, 0.4105]) == "0.4105 ± 0.0015"
    assert mean_and_spread([77.267, 77.7, 77.233]) == "77.40 ± 0.26"
    assert mean_and_spread([1.0, 1.0]) == "1.00 ± 0.00"  # a spread of exactly zero
    assert mean_and_spread([3.0]) == "3.00"


def test_the_real_data_tier_pairs_by_pretraining_seed_and_says_what_it_left_out():
    from benchmarks.commands.proxy import tier_frame
    from benchmarks.comparisons import PRETRAINING, markdown_table, paired_differences

    def run(method: str, seed: int, top1: float) -> dict:
        return {"method": method, "seed": seed, "checkpoint": f"{method}{seed}.pth", "metrics": {"linear_top1": top1}}

    runs = [run("sl", 0, 70.0), run("sl", 1, 71.0), run("sl", 2, 72.0),
            run("look", 0, 71.0), run("look", 1, 72.2), run("look", 2, 72.8), run("look", 3, 99.0),
            run("sl-mlp", 5, 80.0)]
    look, slmlp = paired_differences(tier_frame(runs, "fmnist"), "proxy fmnist", ["linear_top1"])
    c = compare_paired([1.0, 1.2, 0.8])  # seed 3 has no sl run: not a pair
    assert (look.method, look.covers, look.comparison.pairs, look.comparison.verdict) == ("look", PRETRAINING, 3,
                                                                                          "better")
    assert (look.comparison.low, look.comparison.high) == (pytest.approx(c.low), pytest.approx(c.high))
    assert look.left_out == ("look: pretraining seed 3, fine-tuning seed 0 (no sl run with its seeds)",)
    assert slmlp.comparison.pairs == 0 and slmlp.comparison.verdict == "no pair: no sl run with the seeds of sl-mlp's"
    table = markdown_table([look, slmlp], settings=False)
    assert table[2] == (f"| look | linear_top1 | 3 | +1.00 | {c.interval()} | better | {PRETRAINING} | — | "
                        f"{c.detectable:.2f} | — |")
    assert table[3].startswith("| sl-mlp | linear_top1 | 0 | — | — | no pair: no sl run with the seeds of sl-mlp's |")
    assert "look: pretraining seed 3, fine-tuning seed 0 (no sl run with its seeds)" in table[-1]
