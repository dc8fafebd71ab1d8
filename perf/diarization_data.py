"""Synthetic conversations with known speaker turns, spoken by espeak-ng, for the diarizer choice.

    from perf.diarization_data import build_conversations
    conversations = build_conversations(Path(".cache/diarization"))

Each conversation is a 16 kHz mono WAV file in which 2, 3 or 4 espeak-ng "speakers" (a voice, a
variant, a pitch and a speed) take turns reading plain English sentences. The turns are placed one
after another, either back to back (no gap) or with a short random gap (0.2-0.8 s) between two
turns, so the reference (who speaks when) is known exactly: a turn runs from its first to its last
non-silent sample. Everything is derived from one seed, so the same files come out on every run;
an existing file whose reference is unchanged is not synthesised again.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)

# The sample rate that both diarizers expect (and that the ASR models use).
SAMPLE_RATE = 16000
# The seed of every random choice (speakers, sentences, turn lengths, gaps, durations).
SEED = 20261205
# espeak-ng pads its output with digital silence; a sample whose magnitude is above this fraction
# of full scale counts as speech when a turn's edges are trimmed (espeak's silence is exactly 0).
TRIM_LEVEL = 1e-3
# Gaps between turns in the "gaps" conversations, seconds (the brief's 0.2-0.8 s).
GAP_RANGE = (0.2, 0.8)
# Target length of one conversation, seconds: drawn uniformly, turns are added until it is passed
# (the brief asks for about 1-3 minutes).
DURATION_RANGE = (60.0, 150.0)
# Sentences in one turn: drawn uniformly from this inclusive range.
TURN_SENTENCES = (1, 3)
# Speakers per conversation, and how many conversations of each count; the first conversation of
# each count has no gaps, the second has gaps, the third alternates with the count (2: none, ...).
SPEAKER_COUNTS = (2, 3, 4)
CONVERSATIONS_PER_COUNT = 3
# The short set the diarizer's accuracy test uses (build_small_set): (speakers, gaps) per conversation,
# each about a minute long, from a seed of its own so that the study's conversations stay unseen by it.
SMALL_SET = ((3, False), (2, True))
SMALL_SEED = SEED + 1
SMALL_DURATION = 60.0
# The benchmark's long conversation (build_long_conversation): speakers, minutes and its own seed.
LONG_SPEAKERS = 4
LONG_MINUTES = 60.0
LONG_SEED = SEED + 2

# The speaker pool: (name, espeak-ng voice with variant, pitch 0-99, words per minute). Voices of
# several languages read the same English text with their own phonemes, which makes them differ
# more than pitch alone would.
SPEAKERS: tuple[tuple[str, str, int, int], ...] = (
    ("en-m3", "en+m3", 30, 160),
    ("en-f2", "en+f2", 70, 170),
    ("enus-m7", "en-us+m7", 45, 150),
    ("de-f4", "de+f4", 60, 165),
    ("engb-rp-m1", "en-gb-x-rp+m1", 50, 175),
    ("fr-m2", "fr+m2", 38, 155),
    ("en-f5", "en+f5", 85, 160),
    ("es-m4", "es+m4", 25, 170),
)

# Plain English sentences, written for this study.
SENTENCES: tuple[str, ...] = (
    "The train to the coast leaves at half past nine every morning.",
    "I left my umbrella at the office again, so I got wet on the way home.",
    "Could you send me the report before the meeting on Thursday?",
    "The garden looks much better since we planted the new roses.",
    "We should check the numbers once more before we publish them.",
    "My brother moved to a small town near the mountains last year.",
    "The coffee machine on the third floor has been broken for a week.",
    "Please remember to close the windows when you leave the building.",
    "I think the second option is cheaper, but it will take longer.",
    "The children played football in the park until it got dark.",
    "Our flight was delayed by two hours because of the fog.",
    "She reads a chapter of her book every evening before bed.",
    "The new library opens next month with a large reading room.",
    "Let us meet at the corner of the market square at noon.",
    "He repaired the old bicycle with parts from three others.",
    "The weather report says it will rain for most of the weekend.",
    "I have never seen so many birds on the lake at once.",
    "The shop around the corner sells fresh bread until six.",
    "We need more chairs for the guests who are coming tonight.",
    "The museum has a collection of maps that are five hundred years old.",
    "Turn left at the bridge and you will see the post office.",
    "The team finished the project two days ahead of schedule.",
    "My grandmother still writes letters by hand to all her friends.",
    "The river was so high that the road along it was closed.",
    "Can you tell me where I can buy a ticket for the bus?",
    "The soup needs a little more salt and some black pepper.",
    "They painted the kitchen yellow, and it feels much warmer now.",
    "The concert in the old church was quiet and very beautiful.",
    "I will call you as soon as the package arrives.",
    "Most of the snow melted during the warm afternoon.",
    "The doctor said that a short walk every day would help.",
    "We watched the ships come into the harbour from the hill.",
    "The printer is out of paper, and nobody knows where the spare box is.",
    "Her presentation explained the problem clearly and in simple words.",
    "The farmers sell their apples at the market on Saturdays.",
    "I forgot the password for the shared account once again.",
    "The lights in the hallway turn off automatically after ten minutes.",
    "We are planning a short trip to the islands in the spring.",
    "The cat sleeps on the warm windowsill all afternoon.",
    "Nobody expected the old clock to start working again.",
)


@dataclass(frozen=True)
class Turn:
    """One speaker turn of a conversation's reference.

    Attributes
    ----------
    speaker : str
        The speaker's name from :data:`SPEAKERS`.
    start, end : float
        The turn's first and last non-silent sample, seconds from the start of the file.
    """

    speaker: str
    start: float
    end: float


@dataclass(frozen=True)
class Conversation:
    """A synthetic conversation: its audio file and its reference turns.

    Attributes
    ----------
    name : str
        A short id, e.g. ``"s3-gaps-1"``.
    path : Path
        The 16 kHz mono 16-bit WAV file.
    speakers : int
        The number of distinct speakers (the oracle count).
    gaps : bool
        Whether the turns are separated by gaps (else they are back to back).
    duration : float
        Length of the file, seconds.
    turns : list[Turn]
        The reference, in time order; turns never overlap.
    """

    name: str
    path: Path
    speakers: int
    gaps: bool
    duration: float
    turns: list[Turn]


def synthesize(text: str, voice: str, pitch: int, speed: int, workdir: Path) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return it as 16 kHz float32 samples, silence trimmed.

    Parameters
    ----------
    text : str
        What to say.
    voice : str
        An espeak-ng voice, optionally with a ``+variant``.
    pitch : int
        espeak-ng's ``-p`` (0-99).
    speed : int
        espeak-ng's ``-s`` (words per minute).
    workdir : Path
        A scratch folder for the intermediate files.

    Returns
    -------
    np.ndarray
        Float32 samples in [-1, 1] from the first to the last non-silent sample.
    """
    raw = workdir / "raw.wav"
    resampled = workdir / "16k.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(raw), text],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(resampled)],
        check=True,
        capture_output=True,
    )
    samples = read_wav(resampled)
    loud = np.flatnonzero(np.abs(samples) > TRIM_LEVEL)
    if loud.size == 0:
        raise RuntimeError(f"espeak-ng produced silence for voice {voice!r}")
    return samples[loud[0] : loud[-1] + 1]


