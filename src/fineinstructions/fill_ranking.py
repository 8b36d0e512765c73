"""Instructions by ranking: the template filled with every combination of its slots' fill choices; the LLM scores
each finished instruction and the likeliest wins.

Why: decoding token by token under the fill constraint, the 135M model commits to a fill's first word before it
sees the words that follow the slot ("how long does it take to cooks potatoes", "paint the ceiling ceiling").
Scoring whole instructions reads every fill in its context. Measured on the gold splits (`benchmarks/
fill_ranking.py`; compatible rows, every slot from the 3 sentences closest to the template):

| instruction F1 | train (120 rows) | dev (29) |
|---|---:|---:|
| the top choice per slot (cosine to the description) | 0.698 | 0.702 |
| log-likelihood of the instruction | 0.718 | 0.711 |
| log-likelihood + 10 × mean cosine (the weight chosen on train) | **0.720** | **0.712** |

(The 135M model writing the instruction under the fill constraint, choosing among the same fills: 0.589 on dev in
`goldeval`, where unkept rows count 0.)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from fineinstructions.templates import SLOT

#: choices tried per slot, by the template's slot count: at most 8 · 36 · 64 instructions to score per window
PER_SLOT = {1: 8, 2: 6, 3: 4}
#: weight of the fills' mean cosine to their descriptions against the instruction's summed log-probability
SIMILARITY_WEIGHT = 10.0

Choices = Sequence[Sequence[tuple[str, float]]]  # per slot, (fill, cosine to the description), best first


def filled(template: str, fills: Sequence[str]) -> str:
    """The template with its slots replaced, in order, by `fills`."""
    it = iter(fills)
    return SLOT.sub(lambda _: next(it), template)


def combinations(choices: Choices) -> list[tuple[tuple[str, float], ...]]:
    """Every combination of the slots' top choices in which no two slots take the same fill."""
    if not choices or any(not slot for slot in choices):
        return []
    k = PER_SLOT.get(len(choices), 3)
    return [combo for combo in itertools.product(*(slot[:k] for slot in choices))
            if len({fill.lower() for fill, _ in combo}) == len(combo)]


def rank_instructions(jobs: Sequence[tuple[str, Choices]],
                      loglikelihood: Callable[[Sequence[str]], list[float]]) -> list[str | None]:
    """Per (template, choices) job, the best filled instruction, or None when a slot has no choice. All jobs'
    candidates go to `loglikelihood` in one call, so the backend batches them."""
    candidates = []
    for template, choices in jobs:
        candidates.append([(filled(template, [f for f, _ in combo]), sum(c for _, c in combo) / len(combo))
                           for combo in combinations(choices)])
    scores = iter(loglikelihood([text for cands in candidates for text, _ in cands]))
    out: list[str | None] = []
    for cands in candidates:
        ranked = [(next(scores) + SIMILARITY_WEIGHT * similarity, text) for text, similarity in cands]
        out.append(max(ranked, key=lambda x: x[0])[1] if ranked else None)
    return out
