"""Sequences a client opened on a gRPC stream and has not ended: what the guard ends when the client vanishes.

A client of ``qwen3_asr_streaming`` sends START on its first chunk and END on its last; between the
two the model holds the stream's state. A client that vanishes without END (killed, network gone)
would leave that state until the model's idle timeout. The guard sees every message of the stream,
so it keeps the sequences opened and not ended (:class:`OpenSequences`) and, when the client's call
ends without a clean close, sends Triton an END for each (:func:`end_request`): the model then frees
the state at once, as for a client that ended its stream.
"""

from __future__ import annotations

from tritonclient.grpc import service_pb2 as pb

# The input the END message carries: an empty chunk of the streaming model's PCM (every input of
# that model is optional, but Triton refuses a request with no input at all).
END_INPUT = "WAVEFORM"
# Request id of the END messages the guard sends (its responses go nowhere).
END_REQUEST_ID = "guard-end-of-vanished-stream"


class OpenSequences:
    """The sequences of one client stream that were started and not yet ended, in order of start."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, str, bytes], pb.ModelInferRequest] = {}

    def note(self, request: pb.ModelInferRequest) -> None:
        """Account for a message forwarded to Triton (its ``sequence_*`` parameters)."""
        params = request.parameters
        if "sequence_id" not in params:
            return
        key = (request.model_name, request.model_version, params["sequence_id"].SerializeToString())
        if "sequence_end" in params and params["sequence_end"].bool_param:
            self._open.pop(key, None)
        elif "sequence_start" in params and params["sequence_start"].bool_param:
            self._open[key] = end_request(request)

    def __len__(self) -> int:
        return len(self._open)

    def ends(self) -> list[pb.ModelInferRequest]:
        """One END message per open sequence."""
        return list(self._open.values())


def end_request(started: pb.ModelInferRequest) -> pb.ModelInferRequest:
    """The END message of the sequence ``started`` opened: same model and id, an empty chunk."""
    request = pb.ModelInferRequest(
        model_name=started.model_name, model_version=started.model_version, id=END_REQUEST_ID
    )
    request.parameters["sequence_id"].CopyFrom(started.parameters["sequence_id"])
    request.parameters["sequence_end"].bool_param = True
    request.inputs.add(name=END_INPUT, datatype="FP32", shape=[1, 0])
    request.raw_input_contents.append(b"")
    return request
