"""How closely a candidate's next-token distributions follow a reference's (numpy only).

The fast mode's int8 graphs are compared with the fp32 ones *teacher-forced*: both are fed the
same prefix (the fp32 greedy tokens), so step ``t`` of either holds the logits for the same
context, and a difference at one step does not change the inputs of later ones (as it does when
each side decodes its own tokens, see ``perf/agreement.py``). Per step this module measures

- ``KL(p_ref || p_cand)``: nats lost by serving the candidate's distribution instead of the
  reference's (log-softmax in float64 after subtracting each row's maximum, so no ``exp`` overflows);
- the relative logit error ``||c - r|| / ||r||`` (L2 over the vocabulary);
- the reference's top-1 / top-2 logit margin, and whether both pick the same top-1.

Top-1 agreement over all steps mixes confident steps with near ties, where any noise flips the
choice; agreement restricted to steps whose reference margin exceeds :data:`MARGIN_THRESHOLDS`
says whether the candidate keeps the choices the reference is sure of.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

# Reference top-1 minus top-2 logit (nats of log-odds between the two best tokens): above 1.0 the
# reference prefers its choice by a factor e ~ 2.7, above 3.0 by e^3 ~ 20. A candidate that flips a
# choice of margin m must move the two logits by m between them, far above int8 weight noise when m = 3.
MARGIN_THRESHOLDS = (1.0, 3.0)
# Rows of the vocabulary-wide float64 work arrays handled at once: 64 x 151,936 x 8 bytes ~ 78 MB.
ROW_CHUNK = 64


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64, stable for any finite logits.

    Parameters
    ----------
    logits : ``[T, V]`` float

    Returns
    -------
    ``[T, V]`` float64 log-probabilities (each row's ``exp`` sums to 1).
    """
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _check_pair(reference: np.ndarray, candidate: np.ndarray) -> None:
    if reference.ndim != 2 or reference.shape != candidate.shape:
        raise ValueError(f"expected two [T, V] arrays of one shape, got {reference.shape} and {candidate.shape}")
    if reference.shape[1] < 2:
        raise ValueError("a margin needs at least two vocabulary entries")


def kl_divergence(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-step ``KL(softmax(reference) || softmax(candidate))`` in nats.

    Parameters
    ----------
    reference, candidate : ``[T, V]`` float logits

    Returns
    -------
    ``[T]`` float64, each ``>= 0`` (rounding aside; clipped at 0).
    """
    _check_pair(reference, candidate)
    out = np.empty(reference.shape[0], np.float64)
    for start in range(0, reference.shape[0], ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        log_p, log_q = log_softmax(reference[rows]), log_softmax(candidate[rows])
        out[rows] = np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
    return np.maximum(out, 0.0)


def relative_error(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per-step ``||candidate - reference|| / ||reference||`` (L2 over the vocabulary).

    Parameters
    ----------
    reference, candidate : ``[T, V]`` float logits

    Returns
    -------
    ``[T]`` float64 (``inf`` where a reference row is all zeros and the candidate's is not).
    """
    _check_pair(reference, candidate)
    out = np.empty(reference.shape[0], np.float64)
    for start in range(0, reference.shape[0], ROW_CHUNK):
        rows = slice(start, start + ROW_CHUNK)
        r = np.asarray(reference[rows], np.float64)
        diff = np.linalg.norm(np.asarray(candidate[rows], np.float64) - r, axis=-1)
        norm = np.linalg.norm(r, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[rows] = np.where(diff == 0.0, 0.0, diff / norm)
    return out


def top_margin(logits: np.ndarray) -> np.ndarray:
    """Per-step top-1 minus top-2 logit.

    Parameters
    ----------
    logits : ``[T, V]`` float, ``V >= 2``

    Returns
    -------
    ``[T]`` float64, ``>= 0`` (0 on a tie).
    """
    top2 = np.partition(np.asarray(logits), -2, axis=-1)[:, -2:].astype(np.float64)
    return top2[:, 1] - top2[:, 0]


@dataclass(frozen=True)
class StepFidelity:
    """Per-step figures of one teacher-forced comparison (or several, :meth:`concatenate`\\ d).

    Attributes
    ----------
    kl : ``[T]`` float64
        ``KL(p_ref || p_cand)`` in nats.
    relative_error : ``[T]`` float64
        ``||c - r|| / ||r||``.
    margin : ``[T]`` float64
        The reference's top-1 minus top-2 logit.
    agree : ``[T]`` bool
        Whether both top-1 tokens are the same.
    """

    kl: np.ndarray
    relative_error: np.ndarray
    margin: np.ndarray
    agree: np.ndarray

    @classmethod
    def compare(cls, reference: np.ndarray, candidate: np.ndarray) -> StepFidelity:
        """The figures of ``[T, V]`` candidate logits against ``[T, V]`` reference logits."""
        _check_pair(reference, candidate)
        return cls(
            kl=kl_divergence(reference, candidate),
            relative_error=relative_error(reference, candidate),
            margin=top_margin(reference),
            agree=np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1),
        )

    @classmethod
    def concatenate(cls, parts: Iterable[StepFidelity]) -> StepFidelity:
        """The steps of several comparisons (clips) as one."""
        parts = list(parts)
        if not parts:
            raise ValueError("no comparisons to concatenate")
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in cls.__dataclass_fields__))

    @property
    def steps(self) -> int:
        return int(self.kl.shape[0])

    def summary(self, thresholds: tuple[float, ...] = MARGIN_THRESHOLDS) -> FidelitySummary:
        """Means, maxima and top-1 agreement overall and above each margin threshold."""
        if self.steps == 0:
            raise ValueError("no steps to summarise")
        buckets = []
        for threshold in thresholds:
            confident = self.margin > threshold
            count = int(confident.sum())
            rate = float(self.agree[confident].mean()) if count else None
            buckets.append(MarginAgreement(float(threshold), count, rate))
        return FidelitySummary(
            steps=self.steps,
            kl_mean=float(self.kl.mean()),
            kl_max=float(self.kl.max()),
            relative_error_mean=float(self.relative_error.mean()),
            relative_error_max=float(self.relative_error.max()),
            top1_agreement=float(self.agree.mean()),
            by_margin=tuple(buckets),
        )


@dataclass(frozen=True)
class MarginAgreement:
    """Top-1 agreement over the steps whose reference margin exceeds ``threshold``.

    ``agreement`` is None when no step does (``steps == 0``).
    """

    threshold: float
    steps: int
    agreement: float | None


@dataclass(frozen=True)
class FidelitySummary:
    """A candidate's next-token distributions against a reference's, over ``steps`` teacher-forced steps."""

    steps: int
    kl_mean: float
    kl_max: float
    relative_error_mean: float
    relative_error_max: float
    top1_agreement: float
    by_margin: tuple[MarginAgreement, ...]

    def above(self, threshold: float) -> MarginAgreement:
        """The bucket of ``threshold`` (one of those it was summarised with)."""
        for bucket in self.by_margin:
            if bucket.threshold == threshold:
                return bucket
        raise KeyError(f"no margin bucket {threshold}; have {[b.threshold for b in self.by_margin]}")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields."""
        return asdict(self)


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> FidelitySummary:
    """:meth:`StepFidelity.summary` of ``[T, V]`` candidate logits against ``[T, V]`` reference logits."""
    return StepFidelity.compare(reference, candidate).summary()
