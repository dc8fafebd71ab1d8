"""decoder (cpu target): greedy Qwen3 decoding with in-flight batching on ONNX Runtime (or torch for bf16).

Decoupled model with TensorRT-LLM's request interface (input_ids with audio as
prompt-table ids, prompt_embedding_table, request_output_len, end_id,
stop_words_list, streaming, return_log_probs, stop -> output_ids, sequence_length,
output_log_probs, cum_log_probs), so the entry model talks to the cpu and gpu
decoders the same way. Requests are handed to an InflightScheduler thread:
they join the running batch after their prefill and leave as soon as they
finish. Scheduler counters are exported as Triton metrics.

Cancellation, as in TensorRT-LLM's backend: a request with ``stop`` true names a running
request by its request id, which is dropped (KV cache freed) at the next step and answered
with CANCELLED. Triton 2.51 does not pass a BLS caller's cancellation on, so the entry model
sends such a stop when its own client goes away.

The model enforces its own limits, so calling it directly can do nothing the public model
cannot: at most ``max_new_tokens`` new tokens, ids within the vocabulary and the prompt table,
a table no larger than the prompt, the KV budget and the model's positions.
"""

import threading

import numpy as np
import triton_python_backend_utils as pb_utils

from qwen3_asr_triton.decoding.scheduler import GenerationRequest, InflightScheduler, SchedulerConfig
from qwen3_asr_triton.errors import InputError
from qwen3_asr_triton.metrics import ModelMetrics
from qwen3_asr_triton.runners import decoder_runner
from qwen3_asr_triton.serving import RequestInputs, model_parameters, setup_worker, triton_error, version_dir

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
COUNTERS = {
    "steps": ("qwen3_asr_decoder_steps_total", "decode steps run (one graph call each)"),
    "step_sequences": ("qwen3_asr_decoder_step_sequences_total", "sequences advanced, summed over steps"),
    "inflight_joins": ("qwen3_asr_decoder_inflight_joins_total", "sequences that joined a running batch"),
    "inflight_leaves": ("qwen3_asr_decoder_inflight_leaves_total", "sequences that left while others ran on"),
    "prefill_chunks": ("qwen3_asr_decoder_prefill_chunks_total", "prefill graph calls"),
    "prefill_rows": ("qwen3_asr_decoder_prefill_rows_total", "prompt chunks prefilled, summed over prefill calls"),
    "completed": ("qwen3_asr_decoder_completed_total", "sequences finished"),
    "rejected": ("qwen3_asr_decoder_rejected_total", "requests refused for capacity"),
    "cancelled": ("qwen3_asr_decoder_cancelled_total", "requests dropped because their client cancelled them"),
}


