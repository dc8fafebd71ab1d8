"""Real speech clips for the tests: espeak-ng speech converted with sox / ffmpeg.

Clips cover 0.5 to 30 s, eleven languages, and every container the server is
meant to read (wav at 8 / 16 / 22.05 kHz, flac, mp3, ogg/vorbis, opus, m4a/aac,
stereo). They are generated once into the test cache.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClipSpec:
    name: str
    voice: str  # espeak-ng voice
    language: str  # the model's name for it
    text: str
    fmt: str  # file extension
    rate: int
    channels: int = 1


_LONG_EN = (
    "The quick brown fox jumps over the lazy dog. Speech recognition turns spoken words into text. "
    "A deployment kit serves the model on an inference server, batching many requests together. "
    "Each request carries audio, and the server answers with a transcript, a language and timestamps. "
    "Long recordings are cut into segments near quiet points, recognised one by one, and joined again."
)

CLIPS: tuple[ClipSpec, ...] = (
    ClipSpec("en_yes", "en", "English", "Yes.", "wav", 16000),
    ClipSpec(
        "en_hello", "en-us", "English", "Hello world, this is a test of the speech recognition system.", "wav", 22050
    ),
    ClipSpec(
        "de_greeting", "de", "German", "Guten Tag, wie geht es Ihnen heute? Das Wetter ist schön.", "flac", 44100, 2
    ),
    ClipSpec("fr_weather", "fr-fr", "French", "Bonjour à tous, il fait beau aujourd'hui à Paris.", "mp3", 48000),
    ClipSpec("es_numbers", "es", "Spanish", "Uno, dos, tres, cuatro, cinco. Hola, ¿cómo estás?", "ogg", 22050),
    ClipSpec("zh_park", "cmn", "Chinese", "今天天气很好，我们去公园散步吧。", "m4a", 44100),
    ClipSpec("ru_hello", "ru", "Russian", "Привет, как дела? Сегодня хороший день.", "opus", 48000),
    ClipSpec("it_phone", "it", "Italian", "Buongiorno, vorrei prenotare un tavolo per due persone.", "wav", 8000),
    ClipSpec("pt_short", "pt", "Portuguese", "Obrigado pela ajuda.", "flac", 16000),
    ClipSpec("ja_hello", "ja", "Japanese", "こんにちは、元気ですか。", "wav", 16000),
    ClipSpec("ko_hello", "ko", "Korean", "안녕하세요, 만나서 반갑습니다.", "mp3", 24000),
    ClipSpec("en_long", "en", "English", _LONG_EN, "wav", 16000),
)


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def require_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox", "ffmpeg") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"tests need {', '.join(missing)} (apt-get install espeak-ng sox ffmpeg)")


def make_clip(spec: ClipSpec, directory: Path) -> Path:
    """Synthesize ``spec`` into ``directory`` (kept if already there)."""
    key = hashlib.sha256(repr(spec).encode()).hexdigest()[:10]
    out = directory / f"{spec.name}-{key}.{spec.fmt}"
    if out.is_file():
        return out
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / f".{spec.name}-{key}.raw.wav"
    _run(["espeak-ng", "-v", spec.voice, "-w", str(raw), spec.text])
    tmp = out.with_name(".tmp-" + out.name)
    if spec.fmt in ("wav", "flac"):
        _run(["sox", str(raw), "-r", str(spec.rate), "-c", str(spec.channels), str(tmp)])
    else:
        codec = {"mp3": "libmp3lame", "ogg": "libvorbis", "opus": "libopus", "m4a": "aac"}[spec.fmt]
        fmt = {"m4a": "mp4", "opus": "ogg"}.get(spec.fmt, spec.fmt)
        _run(
            [
                "ffmpeg",
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(raw),
                "-ar",
                str(spec.rate),
                "-ac",
                str(spec.channels),
                "-c:a",
                codec,
                "-f",
                fmt,
                str(tmp),
            ]
        )
    tmp.rename(out)
    raw.unlink(missing_ok=True)
    return out
