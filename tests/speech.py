"""Real speech clips for the tests: espeak-ng speech converted with sox / ffmpeg.

Clips cover 0.5 to 30 s, eleven languages, and every container the server is
meant to read (wav at 8 / 16 / 22.05 kHz, flac, mp3, ogg/vorbis, opus, m4a/aac,
stereo). ``RESAMPLED_CLIPS`` adds the rates that are no integer ratio of 16 kHz
(22.05, 24, 44.1 kHz) in every format libsndfile reads, some of them stereo with
two different channels. They are generated once into the test cache.
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
    # sox's sample encoding for wav/flac: "" (16-bit integer), "24" (24-bit integer) or "float" (32-bit float).
    encoding: str = ""
    # Stereo with the right channel 13 ms behind the left, so that averaging the channels matters.
    distinct_channels: bool = False


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

_RATES_EN = "Turn left at the second light, then park behind the blue van."
RESAMPLED_CLIPS: tuple[ClipSpec, ...] = (
    ClipSpec("wav44_stereo", "en", "English", _RATES_EN, "wav", 44100, 2, distinct_channels=True),
    ClipSpec("wav24_24bit", "en-us", "English", _RATES_EN, "wav", 24000, encoding="24"),
    ClipSpec("flac22", "de", "German", "Wir treffen uns morgen um acht Uhr am Bahnhof.", "flac", 22050),
    ClipSpec(
        "flac24_stereo", "fr-fr", "French", "Le train part à huit heures.", "flac", 24000, 2, distinct_channels=True
    ),
    ClipSpec("mp3_22", "es", "Spanish", "El tren sale a las ocho de la mañana.", "mp3", 22050),
    ClipSpec("mp3_44_stereo", "en", "English", _RATES_EN, "mp3", 44100, 2, distinct_channels=True),
    ClipSpec("ogg44_stereo", "it", "Italian", "Il treno parte alle otto.", "ogg", 44100, 2, distinct_channels=True),
    ClipSpec("ogg24", "pt", "Portuguese", "O comboio parte às oito horas.", "ogg", 24000),
    ClipSpec("wav22_float", "en", "English", _RATES_EN, "wav", 22050, encoding="float"),
    ClipSpec("flac44", "en-us", "English", _RATES_EN, "flac", 44100),
    ClipSpec("mp3_24", "de", "German", "Wir treffen uns morgen um acht Uhr am Bahnhof.", "mp3", 24000),
    ClipSpec("ogg22_stereo", "es", "Spanish", "El tren sale a las ocho.", "ogg", 22050, 2, distinct_channels=True),
)
# Every (format, rate) cell that RESAMPLED_CLIPS covers: the formats libsndfile reads, at the rates that are
# no integer ratio of 16 kHz.
RESAMPLED_CELLS = frozenset((fmt, rate) for fmt in ("wav", "flac", "mp3", "ogg") for rate in (22050, 24000, 44100))
# Bumped whenever make_clip's recipe changes, so cached clips are made again.
_RECIPE = 2


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def require_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox", "ffmpeg") if shutil.which(t) is None]
    if missing:
        raise RuntimeError(f"tests need {', '.join(missing)} (apt-get install espeak-ng sox ffmpeg)")


# FFmpeg's encoder and container for each lossy format the tests use.
CODECS = {"mp3": ("libmp3lame", "mp3"), "ogg": ("libvorbis", "ogg"), "opus": ("libopus", "ogg"), "m4a": ("aac", "mp4")}


def encode(source: Path, target: Path, fmt: str, rate: int | None = None, channels: int | None = None) -> None:
    """Encode ``source`` (wav) into ``target`` as ``fmt`` (a key of ``CODECS``) with FFmpeg."""
    codec, container = CODECS[fmt]
    resample = ["-ar", str(rate)] if rate else []
    mix = ["-ac", str(channels)] if channels else []
    _run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(source),
            *resample,
            *mix,
            "-c:a",
            codec,
            "-f",
            container,
            str(target),
        ]
    )


def make_clip(spec: ClipSpec, directory: Path) -> Path:
    """Synthesize ``spec`` into ``directory`` (kept if already there)."""
    key = hashlib.sha256(f"{_RECIPE}{spec!r}".encode()).hexdigest()[:10]
    out = directory / f"{spec.name}-{key}.{spec.fmt}"
    if out.is_file():
        return out
    directory.mkdir(parents=True, exist_ok=True)
    raw = directory / f".{spec.name}-{key}.raw.wav"
    _run(["espeak-ng", "-v", spec.voice, "-w", str(raw), spec.text])
    tmp = out.with_name(".tmp-" + out.name)
    if spec.distinct_channels:
        wide = directory / f".{spec.name}-{key}.wide.wav"
        _run(["sox", str(raw), str(wide), "remix", "1", "1", "delay", "0", "0.013"])
        raw.unlink()
        raw = wide
    if spec.fmt in ("wav", "flac"):
        encoding = {"": [], "24": ["-b", "24"], "float": ["-e", "floating-point", "-b", "32"]}[spec.encoding]
        _run(["sox", str(raw), "-r", str(spec.rate), *encoding, "-c", str(spec.channels), str(tmp)])
    else:
        encode(raw, tmp, spec.fmt, rate=spec.rate, channels=spec.channels)
    tmp.rename(out)
    raw.unlink(missing_ok=True)
    return out