def read_wav(path: Path) -> np.ndarray:
    """Read a 16-bit mono WAV file as float32 samples in [-1, 1].

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    np.ndarray
        The samples.
    """
    with wave.open(str(path), "rb") as handle:
        if handle.getnchannels() != 1 or handle.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit mono")
        frames = handle.readframes(handle.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def write_wav(path: Path, samples: np.ndarray) -> None:
    """Write float32 samples in [-1, 1] as a 16 kHz 16-bit mono WAV file.

    Parameters
    ----------
    path : Path
        The file to (over)write.
    samples : np.ndarray
        The samples.
    """
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(pcm.tobytes())


def plan(rng: random.Random, speakers: int, planned_turns: int = 200) -> tuple[list[str], list[tuple[int, str]], float]:
    """Draw a conversation's speakers, its turns' texts and its target length.

    Parameters
    ----------
    rng : random.Random
        The study's random source.
    speakers : int
        How many speakers take part.
    planned_turns : int
        Turns planned (the caller stops early): 200 is far more than 150 s need (a turn lasts at least ~2 s).

    Returns
    -------
    tuple[list[str], list[tuple[int, str]], float]
        The chosen speaker names, a long enough list of (speaker index, text) turns in order (no
        speaker follows itself), and the target duration in seconds.
    """
    names = [spec[0] for spec in rng.sample(SPEAKERS, speakers)]
    target = rng.uniform(*DURATION_RANGE)
    turns: list[tuple[int, str]] = []
    previous = -1
    for _ in range(planned_turns):
        choices = [index for index in range(speakers) if index != previous]
        # Each speaker gets a turn before anybody speaks twice, so all of them are present.
        if len(turns) < speakers:
            choices = [index for index in range(speakers) if index not in {t[0] for t in turns}]
        speaker = rng.choice(choices)
        text = " ".join(rng.sample(SENTENCES, rng.randint(*TURN_SENTENCES)))
        turns.append((speaker, text))
        previous = speaker
    return names, turns, target


def _drawn_conversation(
    folder: Path, rng: random.Random, name: str, speakers: int, gaps: bool, seed: int, target: float | None = None
) -> Conversation:
    """Plan a conversation from ``rng`` (:func:`plan`, then its gaps) and synthesise it; ``target``
    replaces the plan's length when given."""
    names, planned, planned_target = plan(rng, speakers)
    gap_draws = [rng.uniform(*GAP_RANGE) for _ in planned]
    length = planned_target if target is None else target
    return make_conversation(folder, name, names, planned, length, gaps, gap_draws, seed)


def build_conversations(folder: Path) -> list[Conversation]:
    """Synthesise (or reuse) every conversation of the study under ``folder``.

    Parameters
    ----------
    folder : Path
        Where the WAV files and their ``.json`` references go.

    Returns
    -------
    list[Conversation]
        The conversations, 2-speaker ones first.
    """
    _check_tools(folder)
    rng = random.Random(SEED)
    conversations = []
    for count in SPEAKER_COUNTS:
        for index in range(CONVERSATIONS_PER_COUNT):
            gaps = index == 1 or (index == 2 and count % 2 == 1)
            name = f"s{count}-{'gaps' if gaps else 'nogap'}-{index}"
            conversations.append(_drawn_conversation(folder, rng, name, count, gaps, SEED))
    return conversations


def build_small_set(folder: Path) -> list[Conversation]:
    """Synthesise (or reuse) the few short conversations of :data:`SMALL_SET` under ``folder`` (tests).

    Parameters
    ----------
    folder : Path
        Where the WAV files and their ``.json`` references go.

    Returns
    -------
    list[Conversation]
        One conversation per entry of :data:`SMALL_SET`, in its order.
    """
    _check_tools(folder)
    rng = random.Random(SMALL_SEED)
    conversations = []
    for index, (count, gaps) in enumerate(SMALL_SET):
        name = f"small-s{count}-{'gaps' if gaps else 'nogap'}-{index}"
        conversations.append(_drawn_conversation(folder, rng, name, count, gaps, SMALL_SEED, SMALL_DURATION))
    return conversations


def build_long_conversation(folder: Path, minutes: float = LONG_MINUTES) -> Conversation:
    """Synthesise (or reuse) one long conversation of :data:`LONG_SPEAKERS` speakers with gaps (benchmarks).

    Unlike a short conversation tiled to length, no window of it repeats another exactly, so the
    clustering sees an hour of distinct windows as it would in a real recording.

    Parameters
    ----------
    folder : Path
        Where the WAV file and its ``.json`` reference go.
    minutes : float
        Length to reach.

    Returns
    -------
    Conversation
        The conversation and its reference.
    """
    _check_tools(folder)
    rng = random.Random(LONG_SEED)
    # A turn lasts 2 s or more: this many turns always reach the target.
    names, planned, _ = plan(rng, LONG_SPEAKERS, planned_turns=round(minutes * 30))
    gap_draws = [rng.uniform(*GAP_RANGE) for _ in planned]
    name = f"long-s{LONG_SPEAKERS}-gaps-{minutes:g}min"
    return make_conversation(folder, name, names, planned, minutes * 60, True, gap_draws, LONG_SEED)


def _check_tools(folder: Path) -> None:
    """Fail early without espeak-ng or sox; create ``folder``."""
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        raise RuntimeError("espeak-ng and sox are needed to synthesise the conversations")
    folder.mkdir(parents=True, exist_ok=True)


def make_conversation(
    folder: Path,
    name: str,
    names: list[str],
    planned: list[tuple[int, str]],
    target: float,
    gaps: bool,
    gap_draws: list[float],
    seed: int,
) -> Conversation:
    """Synthesise one planned conversation into ``folder`` (or reuse the file made from the same plan).

    Parameters
    ----------
    folder : Path
        Where ``name.wav`` and ``name.json`` go.
    name : str
        The conversation's id.
    names : list[str]
        Its speakers' names (from :data:`SPEAKERS`).
    planned : list[tuple[int, str]]
        (speaker index, text) turns, more than needed; turns are added until ``target`` is passed.
    target : float
        Length to reach, seconds.
    gaps : bool
        Whether a gap from ``gap_draws`` separates consecutive turns.
    gap_draws : list[float]
        One gap (seconds) per planned turn.
    seed : int
        The seed the plan came from (part of the reuse key).

    Returns
    -------
    Conversation
        The conversation and its reference.
    """
    by_name = {spec[0]: spec for spec in SPEAKERS}
    count = len(names)
    path = folder / f"{name}.wav"
    reference = folder / f"{name}.json"
    key = {"seed": seed, "names": names, "planned": planned, "target": target, "gaps": gaps}
    if path.exists() and reference.exists():
        stored = json.loads(reference.read_text())
        if stored.get("key") == json.loads(json.dumps(key)):
            turns = [Turn(**turn) for turn in stored["turns"]]
            return Conversation(name, path, count, gaps, stored["duration"], turns)
    LOG.info("synthesising %s (%s speakers, gaps=%s, ~%.0f s)", name, count, gaps, target)
    pieces: list[np.ndarray] = []
    turns = []
    cursor = 0
    with tempfile.TemporaryDirectory() as scratch:
        for (speaker, text), gap in zip(planned, gap_draws):
            _, voice, pitch, speed = by_name[names[speaker]]
            if gaps and pieces:
                silence = round(gap * SAMPLE_RATE)
                pieces.append(np.zeros(silence, np.float32))
                cursor += silence
            audio = synthesize(text, voice, pitch, speed, Path(scratch))
            turns.append(Turn(names[speaker], cursor / SAMPLE_RATE, (cursor + audio.size) / SAMPLE_RATE))
            pieces.append(audio)
            cursor += audio.size
            if cursor / SAMPLE_RATE >= target:
                break
    # Half a second of silence at each end, as a recording would have.
    edge = SAMPLE_RATE // 2
    samples = np.concatenate([np.zeros(edge, np.float32), *pieces, np.zeros(edge, np.float32)])
    turns = [Turn(t.speaker, t.start + edge / SAMPLE_RATE, t.end + edge / SAMPLE_RATE) for t in turns]
    write_wav(path, samples)
    duration = samples.size / SAMPLE_RATE
    stored = {"key": key, "duration": duration, "turns": [asdict(turn) for turn in turns]}
    reference.write_text(json.dumps(stored, indent=1))
    return Conversation(name, path, count, gaps, duration, turns)
