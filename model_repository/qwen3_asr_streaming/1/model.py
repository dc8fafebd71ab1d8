"""qwen3_asr_streaming: many concurrent live streams, partial and final hypotheses.

Decoupled model under Triton's sequence batcher (correlation id, START / END).
Each chunk request appends audio to its stream's state and answers with a
partial hypothesis; the END request answers with the final one. The policy
(official re-decoding with a rolled-back prefix, plus exact encoder-window
reuse) is qwen3_asr_triton.streaming; the neural stages are the same BLS
stages as qwen3_asr, so partials of all streams share the decoder's batch.
State is freed on END, on errors at START, and after an idle timeout.

With ENDPOINTING at START (Silero VAD, qwen3_asr_triton.endpointing) a chunk
gets zero or more responses: the finals of the utterances that ended
(UTTERANCE_FINAL true), then a partial of the utterance being spoken; silence
gets none. The last response of the stream carries IS_FINAL.
"""

import asyncio
import threading

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.artifacts import SPEAKER_FILENAME, VAD_FILENAME
from qwen3_asr_triton.audio import decode_audio_bytes
from qwen3_asr_triton.bls import recognizer_from_parameters
from qwen3_asr_triton.diarization.embedding import SpeakerEmbedder
from qwen3_asr_triton.diarization.online import OnlineSpeakers
from qwen3_asr_triton.diarization.options import DiarizationOptions
from qwen3_asr_triton.endpointing import EndpointingOptions
from qwen3_asr_triton.errors import InputError
from qwen3_asr_triton.metrics import ModelMetrics
from qwen3_asr_triton.serving import (
    RequestInputs,
    model_parameters,
    setup_worker,
    string_tensor,
    transcript_outputs,
    triton_error,
    version_dir,
)
from qwen3_asr_triton.streaming import StreamingPolicy, StreamRecognizer, StreamRegistry
from qwen3_asr_triton.vad import SileroVad

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
COUNTERS = {
    "partials": "partial hypotheses sent",
    "finals": "final hypotheses sent (stream ends)",
    "utterances": "utterance finals sent (streams with endpointing)",
    "superseded": "partials skipped because a newer chunk of the stream had arrived",
    "expired": "streams dropped after the idle timeout",
    "windows_encoded": "8 s encoder windows encoded for partials",
    "windows_reused": "8 s encoder windows reused unchanged for partials",
}


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        setup_worker(params.get("log_level", "INFO"))
        self.policy = StreamingPolicy(
            rollback_tokens=int(params["rollback_tokens"]),
            reuse_windows=params["reuse_windows"] == "true",
            max_stream_seconds=float(params["max_stream_seconds"]),
            stream_idle_seconds=float(params["stream_idle_seconds"]),
            max_streams=int(params["max_streams"]),
        )
        folder = version_dir(args)
        recognizer = recognizer_from_parameters(pb_utils, params, folder)
        self.endpointing = EndpointingOptions(
            vad_threshold=float(params["vad_threshold"]),
            vad_min_silence_ms=int(params["vad_min_silence_ms"]),
            vad_speech_pad_ms=int(params["vad_speech_pad_ms"]),
            max_utterance_seconds=float(params["max_utterance_seconds"]),
        )
        vad_path = folder / VAD_FILENAME
        vad = SileroVad(vad_path) if vad_path.is_file() else None
        speaker_path = folder / SPEAKER_FILENAME
        embed_speaker = SpeakerEmbedder(speaker_path).embed_one if speaker_path.is_file() else None
        self.streamer = StreamRecognizer(recognizer, self.policy, vad=vad, embed_speaker=embed_speaker)
        self.registry = StreamRegistry(self.policy)
        self.metrics = ModelMetrics(
            pb_utils,
            {"model": args["model_name"]},
            counters={key: (f"qwen3_asr_streaming_{key}_total", text) for key, text in COUNTERS.items()},
            gauges={"active_streams": ("qwen3_asr_streaming_active_streams", "streams holding state")},
        )
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep, name="stream-idle-sweep", daemon=True)
        self._sweeper.start()

    def _sweep(self):
        while not self._stop.wait(min(1.0, self.policy.stream_idle_seconds / 4)):
            self.metrics.increment("expired", len(self.registry.expire()))
            self.metrics.set("active_streams", len(self.registry))

    async def execute(self, requests):
        await asyncio.gather(*(self._one(request) for request in requests))
        return None

    def _chunk(self, inputs):
        wave = inputs.array("WAVEFORM")
        audio = inputs.raw_bytes("AUDIO")
        if wave is not None and audio is not None:
            raise InputError("send WAVEFORM (+ SAMPLE_RATE) or AUDIO in a chunk, not both")
        if audio is not None:
            return decode_audio_bytes(audio, self.streamer.audio_limits)
        rate = inputs.integer("SAMPLE_RATE")
        return (np.zeros(0, np.float32) if wave is None else wave.reshape(-1)), rate

    async def _one(self, request):
        sender = request.get_response_sender()
        key = None
        opened = False
        try:
            inputs = RequestInputs(pb_utils, request)
            key = inputs.integer("CORRID")
            if sender.is_cancelled():  # the client gave up on the stream: free it now, not at the idle timeout
                self.registry.close(key)
                sender.send(flags=FINAL)
                return
            start, end = bool(inputs.integer("START", 0)), bool(inputs.integer("END", 0))
            samples, rate = self._chunk(inputs)
            if start:
                options = self.streamer.recognizer.options(
                    inputs.text("LANGUAGE"),
                    inputs.text("CONTEXT"),
                    inputs.flag("RETURN_TIMESTAMPS"),
                    inputs.integer("MAX_NEW_TOKENS"),
                    inputs.integer("MIN_NEW_TOKENS"),
                )
                if rate is None:
                    raise InputError("the START chunk needs SAMPLE_RATE (or AUDIO bytes)")
                endpointing = self._endpointing(inputs)
                speakers = self._speakers(inputs, endpointing)
                state = self.registry.open(key, options, int(rate), endpointing)
                state.speakers = speakers
                opened = True
                state.lock = asyncio.Lock()
            else:
                state = self.registry.get(key)
                rate = state.sample_rate if rate is None else int(rate)
            self.streamer.add_chunk(state, samples, rate)
            self.metrics.set("active_streams", len(self.registry))
            chunk = state.chunks
            responses = []
            async with state.lock:
                finals = await self.streamer.advance(state, end=end)
                for i, utterance in enumerate(finals):
                    outputs = transcript_outputs(pb_utils, utterance.transcript)
                    outputs += self._utterance(utterance.index, True, utterance.start_seconds, utterance.end_seconds)
                    # With endpointing, the last utterance that ends with the stream is the stream's final.
                    responses.append(outputs + self._flags(end and i == len(finals) - 1, state.seconds))
                    self.metrics.increment("utterances")
                if end:
                    if not state.endpointing:
                        responses.append(await self._final(state))
                    elif not finals:
                        responses.append(self._closing(state))
                    self.registry.close(key)
                    self.metrics.increment("finals")
                elif chunk < state.chunks:
                    self.metrics.increment("superseded")
                elif state.speaking:
                    before = (state.encoded_windows, state.reused_windows)
                    partial = await self.streamer.partial(state)
                    self.metrics.increment("windows_encoded", state.encoded_windows - before[0])
                    self.metrics.increment("windows_reused", state.reused_windows - before[1])
                    responses.append(
                        [
                            string_tensor(pb_utils, "TEXT", [partial.text]),
                            string_tensor(pb_utils, "DETECTED_LANGUAGE", [partial.language or ""]),
                            pb_utils.Tensor("TOKEN_IDS", np.asarray(partial.token_ids, np.int32)),
                            *self._flags(False, partial.audio_seconds),
                            *self._utterance(partial.utterance, False, partial.start_seconds, partial.audio_seconds),
                        ]
                    )
                    self.metrics.increment("partials")
            for i, outputs in enumerate(responses):
                # max_batch_size > 0: every output carries the request's batch dimension of 1.
                batched = [pb_utils.Tensor(t.name(), t.as_numpy()[None]) for t in outputs]
                last = i == len(responses) - 1
                sender.send(pb_utils.InferenceResponse(output_tensors=batched), flags=FINAL if last else 0)
            if not responses:
                sender.send(flags=FINAL)
        except Exception as exc:  # per-request isolation; a failed START or END still frees the stream
            if key is not None and (opened or inputs_say_end(request)):
                self.registry.close(key)
            sender.send(
                pb_utils.InferenceResponse(output_tensors=[], error=triton_error(pb_utils, exc, False)), flags=FINAL
            )
        finally:
            self.metrics.set("active_streams", len(self.registry))

    def _endpointing(self, inputs):
        """The stream's endpointing options from the START inputs (None: one utterance, as without VAD)."""
        knobs = (
            inputs.number("VAD_THRESHOLD"),
            inputs.integer("VAD_MIN_SILENCE_MS"),
            inputs.integer("VAD_SPEECH_PAD_MS"),
        )
        if not inputs.flag("ENDPOINTING"):
            if any(k is not None for k in knobs):
                raise InputError("VAD_THRESHOLD, VAD_MIN_SILENCE_MS and VAD_SPEECH_PAD_MS need ENDPOINTING true")
            return None
        if self.streamer.vad is None:
            raise InputError(f"ENDPOINTING needs the VAD graph ({VAD_FILENAME}), which this repository lacks")
        try:
            return self.endpointing.with_overrides(*knobs)
        except ValueError as exc:
            raise InputError(str(exc)) from exc

    def _speakers(self, inputs, endpointing):
        """The stream's online speaker labels when START asks for DIARIZE (None otherwise)."""
        if not inputs.flag("DIARIZE"):
            if inputs.array("MAX_SPEAKERS") is not None:
                raise InputError("MAX_SPEAKERS applies only with DIARIZE")
            return None
        if endpointing is None:
            raise InputError("DIARIZE needs ENDPOINTING: a stream's speakers are labelled utterance by utterance")
        if self.streamer.embed_speaker is None:
            raise InputError(
                "DIARIZE needs a diarizer, and this deployment has none (build the model repository with --diarizer)"
            )
        options = DiarizationOptions.from_request(max_speakers=inputs.integer("MAX_SPEAKERS"))
        return OnlineSpeakers(max_speakers=options.max_speakers)

    async def _final(self, state):
        """The END response of a stream without endpointing: the whole stream, as a unary request."""
        result = await self.streamer.final(state)
        return (
            transcript_outputs(pb_utils, result)
            + self._flags(True, state.seconds)
            + self._utterance(0, True, 0.0, state.seconds)
        )

    def _closing(self, state):
        """END of an endpointed stream that ended in silence: an empty response that carries IS_FINAL."""
        empty = [
            string_tensor(pb_utils, "TEXT", [""]),
            string_tensor(pb_utils, "DETECTED_LANGUAGE", [""]),
            pb_utils.Tensor("TOKEN_IDS", np.zeros(0, np.int32)),
        ]
        return empty + self._flags(True, state.seconds) + self._utterance(state.utterance, False, *[state.seconds] * 2)

    @staticmethod
    def _utterance(index, final, start, end):
        return [
            pb_utils.Tensor("UTTERANCE_INDEX", np.array([index], np.int32)),
            pb_utils.Tensor("UTTERANCE_FINAL", np.array([final])),
            pb_utils.Tensor("UTTERANCE_START", np.array([start], np.float32)),
            pb_utils.Tensor("UTTERANCE_END", np.array([end], np.float32)),
        ]

    @staticmethod
    def _flags(final, seconds):
        return [
            pb_utils.Tensor("IS_FINAL", np.array([final])),
            pb_utils.Tensor("AUDIO_SECONDS", np.array([seconds], np.float32)),
        ]

    def finalize(self):
        self._stop.set()
        self._sweeper.join(timeout=5)
        self.metrics.close()


def inputs_say_end(request):
    end = pb_utils.get_input_tensor_by_name(request, "END")
    return end is not None and bool(end.as_numpy().reshape(-1)[0])
