"""Error mapping of the model.py glue and the BLS hop, without a server.

Missing inputs of internal models are client errors (INVALID_ARG), never internal ones; an internal
error reported by a model called through BLS reaches the client said to be internal once, with the
called model's own text; a client's cancellation is CANCELLED and no error in the server log.
"""

from __future__ import annotations

import logging

import numpy as np

from qwen3_asr_triton.errors import CapacityError, DownstreamError, RequestCancelledError
from qwen3_asr_triton.serving import CANCELLED_MARK, INTERNAL_PREFIX, error_response, raise_for_bls_error, triton_error
from tests import fake_pb_utils as pb
from tests.fake_pb_utils import InferenceRequest
from tests.test_models_unit import error_text, load


def test_encoder_names_a_missing_input_as_a_client_error(model_repository):
    model = load(model_repository, "encoder")
    (response,) = model.execute([InferenceRequest({"input_features": np.zeros((1, 128, 100), np.float32)})])
    assert error_text(response).endswith("missing input feature_lens")
    assert response.error().code() == pb.TritonError.INVALID_ARG


def test_postprocess_refuses_missing_and_negative_ids(model_repository):
    model = load(model_repository, "postprocess")
    missing, outside = model.execute(
        [InferenceRequest({}), InferenceRequest({"TOKEN_IDS": np.array([5, -1], np.int32)})]
    )
    assert error_text(missing).endswith("missing input TOKEN_IDS")
    assert "token id -1 is negative" in error_text(outside)
    assert missing.error().code() == outside.error().code() == pb.TritonError.INVALID_ARG


def test_an_internal_error_downstream_is_said_to_be_internal_once():
    downstream = error_response(pb, RuntimeError("ONNX Runtime failed"))  # what the decoder sends back
    assert downstream.error().message() == "internal error: RuntimeError: ONNX Runtime failed"
    try:
        raise_for_bls_error(downstream, "decoder")
    except DownstreamError as exc:
        error = triton_error(pb, exc, marked=False)
    else:
        raise AssertionError("the BLS error was not raised")
    assert error.message() == "internal error: decoder: RuntimeError: ONNX Runtime failed"
    assert error.message().count(INTERNAL_PREFIX) == 1
    assert error.code() == pb.TritonError.INTERNAL


def test_a_downstream_worker_lost_to_a_restart_is_unavailable():
    """Triton's own BLS errors while the watchdog restarts the server (a dead stub, the shutdown) pass: the
    entry model answers UNAVAILABLE, which clients retry, not an internal error."""
    for text in ("Stub process 'decoder_0_0' is not healthy.", "Error when running inference: Server not ready"):
        downstream = pb.InferenceResponse(error=pb.TritonError(f"Model decoder - {text}"))
        try:
            raise_for_bls_error(downstream, "decoder")
        except CapacityError as exc:
            error = triton_error(pb, exc)
        else:
            raise AssertionError(f"{text!r} was not raised as a capacity error")
        assert error.code() == pb.TritonError.UNAVAILABLE
        assert "the decoder worker is not running; the server is restarting it" in error.message()


def test_a_client_cancellation_is_cancelled_and_logs_no_error(caplog):
    caplog.set_level(logging.DEBUG)
    cancelled = RequestCancelledError("the client cancelled the request")
    for marked in (True, False):
        error = triton_error(pb, cancelled, marked=marked)
        assert error.code() == pb.TritonError.CANCELLED
        assert error.message() == (CANCELLED_MARK if marked else "") + "the client cancelled the request"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    # The same capture sees what an internal error logs: the absence above is not a logger caplog misses.
    triton_error(pb, RuntimeError("ONNX Runtime failed"))
    assert [r.levelno for r in caplog.records if r.levelno >= logging.ERROR] == [logging.ERROR]
