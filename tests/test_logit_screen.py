"""The int8 logit screen: its bounds hold, its candidates hold the fp32 argmax, and decoding with it
gives the tokens of the all-fp32 projection (qwen3_asr_triton/decoding/logit_screen.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from qwen3_asr_triton.artifacts import DECODER_BODY_FILENAME
from qwen3_asr_triton.decoding import logit_screen as ls
from qwen3_asr_triton.decoding.decoder import DecoderRunner, greedy_decode
from qwen3_asr_triton.export.logit_screen_files import HIDDEN_OUTPUT, projection_is_tied

VOCAB, HIDDEN = 3000, 96


def _rows(rng: np.random.Generator) -> np.ndarray:
    """Rows of unequal scales with a few outlier weights (as trained embedding tables have)."""
    rows = rng.standard_normal((VOCAB, HIDDEN)) * rng.lognormal(0.0, 0.7, (VOCAB, 1))
    rows[rng.integers(0, VOCAB, 40), rng.integers(0, HIDDEN, 40)] *= 25
    return rows.astype(np.float32)


def _hidden(rng: np.random.Generator, batch: int) -> np.ndarray:
    """Hidden states with outlier channels (the activations trained LLMs have)."""
    hidden = rng.standard_normal((batch, HIDDEN))
    hidden[:, :3] *= 30
    return hidden.astype(np.float32)


def _screen(rows: ls.QuantizedRows, hidden: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screen values and bound coefficients, the integer products made in numpy (int64, exact)."""
    h = ls.quantize_hidden(hidden)
    products = (h.codes.astype(np.int64) - ls.ZERO_POINT) @ (rows.codes.astype(np.int64) - ls.ZERO_POINT)
    values = ls.screen_values(products.astype(np.int32), rows.scale, h.scale)
    c, d = ls.bound_coefficients(h, ls.dot_error_factor(hidden.shape[1]))
    return values, c, d


def test_the_bound_covers_the_exact_and_the_fp32_logits_and_is_tight_enough_to_screen():
    rng = np.random.default_rng(0)
    weight = _rows(rng)
    rows = ls.quantize_rows(weight, chunk=700)  # chunks that do not divide the vocabulary
    hidden = _hidden(rng, 6)
    values, c, d = _screen(rows, hidden)
    exact = hidden.astype(np.float64) @ weight.astype(np.float64).T
    fp32 = np.stack([weight @ h for h in hidden]).astype(np.float64)
    for b in range(hidden.shape[0]):
        bound = ls.screen_bounds(rows.weight_norm, rows.error_norm, c[b], d[b])
        assert np.all(np.abs(exact[b] - values[b]) <= bound)
        assert np.all(np.abs(fp32[b] - values[b]) <= bound)
        # Not vacuous: the bound is a small part of the logits' spread (the outlier channels, which set the
        # hidden state's int8 step, make it ~15% here), and the real error smaller still.
        assert np.median(bound) < 0.25 * np.std(exact[b])
        assert np.abs(exact[b] - values[b]).max() < bound.max()


def test_quantized_rows_round_trip_within_half_a_step():
    rng = np.random.default_rng(1)
    weight = _rows(rng)
    rows = ls.quantize_rows(weight)
    q = rows.codes.T.astype(np.float64) - ls.ZERO_POINT
    assert np.abs(q).max() == ls.QMAX
    restored = q * rows.scale[:, None].astype(np.float64)
    assert np.all(np.abs(restored - weight) <= rows.scale[:, None] / 2 * (1 + 1e-6))
    np.testing.assert_allclose(rows.error_norm, np.linalg.norm(weight - restored, axis=1), rtol=1e-9)
    np.testing.assert_allclose(rows.weight_norm, np.linalg.norm(weight.astype(np.float64), axis=1), rtol=1e-12)


def _brute_force(values, rows, c, d, ends):
    bound = ls.screen_bounds(rows.weight_norm, rows.error_norm, c, d)
    outside = np.setdiff1d(np.arange(values.size), ends)
    lower = np.max(values[outside] - bound[outside])
    return np.union1d(np.flatnonzero(values + bound >= lower), ends)


@pytest.mark.parametrize("ends", [(), (7,), (7, 2999)])
def test_candidates_are_every_row_that_can_win_and_hold_the_fp32_argmax_masked_or_not(ends):
    rng = np.random.default_rng(2)
    weight = _rows(rng)
    rows = ls.quantize_rows(weight)
    ends = np.array(ends, np.int64)
    for trial in range(20):
        hidden = _hidden(rng, 1) * rng.uniform(0.05, 3.0)
        if ends.size and trial % 2:
            hidden = hidden + 4 * weight[ends[0]] / np.linalg.norm(weight[ends[0]])  # an end token near the top
        values, c, d = _screen(rows, hidden)
        got = ls.candidates(values[0], rows.weight_norm, rows.error_norm, float(c[0]), float(d[0]), ends)
        np.testing.assert_array_equal(got, _brute_force(values[0], rows, float(c[0]), float(d[0]), ends))
        fp32 = weight @ hidden[0]
        assert int(np.argmax(fp32)) in got
        masked = fp32.copy()
        masked[ends] = -np.inf
        assert int(np.argmax(masked)) in got
        assert got.size < VOCAB // 4  # the screen leaves most rows out


