"""Turning a measured statistic into a claim's verdict.

Each finding of the paper becomes one number and one predicate on it, e.g. "AT's mean max
logit is smaller than ST's" is ``value = mean_max_AT - mean_max_ST`` with ``lambda d: d < 0``.
A statistic that could not be measured (no run, no data: None or NaN) gives "not measured",
never a guess.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from logitscope.report.model import VERDICTS, Claim


def claim_from_check(
    id: str,
    statement: str,
    value: float | None,
    predicate: Callable[[float], bool],
    fmt: str,
    detail: str = "",
) -> Claim:
    """A claim whose verdict is ``predicate(value)``.

    Args:
        id: the claim's id.
        statement: the paper's finding.
        value: the measured statistic; None or NaN means it was not measured.
        predicate: True when ``value`` supports the finding (numpy bools are accepted).
        fmt: a ``str.format`` template with one field for ``value``,
            e.g. ``"skew(AT) - skew(ST) = {:+.2f}"``.
        detail: how the check is made, or why it could not be.

    Returns:
        The claim; "not measured" (statistic "—") when ``value`` is None or NaN.
    """
    if value is None or math.isnan(float(value)):
        return Claim(id, statement, "—", "not measured", detail)
    value = float(value)
    verdict = "holds" if bool(predicate(value)) else "does not hold"
    return Claim(id, statement, fmt.format(value), verdict, detail)


def verdict_counts(claims: Iterable[Claim]) -> dict[str, int]:
    """Number of claims per verdict, every verdict present (in the order of ``VERDICTS``)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for claim in claims:
        counts[claim.verdict] += 1
    return counts
