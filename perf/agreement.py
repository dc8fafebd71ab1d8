"""Token agreement between two systems' greedy outputs for the same clips (natural stopping).

Some systems return the final end token, others drop it: the checkpoint's end-of-sequence ids
(``ModelSpec.eos_token_ids``) are stripped from both sides before comparing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Agreement:
    """How often a candidate's tokens equal the reference's.

    - ``position_rate``: positions where both have the same id / positions of the longer
      output of each pair (a missing or extra token counts as a disagreement);
    - ``sequence_rate``: clips whose whole outputs are equal;
    - ``prefix_rate``: tokens before the first difference / reference tokens (greedy decoding
      continues from its own choices, so everything after a first difference may differ);
    - ``first_divergence``: per clip, index of the first differing token (None when equal).
    """

    clips: int
    positions: int
    position_rate: float
    sequence_rate: float
    prefix_rate: float
    first_divergence: tuple[int | None, ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return asdict(self)


def strip_eos(ids: Iterable[int], eos_ids: Collection[int]) -> list[int]:
    """``ids`` without trailing end-of-sequence tokens (``eos_ids``)."""
    out = list(ids)
    while out and out[-1] in eos_ids:
        out.pop()
    return out


def token_agreement(
    reference: Sequence[Sequence[int]], candidate: Sequence[Sequence[int]], eos_ids: Collection[int]
) -> Agreement:
    """Agreement of ``candidate`` with ``reference`` (one id list per clip, same clip order); ``eos_ids`` are
    the checkpoint's end-of-sequence ids (``ModelSpec.eos_token_ids``)."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference outputs but {len(candidate)} candidate outputs")
    if not reference:
        raise ValueError("no outputs to compare")
    positions = same = equal_sequences = prefix_total = reference_total = 0
    divergence: list[int | None] = []
    for ref_ids, cand_ids in zip(reference, candidate):
        ref, cand = strip_eos(ref_ids, eos_ids), strip_eos(cand_ids, eos_ids)
        positions += max(len(ref), len(cand))
        same += sum(a == b for a, b in zip(ref, cand))
        first = next((i for i, (a, b) in enumerate(zip(ref, cand)) if a != b), None)
        if first is None and len(ref) != len(cand):
            first = min(len(ref), len(cand))
        divergence.append(first)
        equal_sequences += first is None
        prefix_total += len(ref) if first is None else min(first, len(ref))
        reference_total += len(ref)
    return Agreement(
        clips=len(reference),
        positions=positions,
        position_rate=same / positions if positions else 1.0,
        sequence_rate=equal_sequences / len(reference),
        prefix_rate=prefix_total / reference_total if reference_total else 1.0,
        first_divergence=tuple(divergence),
    )
