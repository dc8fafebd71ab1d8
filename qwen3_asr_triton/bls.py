"""The neural stages as BLS calls to the other Triton models (used by the entry models).

Implements :class:`~.pipeline.Stages` with ``pb_utils.InferenceRequest.exec`` run in worker threads
(:func:`run_bls`, never ``async_exec``):

- ``encode``: one request per 8 s window to ``encoder`` (all in flight at once;
  Triton's dynamic batcher packs windows of concurrent requests together);
- ``generate``: one request to ``decoder`` in TensorRT-LLM's interface (prompt
  table ids + prompt_embedding_table), decoupled;
- ``postprocess``, ``align``: one request each to ``postprocess`` / ``aligner``.

``pb_utils`` is passed in; this module does not import Triton.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

import numpy as np

from .alignment import WordTime
from .features import EncoderWindows
from .output import ParsedOutput
from .pipeline import Generation, Recognizer, TokenCallback
from .serving import raise_for_bls_error, string_tensor

# What a generation request sends the decoder and reads back: TensorRT-LLM's tensor names, which the
# cpu decoder speaks too (both targets' decoder configs must declare every one of them).
DECODER_INPUTS = (
    "input_ids",
    "input_lengths",
    "request_output_len",
    "min_length",
    "end_id",
    "pad_id",
    "stop_words_list",
    "prompt_embedding_table",
    "prompt_vocab_size",
    "return_log_probs",
    "streaming",
)
DECODER_OUTPUTS = ("output_ids", "sequence_length", "output_log_probs")
# Every BLS call is the blocking ``exec`` in a thread of this pool, never ``async_exec``. Triton 2.51's
# python backend (the newest server the cpu target runs) completes ``async_exec`` through a callback
# that can touch an object already destroyed when the awaiting coroutine was cancelled, a use-after-free
# fixed upstream in June 2026 (python_backend#439). Streams cancel superseded partials all the time:
# at 32 live streams the streaming worker died of heap corruption in 2 of 8 runs. A thread blocked in
# ``exec`` owns its call until the answer arrives, whatever happens to the coroutine that waited for it.
# A decoupled call's iterator also blocks its thread until the next response, so every generation in
# flight holds one thread for as long as it decodes (a stop request one more, briefly) and every
# encoder window one while it is encoded. asyncio's default pool has min(32, cores + 4) threads, 6 on
# a 2-core machine: the calls get their own pool, sized far above the decoder's running sequences;
# idle threads cost nothing and are created only when needed.
BLS_THREADS = 512
_BLS_POOL = ThreadPoolExecutor(max_workers=BLS_THREADS, thread_name_prefix="bls")

T = TypeVar("T")


async def run_bls(call: Callable[[], T]) -> T:
    """Run ``call`` (a blocking BLS ``exec`` and whatever reads its answer) in a thread of the BLS pool.

    Cancelling the awaiting coroutine leaves the thread to finish the call; its answer is dropped.
    """
    return await asyncio.get_running_loop().run_in_executor(_BLS_POOL, call)


@dataclass(frozen=True)
class BlsConfig:
    """Names and wire details of the downstream models.

    Attributes
    ----------
    pad_windows_to : int
        Pad every window to this many frames (0 = keep the tail short). TensorRT
        engines batch only equal shapes, so the gpu target pads to a full window.
    prompt_table_dtype : str
        numpy dtype of ``prompt_embedding_table`` (float32 on cpu, float16 for a
        TensorRT-LLM fp16 engine).
    end_id : int
        First EOS id (``end_id``); ``stop_ids`` are the other ids that end generation.
    """

    end_id: int
    stop_ids: tuple[int, ...] = ()
    pad_windows_to: int = 0
    prompt_table_dtype: str = "float32"
    encoder: str = "encoder"
    decoder: str = "decoder"
    postprocess: str = "postprocess"
    aligner: str = "aligner"


def stop_words_list(ids: tuple[int, ...]) -> np.ndarray:
    """TensorRT-LLM's ``[1, 2, K]`` stop-words layout for single-token stop words."""
    if not ids:
        return np.array([[[-1], [-1]]], dtype=np.int32)
    flat = list(ids)
    offsets = list(range(1, len(flat) + 1))
    return np.array([[flat, offsets]], dtype=np.int32)


