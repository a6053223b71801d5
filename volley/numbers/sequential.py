"""The group-sequential plan of ``volley compare --run``: when it may look at its rounds,
and how much of its error each look may spend.

Looking after every round and stopping at the first interval that excludes zero turns a
5% test into a 20-33% one (shared/FINDINGS, "Looking after every round"): each look is a
fresh chance to be fooled. Here the comparison plans, once it knows how long a round takes,
the most rounds that fit in its time (``max_rounds``) and a few looks (``LOOKS``, geometric
from ``FIRST_LOOK`` rounds to ``max_rounds``). The error ``alpha`` a verdict may have is
spent over the looks by the Lan-DeMets spending function of O'Brien-Fleming type,

    spent(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)),   t = rounds / max_rounds,

and look k tests at what it adds, ``spent(t_k) - spent(t_{k-1})``. The looks' chances of a
false verdict add up to at most ``alpha`` (a union bound: conservative, since the looks share
their rounds, but it holds whatever their correlation and whenever the comparison stops, so
the verdict at the look where it stopped is covered). A look whose rounds are the last that
fit in the time (the rounds went slower than planned) spends all that is left: t = 1.

O'Brien-Fleming's function spends almost nothing early (of alpha = 2.5%: 7e-5 by a third of
the rounds, 0.3% by a half), so only a large difference stops early, and the last look keeps
most of alpha. Geometric spacing (10, 18, 32, 56, 100 for 100 rounds) leaves the last look
2.2% of 2.5% where equal spacing (10, 32, 55, 78, 100) leaves it 1.4%, with the same early
chances: more power for the same rounds. Pure functions; ``volley.studies.compare.Monitor``
plays the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist
from typing import Any

LOOKS = 5  # the most looks a comparison takes
FIRST_LOOK = 10  # rounds before the first look: a paired t with fewer df is too rough
# A look that may spend less than this tests nothing: below it volley.numbers.stats.t_quantile is
# not checked (down to here its tail is within 2.5% of the level, by a fine numerical
# integral, at 9-100 df), and only a difference of some 15 standard errors would pass.
MIN_ALPHA = 1e-12

RULE = "group-sequential: O'Brien-Fleming-type alpha spending (Lan-DeMets), union bound over looks"


def spent(alpha: float, information: float) -> float:
    """How much of ``alpha`` may be spent by the share ``information`` of the planned rounds."""
    if information <= 0:
        return 0.0
    if information >= 1:
        return alpha
    z = NormalDist().inv_cdf(1 - alpha / 2)
    # 2 - 2 Phi(x) = erfc(x / sqrt 2), exact where 1 - Phi(x) would round to zero.
    return math.erfc(z / math.sqrt(information) / math.sqrt(2))


def look_alpha(alpha: float, before: float, now: float) -> float:
    """The error a look at information ``now`` may have when the looks before it reached
    ``before``; 0 (it cannot decide) below MIN_ALPHA."""
    share = spent(alpha, now) - spent(alpha, before)
    return share if share >= MIN_ALPHA else 0.0


def schedule(first: int, max_rounds: int, looks: int = LOOKS) -> tuple[int, ...]:
    """The rounds at which to look: geometric from ``first`` to ``max_rounds`` (always the
    last), ``looks`` at most; one look at ``max_rounds`` when it is not beyond ``first``."""
    if max_rounds <= first or looks < 2:
        return (max(max_rounds, 1),)
    ratio = (max_rounds / first) ** (1 / (looks - 1))
    found = {round(first * ratio**k) for k in range(looks - 1)} | {max_rounds}
    return tuple(sorted(r for r in found if first <= r <= max_rounds))


@dataclass(frozen=True)
class Looks:
    """A sequential comparison as it was played: its plan, and the looks it took. The last
    look is where it stopped, and the verdict is that look's."""

    alpha: float  # the error of the verdicts it stopped on (1 - --confidence)
    equivalence: float  # B within this share of A's mean is "equivalent"
    max_rounds: int
    planned: tuple[int, ...]  # the rounds of the planned looks
    rounds: tuple[int, ...] = ()  # the rounds at which it looked
    information: tuple[float, ...] = ()  # at each look: rounds / max_rounds, 1 if final

    @classmethod
    def plan(cls, alpha: float, equivalence: float, first: int, max_rounds: int) -> Looks:
        return cls(alpha, equivalence, max_rounds, schedule(first, max_rounds))

    def due(self, rounds: int, left: int) -> bool:
        """Whether to look after ``rounds`` rounds, with time for ``left`` more."""
        return rounds in self.planned or self.final(rounds, left)

    def final(self, rounds: int, left: int) -> bool:
        return left == 0 or rounds >= self.max_rounds

    def look(self, rounds: int, final: bool) -> Looks:
        information = 1.0 if final else min(1.0, rounds / self.max_rounds)
        return replace(
            self, rounds=(*self.rounds, rounds), information=(*self.information, information)
        )

    def alpha_now(self, budget: float) -> float:
        """The error the last look may have, for a statistic given ``budget`` in all."""
        if not self.information:
            return budget
        before = self.information[-2] if len(self.information) > 1 else 0.0
        return look_alpha(budget, before, self.information[-1])

    def describe(self) -> str:
        """One line: the plan and where it stopped."""
        planned = ", ".join(map(str, self.planned))
        where = (
            f"stopped at look {len(self.rounds)} (round {self.rounds[-1]})"
            if self.rounds
            else "took no look"
        )
        return (
            f"{len(self.planned)} looks planned at rounds {planned} "
            f"(at most {self.max_rounds} rounds), {where}; {RULE}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": RULE,
            "alpha": self.alpha,
            "equivalence": self.equivalence,
            "max_rounds": self.max_rounds,
            "planned": list(self.planned),
            "rounds": list(self.rounds),
            "information": list(self.information),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Looks:
        return cls(
            float(data["alpha"]),
            float(data["equivalence"]),
            int(data["max_rounds"]),
            tuple(int(r) for r in data["planned"]),
            tuple(int(r) for r in data["rounds"]),
            tuple(float(t) for t in data["information"]),
        )
