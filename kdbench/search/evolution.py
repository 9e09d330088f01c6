"""The search strategies: every candidate (exhaustive), or regularized (aging) evolution for spaces too large to
score one by one.

Regularized evolution follows the reference's ``regularized_evolution`` (``searcher/evo_search_nb201.py`` of
lliai/DisWOT-CVPR2023 @ dffe4e6, after Real et al. 2019, Algorithm 1) with its defaults: a population of 36 drawn at
random within the budget; each cycle draws 8 members (with replacement), picks the parent at random among the 5
best of them, scores its mutation and appends it, and drops the oldest member. Where kdbench differs: the reference
runs until a time budget (1000 s) is spent, kdbench for ``cycles`` children; the reference sorts the sample in
ascending order and so picks among the 5 *worst* (its comment says "max"), kdbench among the 5 best; the reference
checks the FLOPs budget only for the initial population, kdbench for every child too (a child over the budget is
drawn again); a candidate met again is not re-scored (the score is a function of the candidate and the seed).
"""

from __future__ import annotations

import collections
import random
from typing import Callable

from .space import Candidate, Space

# reference defaults: --ea_population 36, --ea_sample_size 8, top_N = 5 (evo_search_nb201.py)
POPULATION, SAMPLE_SIZE, PARENTS_TOP = 36, 8, 5
MAX_DRAWS = 1000  # draws of a random member or a mutation before giving up on finding one within the budget


def exhaustive(space: Space, evaluate: Callable[[Candidate], float | None]) -> list[Candidate]:
    """Every candidate, in the space's order; ``evaluate`` returns None for one outside the budget."""
    return [c for c in space.candidates if evaluate(c) is not None]


def regularized_evolution(space: Space, evaluate: Callable[[Candidate], float | None], rng: random.Random,
                          population: int = POPULATION, sample_size: int = SAMPLE_SIZE,
                          parents_top: int = PARENTS_TOP, cycles: int = 100) -> list[Candidate]:
    """The candidates scored, in the order they were first scored. ``evaluate(c)`` is the score (higher is better)
    or None when ``c`` is outside the budget; it is called once per distinct candidate."""
    scores: dict[Candidate, float | None] = {}
    order: list[Candidate] = []

    def score(c: Candidate) -> float | None:
        if c not in scores:
            scores[c] = evaluate(c)
            if scores[c] is not None:
                order.append(c)
        return scores[c]

    def draw(make: Callable[[], Candidate]) -> Candidate | None:
        for _ in range(MAX_DRAWS):
            c = make()
            if score(c) is not None:
                return c
        return None

    alive: collections.deque[Candidate] = collections.deque()
    while len(alive) < population:
        member = draw(lambda: space.random(rng))
        if member is None:
            break
        alive.append(member)
    for _ in range(cycles if alive else 0):
        sample = sorted((rng.choice(alive) for _ in range(sample_size)), key=lambda c: scores[c], reverse=True)
        parent = rng.choice(sample[:parents_top])
        child = draw(lambda: space.mutate(parent, rng))
        if child is None:
            continue
        alive.append(child)
        alive.popleft()
    return order