@pytest.fixture(scope="module")
def runners(asr_export):
    return DecoderRunner(asr_export), DecoderRunner(asr_export, screen=False)


def test_an_fp32_export_decodes_with_the_body_graph_and_the_screen(asr_export, runners):
    screened, plain = runners
    assert screened.screen is not None and plain.screen is None
    outputs = screened.session.get_outputs()
    assert outputs[0].name == HIDDEN_OUTPUT and outputs[0].shape[1] == screened.spec.text.hidden_size
    assert plain.session.get_outputs()[0].name == "logits"
    body = onnx.load(str(asr_export / DECODER_BODY_FILENAME), load_external_data=False)
    vocab = screened.spec.text.vocab_size
    assert not [t.name for t in body.graph.initializer if vocab in t.dims]  # the projection is not in it
    assert screened.screen.self_check()


def test_screened_logits_choose_the_fp32_token_and_equal_it_where_recomputed(runners):
    screened, _ = runners
    screen = screened.screen
    rng = np.random.default_rng(3)
    ends = frozenset(screened.spec.eos_token_ids)
    embed = np.asarray(screened.embed[:5000], np.float32)
    # Hidden states near a few token rows (peaked distributions) and plain noise (flatter ones).
    hidden = np.concatenate(
        [
            embed[rng.integers(0, 5000, 6)] * 3 + rng.standard_normal((6, embed.shape[1])),
            rng.standard_normal((4, embed.shape[1])),
        ]
    ).astype(np.float32)
    before = screen.stats.rows
    logits = screen.logits(hidden, [ends] * hidden.shape[0])
    assert screen.stats.rows - before == hidden.shape[0]
    full = screen.full(hidden)
    for row, (got, want) in enumerate(zip(logits, full, strict=True)):
        assert int(np.argmax(got)) == int(np.argmax(want)), row
        masked_got, masked_want = got.copy(), want.copy()
        masked_got[list(ends)] = masked_want[list(ends)] = -np.inf
        assert int(np.argmax(masked_got)) == int(np.argmax(masked_want)), row
        top = int(np.argmax(got))
        np.testing.assert_allclose(got[[top, *ends]], want[[top, *ends]], rtol=1e-5, atol=1e-5)


def test_more_candidates_than_the_limit_fall_back_to_every_logit_in_fp32(runners, monkeypatch):
    screened, _ = runners
    screen = screened.screen
    hidden = np.random.default_rng(6).standard_normal((2, screened.spec.text.hidden_size)).astype(np.float32)
    monkeypatch.setattr(ls, "MAX_CANDIDATES", 0)  # as a flat distribution leaves too many rows
    before = screen.stats.fallbacks
    logits = screen.logits(hidden, [frozenset()] * 2)
    assert screen.stats.fallbacks == before + 2
    np.testing.assert_array_equal(logits, screen.full(hidden))


def test_greedy_decoding_gives_the_same_tokens_with_and_without_the_screen(runners):
    screened, plain = runners
    rng = np.random.default_rng(4)
    hidden = screened.spec.text.hidden_size
    scale = float(np.std(screened.embed[:1000]))
    for n in (40, 120):
        table = (rng.standard_normal((n, hidden)) * scale).astype(np.float32)
        ids = np.concatenate([np.arange(5), screened.spec.text.vocab_size + np.arange(n), np.arange(20, 26)])
        a = greedy_decode(screened, ids.astype(np.int64), table, 24, min_new_tokens=12)
        b = greedy_decode(plain, ids.astype(np.int64), table, 24, min_new_tokens=12)
        assert a.tokens == b.tokens
        # The log-probabilities differ only by the screen error of the improbable rows.
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=5e-3)


def test_a_cpu_whose_integer_products_are_inexact_decodes_with_the_whole_graph(asr_export, monkeypatch):
    original = ls.LogitScreen.products

    def saturating(self, codes):
        # AVX2's u8 x s8 kernel: pairs of products summed in saturating 16-bit arithmetic.
        return np.clip(original(self, codes), -(2**15), 2**15 - 1).astype(np.int32)

    monkeypatch.setattr(ls.LogitScreen, "products", saturating)
    runner = DecoderRunner(asr_export)
    assert runner.screen is None and runner.session.get_outputs()[0].name == "logits"


@pytest.mark.parametrize("configured", ["true", "false"])
def test_the_repository_decoder_screens_unless_its_config_says_false(model_repository, configured):
    from qwen3_asr_triton.runners import decoder_runner

    runner = decoder_runner(model_repository / "decoder" / "1", {"precision": "fp32", "logit_screen": configured})
    assert (runner.screen is not None) == (configured == "true")


def test_only_an_exactly_tied_projection_is_screened():
    rng = np.random.default_rng(5)
    embed = rng.standard_normal((50, 8)).astype(np.float32)
    projection = np.ascontiguousarray(embed.T)
    assert projection_is_tied(projection, embed, chunk=7)
    projection[3, 41] = np.nextafter(projection[3, 41], np.float32(np.inf))
    assert not projection_is_tied(projection, embed, chunk=7)
    assert not projection_is_tied(projection[:, :49], embed)