class BlsStages:
    """:class:`~.pipeline.Stages` over BLS (see module docstring)."""

    def __init__(self, pb_utils: ModuleType, config: BlsConfig) -> None:
        self.pb = pb_utils
        self.config = config

    async def _call(self, model: str, inputs: list, outputs: list[str]):
        request = self.pb.InferenceRequest(model_name=model, inputs=inputs, requested_output_names=outputs)
        response = await run_bls(request.exec)
        raise_for_bls_error(response, model)
        return response

    def _out(self, response, name: str) -> np.ndarray:
        return self.pb.get_output_tensor_by_name(response, name).as_numpy()

    async def encode(self, windows: EncoderWindows) -> np.ndarray:
        pb, cfg = self.pb, self.config

        async def one(feats: np.ndarray, frames: int) -> np.ndarray:
            if cfg.pad_windows_to and feats.shape[1] < cfg.pad_windows_to:
                feats = np.pad(feats, ((0, 0), (0, cfg.pad_windows_to - feats.shape[1])))
            response = await self._call(
                cfg.encoder,
                [
                    pb.Tensor("input_features", np.ascontiguousarray(feats[None], dtype=np.float32)),
                    pb.Tensor("feature_lens", np.array([[frames]], dtype=np.int64)),
                ],
                ["audio_embeds", "embed_lens"],
            )
            embeds = self._out(response, "audio_embeds")
            return embeds[0, : int(self._out(response, "embed_lens").reshape(-1)[0])]

        parts = await asyncio.gather(*(one(f, int(n)) for f, n in zip(windows.features, windows.frames)))
        return np.concatenate(parts, axis=0)

    async def generate(
        self,
        prompt_ids: np.ndarray,
        prompt_table: np.ndarray,
        max_new_tokens: int,
        min_new_tokens: int = 0,
        on_token: TokenCallback | None = None,
        want_logprobs: bool = True,
    ) -> Generation:
        pb, cfg = self.pb, self.config
        ids = np.asarray(prompt_ids, dtype=np.int32)[None]
        values = {
            "input_ids": ids,
            "input_lengths": np.array([[ids.shape[1]]], np.int32),
            "request_output_len": np.array([[max_new_tokens]], np.int32),
            "min_length": np.array([[min_new_tokens]], np.int32),
            "end_id": np.array([[cfg.end_id]], np.int32),
            "pad_id": np.array([[cfg.end_id]], np.int32),
            "stop_words_list": stop_words_list(cfg.stop_ids),
            "prompt_embedding_table": np.ascontiguousarray(prompt_table[None], dtype=cfg.prompt_table_dtype),
            "prompt_vocab_size": np.array([[prompt_table.shape[0]]], np.int32),
            "return_log_probs": np.array([[want_logprobs]]),
            "streaming": np.array([[on_token is not None]]),
        }
        inputs = [pb.Tensor(name, values[name]) for name in DECODER_INPUTS]
        request_id = uuid.uuid4().hex
        request = pb.InferenceRequest(
            model_name=cfg.decoder,
            inputs=inputs,
            requested_output_names=list(DECODER_OUTPUTS),
            request_id=request_id,
        )
        loop = asyncio.get_running_loop()

        def call() -> list:
            # Streaming: each response holds one step's ids, handed to on_token on the event loop
            # (in order, and all of them before this call's result arrives there).
            collected = []
            for response in request.exec(decoupled=True):
                collected.append(response)
                if on_token is not None and not response.has_error() and response.output_tensors():
                    loop.call_soon_threadsafe(on_token, self._step_ids(response))
            return collected

        try:
            collected = await run_bls(call)
        except asyncio.CancelledError:
            # Our caller's client went away: have the decoder drop the sequence at its next step
            # (the draining thread ends with the decoder's CANCELLED answer).
            await self.stop_generation(request_id)
            raise
        tokens: list[int] = []
        scores: list[float] = []
        for response in collected:
            raise_for_bls_error(response, cfg.decoder)
            if not response.output_tensors():
                continue
            step_ids = self._step_ids(response)
            step_logprobs = (
                self._out(response, "output_log_probs").reshape(-1)[: len(step_ids)].tolist() if want_logprobs else []
            )
            if on_token is None:  # one response with the whole sequence
                tokens, scores = step_ids, step_logprobs
            else:
                tokens += step_ids
                scores += step_logprobs
        return Generation(tokens, scores)

    def _step_ids(self, response) -> list[int]:
        """The generated ids of a decoder response (``sequence_length`` of ``output_ids``)."""
        length = int(self._out(response, "sequence_length").reshape(-1)[0])
        return self._out(response, "output_ids").reshape(-1)[:length].tolist()

    async def stop_generation(self, request_id: str) -> None:
        """Ask the decoder to drop the generation ``request_id`` (TensorRT-LLM's ``stop`` request)."""
        pb = self.pb
        stop = pb.InferenceRequest(
            model_name=self.config.decoder,
            inputs=[
                pb.Tensor("input_ids", np.zeros((1, 1), np.int32)),
                pb.Tensor("input_lengths", np.ones((1, 1), np.int32)),
                pb.Tensor("request_output_len", np.ones((1, 1), np.int32)),
                pb.Tensor("stop", np.ones((1, 1), bool)),
            ],
            requested_output_names=[],
            request_id=request_id,
        )
        await run_bls(lambda: list(stop.exec(decoupled=True)))

    async def postprocess(self, tokens: list[int], forced_language: str | None) -> ParsedOutput:
        pb = self.pb
        response = await self._call(
            self.config.postprocess,
            [
                pb.Tensor("TOKEN_IDS", np.asarray(tokens, dtype=np.int32)),
                string_tensor(pb, "FORCED_LANGUAGE", [forced_language or ""]),
            ],
            ["TEXT", "LANGUAGE"],
        )
        text = self._out(response, "TEXT").reshape(-1)[0].decode("utf-8")
        language = self._out(response, "LANGUAGE").reshape(-1)[0].decode("utf-8")
        return ParsedOutput(language or None, text)

    async def align(self, mel: np.ndarray, text: str, language: str | None) -> list[WordTime]:
        pb = self.pb
        response = await self._call(
            self.config.aligner,
            [
                pb.Tensor("MEL", np.ascontiguousarray(mel, dtype=np.float32)),
                string_tensor(pb, "TEXT", [text]),
                string_tensor(pb, "LANGUAGE", [language or ""]),
            ],
            ["WORDS", "WORD_START", "WORD_END"],
        )
        words = [w.decode("utf-8") for w in self._out(response, "WORDS").reshape(-1)]
        starts = self._out(response, "WORD_START").reshape(-1).tolist()
        ends = self._out(response, "WORD_END").reshape(-1).tolist()
        return [WordTime(w, round(s, 3), round(e, 3)) for w, s, e in zip(words, starts, ends)]


