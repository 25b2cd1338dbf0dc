"""Is a difference between two methods real? Paired comparisons over shared seeds, with scipy.stats.

A comparison pairs runs that share what chance draws (the same pretraining seed, the same fine-tuning seed)
and works on their differences: the mean difference, a 95 % confidence interval from Student's t with
n - 1 degrees of freedom, and a verdict in words. With 2 or 3 pairs the same t interval is used: it is exact
when the differences are normal, and it is wide (t = 12.7 with 2 pairs, 4.3 with 3), which is the honest
answer for so few pairs. From the spread of the differences: the smallest difference the pairs could detect,
and how many pairs a stated effect needs (80 % power, 5 % two-sided, the paired t-test's power from the
noncentral t distribution).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
POWER = 0.8
ALPHA = 1 - CONFIDENCE


@dataclass(frozen=True)
class Comparison:
    """`method - baseline` over paired runs."""

    pairs: int
    mean: float
    sd: float | None  # of the differences; None with one pair
    low: float | None  # the confidence interval of the mean difference
    high: float | None
    verdict: str  # better, worse, not distinguishable with N pairs, one pair: no interval
    detectable: float | None  # the smallest |difference| these pairs detect with 80 % power

    def interval(self, digits: int = 2) -> str:
        if self.low is None or self.high is None:
            return "—"
        return f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def compare_paired(differences: Sequence[float], higher_is_better: bool = True) -> Comparison:
    """The comparison of paired differences (`method - baseline`, one per pair)."""
    from scipy import stats

    values = [float(d) for d in differences]
    if not values:
        raise ValueError("no pairs to compare")
    pairs, mean = len(values), math.fsum(values) / len(values)
    if pairs == 1:
        return Comparison(1, mean, None, None, None, "one pair: no interval", None)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (pairs - 1))
    if sd == 0:  # every pair differs by the same amount: no spread to build an interval from
        low = high = mean
    else:
        low, high = stats.t.interval(CONFIDENCE, pairs - 1, loc=mean, scale=sd / math.sqrt(pairs))
    if low > 0 or high < 0:
        verdict = "better" if (mean > 0) == higher_is_better else "worse"
    else:
        verdict = f"not distinguishable with {pairs} pairs"
    return Comparison(pairs, mean, sd, float(low), float(high), verdict,
                      detectable_difference(sd, pairs) if sd > 0 else None)


def paired_power(effect: float, sd: float, pairs: int, alpha: float = ALPHA) -> float:
    """The probability that a two-sided paired t-test at level `alpha` over `pairs` pairs finds a true mean
    difference `effect` when the differences have standard deviation `sd`."""
    from scipy import stats

    df = pairs - 1
    shift = effect / sd * math.sqrt(pairs)  # the noncentrality
    critical = stats.t.ppf(1 - alpha / 2, df)
    upper = stats.nct.sf(critical, df, shift)
    # the other tail: negligible where scipy's series cannot evaluate it (it then answers NaN)
    lower = stats.nct.cdf(-critical, df, shift)
    return float(upper + (0.0 if math.isnan(lower) else lower))


def detectable_difference(sd: float, pairs: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest true difference that `pairs` pairs with this spread detect with probability `power`."""
    from scipy.optimize import brentq

    if pairs < 2 or sd <= 0:
        raise ValueError("a detectable difference needs at least 2 pairs and a spread")
    top = sd
    while paired_power(top, sd, pairs, alpha) < power:
        top *= 2
    return float(brentq(lambda effect: paired_power(effect, sd, pairs, alpha) - power, 0.0, top, xtol=1e-10))


def pairs_needed(effect: float, sd: float, power: float = POWER, alpha: float = ALPHA,
                 most: int = 100_000) -> int:
    """The fewest pairs with which a true difference `effect` is detected with probability `power`."""
    if effect == 0 or sd <= 0:
        raise ValueError("pairs needed: the effect must be non-zero and the spread positive")
    effect = abs(effect)
    low, high = 1, 2  # power(low) < power <= power(high), found by doubling, then bisection on integers
    while paired_power(effect, sd, high, alpha) < power:
        low, high = high, high * 2
        if high > most:
            raise ValueError(f"more than {most} pairs would be needed")
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if paired_power(effect, sd, middle, alpha) >= power else (middle, high)
    return high


def mean_and_spread(values: Sequence[float], least: int = 2) -> str:
    """`mean ± std` (sample std) of `values`; one value shows alone."""
    values = [float(v) for v in values]
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{least}f}"
    return format_mean_spread(mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)), least)


def format_mean_spread(mean: float, spread: float, least: int = 2) -> str:
    """`mean ± spread` with at least `least` decimals, and two significant digits of a spread below 0.1, so that
    a spread that is not zero never reads as ± 0.0; a NaN spread (one seed) shows the mean alone."""
    if math.isnan(spread):
        return f"{mean:.{least}f}"
    decimals = spread_decimals(spread, least)
    return f"{mean:.{decimals}f} ± {spread:.{decimals}f}"


def spread_decimals(spread: float, least: int = 2) -> int:
    if spread <= 0 or spread >= 0.1:
        return least
    return max(least, min(6, 1 - math.floor(math.log10(spread))))
