"""Exact greedy tokens from an int8 screen of the output projection (numpy maths plus one ONNX Runtime call).

A decoder step at small batch reads every weight once, so its time follows the bytes it reads; the
output projection (``lm_head``, ``[V, H]`` = 151,936 rows) is 26% of the 0.6B decoder's fp32 bytes
and 18% of the 1.7B's. Greedy decoding needs the fp32 logits only where they can decide the
argmax, so a step computes every logit from int8 copies of the rows and of the hidden state (a
quarter of the bytes, integer products that are exact), bounds each one's distance from the real
value, and recomputes in fp32 only the rows whose bound lets them reach the top:

- Rows ``w_i`` are quantised per row, ``w'_i = s_i q_i`` with ``q_i`` in [-127, 127], ``d_i = w_i - w'_i``
  (:func:`quantize_rows`, at export time); the hidden state per row of the batch, ``h' = a u``,
  ``e = h - h'`` (:func:`quantize_hidden`).
- ``w_i . h = w'_i . h' + w_i . e + d_i . h'``, so by Cauchy-Schwarz the screen value
  ``a s_i (q_i . u)`` is within ``|w_i| |e| + |d_i| |h'|`` of it; the fp32 logit that is finally
  compared adds at most ``gamma_H |w_i| |h|`` (the classic bound on a float32 dot product of
  ``H`` terms). :func:`screen_bounds` adds both, with slack for the float32 evaluation itself.
- The greedy token is the argmax of the fp32 logits, so a row whose screen value plus bound falls
  below the best screen value minus bound cannot be it (:func:`candidates`). The end tokens are
  always recomputed and left out of that best value, so the token is right whether or not a step
  masks them (``min_new_tokens``).

The rows left (a handful per step on a trained model's confident steps) are recomputed in fp32
and written over the screen values; the returned row is therefore exact wherever it can decide
the greedy token, and the log-probability computed from it differs from the all-fp32 one only by
the screen error of the improbable rows. More than :data:`MAX_CANDIDATES` rows (a flat
distribution) falls back to the whole fp32 row. The integer product runs on ONNX Runtime's
``MatMulInteger`` with unsigned operands: its u8 x s8 kernel on AVX2 saturates 16-bit pair sums,
u8 x u8 widens first and is exact (checked when the screen loads, :meth:`LogitScreen.self_check`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import SCREEN_GRAPH_FILENAME, SCREEN_TABLES_FILENAME
from ..sessions import OrtOptions, make_session

logger = logging.getLogger(__name__)

# Largest magnitude of a quantised value: symmetric int8 without -128, so q and u are both in [-127, 127]
# and stored as unsigned bytes with zero point 128.
QMAX = 127
ZERO_POINT = 128
# float32 unit roundoff (2^-24): gamma_n = n u / (1 - n u) bounds the error of an n-term float32 dot product.
FP32_UNIT_ROUNDOFF = 2.0**-24
# Relative slack on the bounds for evaluating them (and the screen values) in float32: each is a
# handful of float32 operations (relative error ~1e-7 each), so 1e-5 leaves two orders of margin.
BOUND_SLACK = 1e-5
# Rows recomputed in fp32 at most per batch row; beyond it the whole row is computed (8 MB of the
# 1.7B's rows, ~1 ms, against ~35 ms for the full projection).
MAX_CANDIDATES = 1024
# Rows quantised at a time at export (bounds the float64 temporaries to ~100 MB at H = 2048).
QUANTIZE_CHUNK = 8192
# The screen graph's input and output names (export/logit_screen_files.py writes the graph).
SCREEN_INPUT = "hidden_u8"
SCREEN_OUTPUT = "logits_int32"


def dot_error_factor(hidden_size: int) -> float:
    """``gamma_H``: a float32 dot product of ``H`` terms is within ``gamma_H |w| |h|`` of the exact one."""
    n_u = hidden_size * FP32_UNIT_ROUNDOFF
    return n_u / (1.0 - n_u)


@dataclass(frozen=True)
class QuantizedRows:
    """Per-row int8 copy of a ``[V, H]`` float32 projection.

    Attributes
    ----------
    codes : ``[H, V]`` uint8
        ``q + 128`` (transposed: the layout of ``MatMulInteger``'s right operand).
    scale : ``[V]`` float32
        ``s_i = max |w_i| / 127`` (1 for an all-zero row).
    weight_norm : ``[V]`` float64
        ``|w_i|``.
    error_norm : ``[V]`` float64
        ``|w_i - s_i q_i|``.
    """

    codes: np.ndarray
    scale: np.ndarray
    weight_norm: np.ndarray
    error_norm: np.ndarray


def quantize_rows(weight: np.ndarray, chunk: int = QUANTIZE_CHUNK) -> QuantizedRows:
    """Quantise ``[V, H]`` float32 rows (export time; ``chunk`` rows at a time)."""
    vocab, hidden = weight.shape
    codes = np.empty((hidden, vocab), np.uint8)
    scale = np.empty(vocab, np.float32)
    weight_norm = np.empty(vocab, np.float64)
    error_norm = np.empty(vocab, np.float64)
    for start in range(0, vocab, chunk):
        rows = np.asarray(weight[start : start + chunk], np.float64)
        s, q = quantize_per_row(rows)
        stop = start + rows.shape[0]
        codes[:, start:stop] = (q + ZERO_POINT).astype(np.uint8).T
        scale[start:stop] = s
        weight_norm[start:stop] = np.linalg.norm(rows, axis=1)
        error_norm[start:stop] = np.linalg.norm(rows - q * s[:, None].astype(np.float64), axis=1)
    return QuantizedRows(codes, scale, weight_norm, error_norm)


def quantize_per_row(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[N, K]`` float64 -> ``[N]`` float32 scales ``max |x_n| / 127`` (1 for an all-zero row) and the
    ``[N, K]`` float64 integers in [-127, 127] nearest ``x_n / scale_n``: the one rounding of the rows,
    the hidden states and the load-time check."""
    peak = np.abs(x).max(axis=1)
    scale = np.where(peak > 0, peak / QMAX, 1.0).astype(np.float32)
    return scale, np.clip(np.rint(x / scale[:, None].astype(np.float64)), -QMAX, QMAX)


@dataclass(frozen=True)
class QuantizedHidden:
    """A batch of hidden states quantised per row: ``codes [B, H]`` uint8 (``u + 128``), ``scale [B]``
    float32 ``a``, and the norms the bounds need, ``[B]`` float64: ``|h|``, ``|h'|`` and ``|h - h'|``."""

    codes: np.ndarray
    scale: np.ndarray
    norm: np.ndarray
    quantized_norm: np.ndarray
    error_norm: np.ndarray


def quantize_hidden(hidden: np.ndarray) -> QuantizedHidden:
    """``[B, H]`` float32 hidden states -> their per-row int8 copies and norms."""
    exact = hidden.astype(np.float64)
    scale, u = quantize_per_row(exact)
    quantized = u * scale[:, None].astype(np.float64)
    return QuantizedHidden(
        codes=(u + ZERO_POINT).astype(np.uint8),
        scale=scale,
        norm=np.linalg.norm(exact, axis=1),
        quantized_norm=np.linalg.norm(quantized, axis=1),
        error_norm=np.linalg.norm(exact - quantized, axis=1),
    )


def screen_values(products: np.ndarray, row_scale: np.ndarray, hidden_scale: np.ndarray) -> np.ndarray:
    """``[B, V]`` float32 screen logits ``a_b s_i (q_i . u_b)`` from the ``[B, V]`` int32 products."""
    values = np.multiply(products, row_scale[None, :], dtype=np.float32)
    values *= hidden_scale[:, None]
    return values


def bound_coefficients(h: QuantizedHidden, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """``(c, d)``, ``[B]`` each: a row's bound is ``|w_i| c_b + |d_i| d_b`` (:func:`screen_bounds`).

    ``c`` carries the hidden state's quantisation error and the fp32 dot product's rounding, ``d``
    the row's quantisation error; both also cover the float32 evaluation of the screen value
    (at most ``|w'_i| |h'| <= (|w_i| + |d_i|) |h'|`` in magnitude) and are inflated by :data:`BOUND_SLACK`.
    """
    evaluation = BOUND_SLACK * h.quantized_norm
    c = (h.error_norm + gamma * h.norm + evaluation) * (1 + BOUND_SLACK)
    d = (h.quantized_norm + evaluation) * (1 + BOUND_SLACK)
    return c, d


def screen_bounds(weight_norm: np.ndarray, error_norm: np.ndarray, c: float, d: float) -> np.ndarray:
    """Bounds of the rows given (``[K]``) on one batch row: ``|screen - fp32 logit| <= |w_i| c + |d_i| d``."""
    return weight_norm * c + error_norm * d


def candidates(
    values: np.ndarray,
    weight_norm: np.ndarray,
    error_norm: np.ndarray,
    c: float,
    d: float,
    always: np.ndarray,
) -> np.ndarray:
    """The rows (sorted ids) whose fp32 logit may be the greedy choice on one batch row.

    Parameters
    ----------
    values : ``[V]`` float32
        The row's screen values.
    weight_norm, error_norm : ``[V]``
        ``|w_i|`` and ``|d_i|``.
    c, d : float
        The row's bound coefficients (:func:`bound_coefficients`).
    always : ``[E]`` int64
        Rows always returned and left out of the best lower bound (the end tokens, which a step may mask).

    Every row ``j`` outside ``always`` gives a lower bound ``values_j - bound_j`` on the best fp32
    logit outside ``always``; a row whose upper bound ``values_i + bound_i`` is below the largest
    of them cannot be the argmax. The largest lower bound is found without a bound per row: the
    row with the best screen value gives a first one, ``floor``; only rows within the largest bound of
    it can raise it (or survive it), so the per-row bounds are evaluated on those alone.
    """
    masked = values.copy() if always.size else values
    if always.size:
        masked[always] = -np.inf
    top = int(np.argmax(masked))
    widest = float(weight_norm.max()) * c + float(error_norm.max()) * d
    floor = float(values[top]) - float(screen_bounds(weight_norm[top], error_norm[top], c, d))
    near = np.flatnonzero(masked + widest >= floor)
    bounds = screen_bounds(weight_norm[near], error_norm[near], c, d)
    lower = float(np.max(masked[near] - bounds))
    keep = near[values[near] + bounds >= lower]
    return np.union1d(keep, always)


@dataclass
class ScreenStats:
    """Counters of a screen's work (batch rows screened, rows recomputed, rows that fell back)."""

    rows: int = 0
    recomputed: int = 0
    fallbacks: int = 0

    @property
    def mean_candidates(self) -> float:
        return self.recomputed / self.rows if self.rows else 0.0


class LogitScreen:
    """The output projection of a tied-embedding decoder: exact-where-it-matters logits from its hidden state.

    Parameters
    ----------
    model_dir : path
        Export directory with :data:`~..artifacts.SCREEN_GRAPH_FILENAME` and
        :data:`~..artifacts.SCREEN_TABLES_FILENAME`.
    rows : ``[V, H]`` float32
        The projection's fp32 rows (the tied embedding table, memory-mapped).
    options : OrtOptions, optional
        ONNX Runtime threads for the integer product.
    """

    def __init__(self, model_dir: str | Path, rows: np.ndarray, options: OrtOptions | None = None) -> None:
        model_dir = Path(model_dir)
        self.rows = rows
        tables = np.load(model_dir / SCREEN_TABLES_FILENAME)
        self.scale = np.asarray(tables["scale"], np.float32)
        self.weight_norm = np.asarray(tables["weight_norm"], np.float64)
        self.error_norm = np.asarray(tables["error_norm"], np.float64)
        if self.scale.shape != (rows.shape[0],) or self.weight_norm.shape != self.scale.shape:
            raise ValueError(f"screen tables do not match the {rows.shape} projection")
        self.gamma = dot_error_factor(rows.shape[1])
        self.session = make_session(model_dir / SCREEN_GRAPH_FILENAME, options)
        self.stats = ScreenStats()

    @staticmethod
    def available(model_dir: str | Path) -> bool:
        """Whether an export directory holds a screen (written for tied-embedding decoders)."""
        model_dir = Path(model_dir)
        return (model_dir / SCREEN_GRAPH_FILENAME).is_file() and (model_dir / SCREEN_TABLES_FILENAME).is_file()

    def products(self, codes: np.ndarray) -> np.ndarray:
        """``[B, H]`` uint8 hidden codes -> ``[B, V]`` int32 ``(u_b - 128) . (q_i)``, exact."""
        return self.session.run([SCREEN_OUTPUT], {SCREEN_INPUT: np.ascontiguousarray(codes)})[0]

    def self_check(self, probe_rows: int = 64) -> bool:
        """Whether the integer product is exact on this CPU's kernels, on inputs that saturate 16-bit sums.

        The hidden codes are all 255 and all 1 (``u`` = +127 and -127): every product is at its
        extreme. The expected sums come from re-quantising ``probe_rows`` rows, the largest-scaled
        first (their codes reach +-127), in float64.
        """
        hidden = self.rows.shape[1]
        codes = np.stack([np.full(hidden, 255, np.uint8), np.full(hidden, 1, np.uint8)])
        got = self.products(codes)
        probe = np.argsort(-self.scale, kind="stable")[:probe_rows]
        _, q = quantize_per_row(np.asarray(self.rows[probe], np.float64))
        want = (codes.astype(np.int64) - ZERO_POINT) @ q.astype(np.int64).T
        return bool(np.array_equal(got[:, probe], want))

    def full(self, hidden: np.ndarray) -> np.ndarray:
        """``[B, H]`` float32 -> ``[B, V]`` float32 logits, every one in fp32 (one row at a time)."""
        return np.stack([self.rows @ row for row in np.asarray(hidden, np.float32)])

    def logits(self, hidden: np.ndarray, always: Sequence[Collection[int]]) -> np.ndarray:
        """``[B, H]`` float32 -> ``[B, V]`` float32 logits, fp32 wherever they can decide the greedy token.

        ``always[b]`` are row ``b``'s end tokens (recomputed on every step, whether or not it masks them).
        """
        hidden = np.ascontiguousarray(hidden, np.float32)
        h = quantize_hidden(hidden)
        values = screen_values(self.products(h.codes), self.scale, h.scale)
        c, d = bound_coefficients(h, self.gamma)
        for b in range(hidden.shape[0]):
            ends = np.fromiter(sorted(always[b]), np.int64) if always[b] else np.zeros(0, np.int64)
            ids = candidates(values[b], self.weight_norm, self.error_norm, float(c[b]), float(d[b]), ends)
            self.stats.rows += 1
            if ids.size > MAX_CANDIDATES:
                self.stats.fallbacks += 1
                values[b] = self.rows @ hidden[b]
                continue
            self.stats.recomputed += ids.size
            values[b, ids] = np.asarray(self.rows[ids], np.float32) @ hidden[b]
        return values