def _stop_ids(stop_words):
    """Single-token stop words of a TensorRT-LLM [1, 2, K] stop_words_list."""
    if stop_words is None:
        return set()
    arr = stop_words.reshape(2, -1)
    ids, offsets = arr[0], [o for o in arr[1].tolist() if o >= 0]
    starts = [0, *offsets[:-1]]
    return {int(ids[s]) for s, e in zip(starts, offsets) if e - s == 1}


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        setup_worker(params.get("log_level", "INFO"))
        runner = decoder_runner(version_dir(args), params)
        self.spec = runner.spec
        config = SchedulerConfig.from_memory(
            float(params["kv_cache_mb"]),
            runner.spec.text.kv_bytes_per_token,
            max_running_sequences=int(params["max_running_sequences"]),
            prefill_chunk=int(params["prefill_chunk"]),
            max_queue=int(params["max_queue"]),
        )
        self.max_new_tokens = int(params["max_new_tokens"])
        self.scheduler = InflightScheduler(runner, config)
        # Request ids of the generations in flight, and those a stop request named (see the module docstring).
        self._active: set[str] = set()
        self._stopped: set[str] = set()
        self._ids_lock = threading.Lock()
        self.metrics = ModelMetrics(
            pb_utils,
            {"model": args["model_name"]},
            counters=COUNTERS,
            gauges={"max_running": ("qwen3_asr_decoder_max_running_sequences", "largest running batch so far")},
        )
        self._published = dict.fromkeys(COUNTERS, 0)
        self._publish_lock = threading.Lock()
        self.scheduler.start()

    def _publish_metrics(self):
        with self._publish_lock:
            stats = self.scheduler.stats
            for key in COUNTERS:
                value = getattr(stats, key)
                if value > self._published[key]:
                    self.metrics.increment(key, value - self._published[key])
                    self._published[key] = value
            self.metrics.set("max_running", stats.max_running)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            generation = None
            try:
                if RequestInputs(pb_utils, request).flag("stop"):
                    self._stop(request.request_id())
                    sender.send(flags=FINAL)
                    continue
                generation = self._generation_request(request, sender)
                self.scheduler.submit(generation)
            except Exception as exc:  # per-request isolation: refuse this one, keep the rest
                if generation is not None:
                    self._forget(generation.key)
                sender.send(
                    pb_utils.InferenceResponse(output_tensors=[], error=triton_error(pb_utils, exc)), flags=FINAL
                )
        return None

    def _stop(self, key):
        """Mark the running request ``key`` for dropping at the next step (unknown ids are ignored)."""
        with self._ids_lock:
            if key and key in self._active:
                self._stopped.add(key)

    def _forget(self, key):
        with self._ids_lock:
            self._active.discard(key)
            self._stopped.discard(key)

    def _check_limits(self, ids, table, inputs):
        """The decoder's own bounds (see the module docstring); returns ``(max_new, min_new)``."""
        max_new = int(inputs.integer("request_output_len", 0))
        if not 1 <= max_new <= self.max_new_tokens:
            raise InputError(f"request_output_len must be between 1 and {self.max_new_tokens}, got {max_new}")
        min_new = int(inputs.integer("min_length", 0))
        if not 0 <= min_new <= max_new:
            raise InputError(f"min_length must be between 0 and request_output_len ({max_new}), got {min_new}")
        if table.shape[0] > ids.size:
            raise InputError(f"prompt_embedding_table has {table.shape[0]} rows, more than the {ids.size} input_ids")
        vocab_rows = inputs.integer("prompt_vocab_size")
        if vocab_rows is not None and vocab_rows != table.shape[0]:
            raise InputError(f"prompt_vocab_size {vocab_rows} != {table.shape[0]} prompt_embedding_table rows")
        return max_new, min_new

    def _generation_request(self, request, sender):
        inputs = RequestInputs(pb_utils, request)
        ids = inputs.array("input_ids")
        table = inputs.array("prompt_embedding_table")
        if ids is None or ids.size == 0:
            raise InputError("input_ids is empty")
        ids = ids.reshape(-1).astype(np.int64)
        length = inputs.integer("input_lengths", ids.size)
        if length != ids.size:
            raise InputError(f"input_lengths {length} != {ids.size} input_ids")
        hidden = self.spec.text.hidden_size
        if table is not None and (table.ndim < 2 or table.shape[-1] != hidden):
            raise InputError(f"prompt_embedding_table must have {hidden} columns, got shape {list(table.shape)[:4]}")
        table = np.zeros((0, hidden), np.float32) if table is None else table.reshape(-1, hidden).astype(np.float32)
        max_new, min_new = self._check_limits(ids, table, inputs)
        vocab = self.spec.text.vocab_size
        if np.any(ids < 0) or np.any(ids >= vocab + table.shape[0]):
            raise InputError(f"input_ids must be in [0, {vocab + table.shape[0]})")
        eos = set(self.spec.eos_token_ids)
        end_id = inputs.integer("end_id")
        if end_id is not None:
            eos = {end_id} | _stop_ids(inputs.array("stop_words_list"))
        streaming = inputs.flag("streaming")
        want_logprobs = inputs.flag("return_log_probs")

        def on_token(_req, token, logprob):
            # Streaming, as TensorRT-LLM's backend does: one response per step with that step's id
            # (and its log-probability when asked), then an empty final response.
            if streaming:
                outputs = [
                    pb_utils.Tensor("output_ids", np.array([[[token]]], np.int32)),
                    pb_utils.Tensor("sequence_length", np.array([[1]], np.int32)),
                ]
                if want_logprobs:
                    outputs.append(pb_utils.Tensor("output_log_probs", np.array([[[logprob]]], np.float32)))
                sender.send(pb_utils.InferenceResponse(output_tensors=outputs))

        key = request.request_id()

        def on_done(_req, seq, error):
            self._forget(key)
            try:
                if error is not None:
                    sender.send(
                        pb_utils.InferenceResponse(output_tensors=[], error=triton_error(pb_utils, error)), flags=FINAL
                    )
                elif streaming:
                    sender.send(flags=FINAL)
                else:
                    tokens = np.array([[seq.tokens]], np.int32)
                    outputs = [
                        pb_utils.Tensor("output_ids", tokens),
                        pb_utils.Tensor("sequence_length", np.array([[len(seq.tokens)]], np.int32)),
                    ]
                    if want_logprobs:
                        logprobs = np.array([[seq.logprobs]], np.float32)
                        outputs += [
                            pb_utils.Tensor("output_log_probs", logprobs),
                            pb_utils.Tensor("cum_log_probs", logprobs.sum(axis=-1)),
                        ]
                    sender.send(pb_utils.InferenceResponse(output_tensors=outputs), flags=FINAL)
            finally:
                self._publish_metrics()

        if key:
            with self._ids_lock:
                if key in self._active:
                    raise InputError("a request with this id is already running")
                self._active.add(key)
        return GenerationRequest(
            key=key,
            prompt_ids=ids,
            prompt_table=table,
            max_new_tokens=max_new,
            on_done=on_done,
            on_token=on_token,
            is_cancelled=lambda: sender.is_cancelled() or key in self._stopped,
            eos_ids=frozenset(eos),
            min_new_tokens=min_new,
            want_logprobs=want_logprobs,
        )

    def finalize(self):
        self.scheduler.stop()
        self.metrics.close()