def recognizer_from_parameters(pb_utils: ModuleType, params: dict[str, str], folder) -> Recognizer:
    """The BLS-backed :class:`~.pipeline.Recognizer` an entry model builds from its config parameters.

    ``folder`` is the model's version directory holding ``model_spec.json`` and ``tokenizer.json``.
    """
    from .model_spec import ModelSpec
    from .pipeline import RecognizerLimits
    from .prompt import PromptLimits
    from .tokenizer import TextTokenizer

    spec = ModelSpec.load(folder)
    limits = RecognizerLimits(
        max_new_tokens=int(params["max_new_tokens"]),
        max_segment_seconds=float(params["max_segment_seconds"]),
        max_align_segment_seconds=float(params["max_align_segment_seconds"]),
        prompt=PromptLimits(max_context_tokens=int(params["max_context_tokens"])),
    )
    eos = list(spec.eos_token_ids)
    end_id = spec.pad_token_id if spec.pad_token_id in eos else eos[0]
    stages = BlsStages(
        pb_utils,
        BlsConfig(
            end_id=end_id,
            stop_ids=tuple(e for e in eos if e != end_id),
            pad_windows_to=int(params["pad_windows_to"]),
            prompt_table_dtype=params["prompt_table_dtype"],
        ),
    )
    return Recognizer(
        spec, TextTokenizer.from_file(folder), stages, has_aligner=params["aligner_enabled"] == "true", limits=limits
    )
