"""Diverse template choice: draw N distinct templates per document so that, over the corpus, the number of `<fi>`
slots of the drawn templates follows a target distribution (the paper fits it to real queries).

Per document and per draw, a slot count is chosen from the target distribution restricted to the slot counts still
available among the document's candidates, then a template with that slot count is chosen in proportion to its
retrieval score. Restricting-and-renormalising needs no corpus-wide pass (it streams), and when every slot count
is available it reproduces the target exactly in expectation; when none of the available counts has target mass,
the draw falls back to uniform over what is available rather than returning fewer templates.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fineinstructions.errors import UserError


@dataclass(frozen=True)
class Candidate:
    template_id: str
    num_slots: int
    score: float  # best cosine over the document's vectors
    chunk: int  # which vector found it: 0 = global, 1..K = local Gaussian chunks


def slot_distribution(num_slots: Iterable[int]) -> dict[int, float]:
    """Normalised histogram, e.g. of the templates made from a real-query set."""
    counts = Counter(int(n) for n in num_slots)
    total = sum(counts.values())
    if not total:
        raise ValueError("cannot estimate a slot distribution from zero templates")
    return {k: v / total for k, v in sorted(counts.items())}


def draw(candidates: list[Candidate], n: int, target: Mapping[int, float], rng: random.Random) -> list[Candidate]:
    """Up to n distinct candidates, in draw order (rank 1 first)."""
    by_slots: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_slots.setdefault(c.num_slots, []).append(c)
    chosen: list[Candidate] = []
    while len(chosen) < n and by_slots:
        counts = list(by_slots)
        weights = [target.get(s, 0.0) for s in counts]
        if sum(weights) <= 0:
            weights = [1.0] * len(counts)
        s = rng.choices(counts, weights=weights)[0]
        pool = by_slots[s]
        pick = rng.choices(range(len(pool)), weights=[max(c.score, 1e-6) for c in pool])[0]
        chosen.append(pool.pop(pick))
        if not pool:
            del by_slots[s]
    return chosen


def parse_target(spec: str | None, bank: Path) -> dict[int, float]:
    """A slot-count distribution from a folder of templates, an inline spec, or the index's own bank."""
    if spec and ":" in spec and not Path(spec).exists():
        try:
            pairs = [item.split(":") for item in spec.split(",")]
            weights = {int(k): float(v) for k, v in pairs}
        except ValueError as e:
            raise UserError(f"--target-slots {spec!r}: expected 'SLOTS:WEIGHT,...' such as '1:0.5,2:0.3'") from e
        total = sum(weights.values())
        if total <= 0:
            raise UserError(f"--target-slots {spec!r}: weights must add up to more than 0")
        return {k: v / total for k, v in weights.items()}
    import pyarrow.parquet as pq

    folder = Path(spec) if spec else bank
    files = sorted(folder.glob("part-*.parquet"))
    if not files:
        raise UserError(f"no part-*.parquet with a num_slots column in {folder} (--target-slots)")
    return slot_distribution(n for f in files for n in pq.read_table(f, columns=["num_slots"]).column(0).to_pylist())
