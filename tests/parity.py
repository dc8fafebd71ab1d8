"""Token-exact comparison with the near-tie rule used everywhere parity is tested.

Two fp32 implementations may legitimately pick different tokens only where the
reference's top-2 logits are within ``NEAR_TIE`` of each other. A comparison
therefore passes when the sequences are identical, or when, at the first step
where they differ, the reference's teacher-forced top-2 gap is below
``NEAR_TIE`` and our token is its runner-up. Everything after that step is
allowed to differ.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

NEAR_TIE = 1e-5


@dataclass(frozen=True)
class ParityReport:
    identical: bool
    first_difference: int | None = None
    gap: float | None = None

    def describe(self) -> str:
        if self.identical:
            return "identical"
        return f"differ from step {self.first_difference} at a near-tie (top-2 gap {self.gap:.2e})"


def first_difference(ours: list[int], ref: list[int]) -> int | None:
    for i, (a, b) in enumerate(zip(ours, ref)):
        if a != b:
            return i
    return None if len(ours) == len(ref) else min(len(ours), len(ref))


def strip_eos(tokens: list[int], eos_ids: Collection[int]) -> list[int]:
    out = list(tokens)
    while out and out[-1] in eos_ids:
        out.pop()
    return out


def check_tokens(
    ours: list[int],
    ref: list[int],
    margin_at: Callable[[list[int]], object],
    *,
    eos_ids: Collection[int],
    max_new_tokens: int | None = None,
) -> ParityReport:
    """Assert that ``ours`` equals the reference's greedy ``ref`` up to a proven near-tie.

    ``ours`` may come without its final EOS (the served TOKEN_IDS drop it);
    ``ref`` is the reference's full generation. ``margin_at(prefix)`` returns the
    reference's StepMargin after ``prefix``. ``eos_ids`` are the checkpoint's
    end-of-sequence ids (``ModelSpec.eos_token_ids``).
    """
    ref_text = strip_eos(ref, eos_ids)
    ours_text = strip_eos(ours, eos_ids)
    k = first_difference(ours_text, ref_text)
    if k is None:
        return ParityReport(True)
    if k == len(ours_text) and max_new_tokens is not None and len(ref) == max_new_tokens == k:
        return ParityReport(True)
    ours_k = ours_text[k] if k < len(ours_text) else None  # None: ours ended (EOS) here
    assert k < len(ref), f"ours kept generating after the reference's budget: ours={ours} ref={ref}"
    margin = margin_at(ref[:k])
    assert margin.top1 == ref[k], f"reference teacher forcing disagrees with its own generation at step {k}"
    runner_up_matches = ours_k == margin.top2 or (ours_k is None and margin.top2 in eos_ids)
    assert margin.gap < NEAR_TIE and runner_up_matches, (
        f"token mismatch at step {k}: ours {ours_k} vs reference {ref[k]} (reference top-2 gap {margin.gap:.3e},"
        f" runner-up {margin.top2}); ours={ours} ref={ref}"
    )
    return ParityReport(False, k, margin.gap)
