"""Token parity of the ONNX Runtime pipeline against transformers at real model dimensions.

Not a CI test (it takes minutes and several GB): the CI suite proves parity on the
tiny checkpoint; this script runs the same comparison on a random checkpoint with
the published 0.6B (or 1.7B) dimensions and prints the result and the time taken.

    python perf/parity_check.py --size 0.6b --clips 10 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.harness import CACHE, cached_checkpoint, cached_export  # noqa: E402
from tests.parity import check_tokens  # noqa: E402
from tests.speech import CLIPS, make_clip, require_tools  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="0.6b", choices=["tiny", "0.6b", "1.7b"])
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    require_tools()

    from qwen3_asr_triton.audio import load_audio
    from qwen3_asr_triton.export.reference import TransformersReference
    from qwen3_asr_triton.pipeline import OfflineRecognizer

    t0 = time.perf_counter()
    checkpoint = cached_checkpoint("asr", size=args.size)
    export = cached_export(checkpoint)
    t_build = time.perf_counter() - t0
    reference = TransformersReference(checkpoint)
    ours = OfflineRecognizer(export)
    clips = [make_clip(spec, CACHE / "audio") for spec in CLIPS[: args.clips]]
    rows, t_ref, t_ours = [], 0.0, 0.0
    for spec, path in zip(CLIPS, clips):
        wave = load_audio(path.read_bytes())
        t = time.perf_counter()
        ref = reference.generate(wave, None, None, args.max_new_tokens)
        t_ref += time.perf_counter() - t
        t = time.perf_counter()
        got = ours.transcribe(wave, None, "", False, args.max_new_tokens)
        t_ours += time.perf_counter() - t
        try:
            report = check_tokens(
                got.token_ids,
                ref,
                lambda p, w=wave: reference.step_margin(w, p),
                eos_ids=ours.recognizer.spec.eos_token_ids,
                max_new_tokens=args.max_new_tokens,
            ).describe()
        except AssertionError as exc:
            report = f"MISMATCH: {exc}"
        rows.append((spec.name, wave.size / 16000, len(ref), report))
    print(f"checkpoint {checkpoint.name} ({args.size}), export {export.name}; build/export {t_build:.0f} s")
    for name, seconds, n, report in rows:
        print(f"  {name:12s} {seconds:5.1f} s audio  {n:3d} reference tokens  {report}")
    ok = sum(not r[3].startswith("MISMATCH") for r in rows)
    print(f"parity: {ok}/{len(rows)} clips; transformers {t_ref:.1f} s, onnxruntime pipeline {t_ours:.1f} s")
    sys.exit(0 if ok == len(rows) else 1)


if __name__ == "__main__":
    main()
