"""The transformers implementation of Qwen3-ASR, used as the correctness reference.

The reference is ``transformers.models.qwen3_asr`` (transformers >= 5.24) in fp32, one
clip at a time (its feature extractor pads a batch to the longest clip, which
changes the features of the shorter ones), greedy decoding. This module wraps
it for tests and benchmarks: prompt ids, generated ids, the top-2 logit gap at
a given step (to prove a near-tie when two fp32 implementations disagree) and
forced-alignment timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class StepMargin:
    """Top-2 of the reference's next-token logits after a given prefix."""

    top1: int
    top2: int
    gap: float


class TransformersReference:
    """Greedy fp32 recognition and alignment with the transformers port."""

    def __init__(self, asr_checkpoint: str | Path, aligner_checkpoint: str | Path | None = None) -> None:
        from transformers import AutoProcessor, Qwen3ASRForConditionalGeneration, Qwen3ASRForTokenClassification

        self.processor = AutoProcessor.from_pretrained(str(asr_checkpoint))
        self.model = Qwen3ASRForConditionalGeneration.from_pretrained(str(asr_checkpoint), dtype=torch.float32).eval()
        self.aligner = self.aligner_processor = None
        if aligner_checkpoint is not None:
            self.aligner_processor = AutoProcessor.from_pretrained(str(aligner_checkpoint))
            self.aligner = Qwen3ASRForTokenClassification.from_pretrained(
                str(aligner_checkpoint), dtype=torch.float32
            ).eval()

    def inputs(self, waveform: np.ndarray, language: str | None = None, context: str | None = None):
        """Processor outputs for one 16 kHz clip (prompt ids, features, mask)."""
        return self.processor.apply_transcription_request(
            audio=np.asarray(waveform, dtype=np.float32),
            language=language,
            prompt=context or None,
            return_tensors="pt",
        )

    @torch.no_grad()
    def generate(
        self, waveform: np.ndarray, language: str | None = None, context: str | None = None, max_new_tokens: int = 64
    ) -> list[int]:
        """Greedy generated ids (including a final EOS when generation stopped on one)."""
        inputs = self.inputs(waveform, language, context)
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        sequences = out.sequences if hasattr(out, "sequences") else out
        return sequences[0, inputs["input_ids"].shape[1] :].tolist()

    @torch.no_grad()
    def step_margin(
        self, waveform: np.ndarray, prefix: list[int], language: str | None = None, context: str | None = None
    ) -> StepMargin:
        """Top-2 next-token logits after the prompt followed by ``prefix`` (teacher forcing)."""
        inputs = self.inputs(waveform, language, context)
        ids = torch.cat([inputs["input_ids"], torch.tensor([prefix], dtype=inputs["input_ids"].dtype)], dim=1)
        logits = self.model(
            input_ids=ids,
            input_features=inputs["input_features"],
            input_features_mask=inputs["input_features_mask"],
            attention_mask=torch.ones_like(ids),
        ).logits[0, -1]
        top = torch.topk(logits, 2)
        return StepMargin(int(top.indices[0]), int(top.indices[1]), float(top.values[0] - top.values[1]))

    @torch.no_grad()
    def align(self, waveform: np.ndarray, text: str, language: str | None = None) -> list[tuple[str, float, float]]:
        """(word, start s, end s) for ``text`` against one clip."""
        if self.aligner is None or self.aligner_processor is None:
            raise RuntimeError("no aligner checkpoint given")
        inputs, words = self.aligner_processor.prepare_forced_aligner_inputs(
            audio=np.asarray(waveform, dtype=np.float32), transcript=text, language=language, return_tensors="pt"
        )
        logits = self.aligner(**inputs).logits
        items = self.aligner_processor.decode_forced_alignment(
            logits, inputs["input_ids"], words, self.aligner.config.timestamp_token_id
        )[0]
        return [(it["text"], it["start_time"], it["end_time"]) for it in items]
