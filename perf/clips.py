"""A pool of real speech clips of one fixed length, for load tests.

espeak-ng speaks a few sentences in several languages; each is resampled to
16 kHz mono, repeated with short pauses until long enough and cut to exactly
``seconds``, then stored as 16-bit PCM WAV. Every system under test gets the
same samples: the WAV bytes (Triton ``AUDIO``, vLLM ``input_audio``) or the
float waveform decoded from them (transformers, perf_analyzer's ``WAVEFORM``).
Clips are cached under ``.cache/bench/clips``.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qwen3_asr_triton.audio import TARGET_SAMPLE_RATE, load_audio

# Pause inserted when a sentence is repeated to fill the clip, like a pause between sentences.
GAP_SECONDS = 0.3
# 16-bit PCM full scale.
PCM16_SCALE = 32767.0
# espeak-ng's default speaking rate (words per minute); later rounds of the sentence cycle add a step.
ESPEAK_WPM = 175
ESPEAK_WPM_STEP = 20
# (espeak-ng voice, sentence): eight languages, each 2-5 s when spoken.
SENTENCES: tuple[tuple[str, str], ...] = (
    ("en", "The meeting has been moved to Thursday afternoon at three o'clock in the large room."),
    ("en-us", "Please send the quarterly report to the finance team before the end of the week."),
    ("de", "Der Zug nach Berlin fährt heute wegen Bauarbeiten von einem anderen Gleis ab."),
    ("fr-fr", "Le rendez-vous chez le médecin est confirmé pour lundi matin à neuf heures."),
    ("es", "La biblioteca municipal abre sus puertas a las diez de la mañana todos los días."),
    ("it", "Il ristorante in fondo alla strada prepara la pizza migliore della città."),
    ("pt", "O voo para Lisboa está atrasado por causa do mau tempo no aeroporto."),
    ("nl", "De nieuwe fietsbrug over de rivier wordt volgend jaar in gebruik genomen."),
)


@dataclass(frozen=True)
class BenchClip:
    """One clip: its name, WAV bytes (16 kHz mono PCM16) and the float waveform they decode to."""

    name: str
    wav: bytes
    waveform: np.ndarray

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.waveform.size / TARGET_SAMPLE_RATE


def pcm16_wav(waveform: np.ndarray, rate: int = TARGET_SAMPLE_RATE) -> bytes:
    """16-bit mono WAV bytes of a float waveform in [-1, 1]."""
    pcm = np.clip(np.round(waveform * PCM16_SCALE), -PCM16_SCALE, PCM16_SCALE).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buf.getvalue()


def fit_length(waveform: np.ndarray, seconds: float) -> np.ndarray:
    """``waveform`` repeated with pauses until it lasts ``seconds``, then cut to exactly that."""
    target = round(seconds * TARGET_SAMPLE_RATE)
    gap = np.zeros(round(GAP_SECONDS * TARGET_SAMPLE_RATE), np.float32)
    parts, total = [], 0
    while total < target:
        parts += [waveform, gap]
        total += waveform.size + gap.size
    return np.concatenate(parts)[:target].astype(np.float32)


def _speak(voice: str, text: str, words_per_minute: int) -> np.ndarray:
    """espeak-ng speech of ``text`` as a 16 kHz waveform."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        cmd = ["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text]
        subprocess.run(cmd, check=True, capture_output=True)
        return load_audio(path.read_bytes())


def clip_pool(directory: Path, seconds: float, count: int) -> list[BenchClip]:
    """``count`` clips of exactly ``seconds`` each (cycling through :data:`SENTENCES`), cached in ``directory``."""
    if count < 1:
        raise ValueError("count must be >= 1")
    directory.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(count):
        voice, text = SENTENCES[i % len(SENTENCES)]
        # Later rounds of the cycle speak faster, so that no two clips of the pool are equal.
        speed_round = i // len(SENTENCES)
        key = hashlib.sha256(f"{voice}|{text}|{seconds}|{speed_round}".encode()).hexdigest()[:10]
        path = directory / f"{i:02d}-{voice}-{seconds:g}s-{key}.wav"
        if not path.is_file():
            if shutil.which("espeak-ng") is None:
                raise RuntimeError("espeak-ng is needed to make the speech clips (apt-get install espeak-ng)")
            speech = _speak(voice, text, ESPEAK_WPM + ESPEAK_WPM_STEP * speed_round)
            tmp = path.with_name(".tmp-" + path.name)
            tmp.write_bytes(pcm16_wav(fit_length(speech, seconds)))
            tmp.rename(path)
        data = path.read_bytes()
        clips.append(BenchClip(path.stem, data, load_audio(data)))
    return clips
