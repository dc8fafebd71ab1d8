"""Languages Qwen3-ASR was trained to name, and the forced aligner's subset.

The model writes the language as an English name ("language English<asr_text>")
and a forced language must be given in the same form, so requests may use either
the name or the ISO code; both map to the name.
"""

from __future__ import annotations

from .errors import InputError, excerpt

# ISO 639 code -> the name the model emits (the 30 languages of the model card).
LANGUAGE_NAMES: dict[str, str] = {
    "ar": "Arabic",
    "yue": "Cantonese",
    "zh": "Chinese",
    "cs": "Czech",
    "da": "Danish",
    "nl": "Dutch",
    "en": "English",
    "fil": "Filipino",
    "fi": "Finnish",
    "fr": "French",
    "de": "German",
    "el": "Greek",
    "hi": "Hindi",
    "hu": "Hungarian",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "mk": "Macedonian",
    "ms": "Malay",
    "fa": "Persian",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "es": "Spanish",
    "sv": "Swedish",
    "th": "Thai",
    "tr": "Turkish",
    "vi": "Vietnamese",
}

# The 11 languages Qwen3-ForcedAligner supports.
ALIGNER_LANGUAGES: frozenset[str] = frozenset(
    {
        "Chinese",
        "English",
        "Cantonese",
        "French",
        "German",
        "Italian",
        "Japanese",
        "Korean",
        "Portuguese",
        "Russian",
        "Spanish",
    }
)

# Values meaning "detect the language".
AUTO_VALUES = frozenset({"", "auto", "none", "detect"})

_BY_LOWER: dict[str, str] = {}
for _code, _name in LANGUAGE_NAMES.items():
    _BY_LOWER[_code] = _name
    _BY_LOWER[_name.lower()] = _name


def normalize_language(value: str | None) -> str | None:
    """Map a requested language (name or code, any case) to the model's name.

    Returns ``None`` for auto-detection; raises :class:`InputError` for anything unknown.
    """
    if value is None:
        return None
    key = value.strip().lower()
    if key in AUTO_VALUES:
        return None
    name = _BY_LOWER.get(key)
    if name is None:
        raise InputError(
            f"unknown LANGUAGE {excerpt(value)}; use 'auto' or one of: "
            + ", ".join(f"{n} ({c})" for c, n in sorted(LANGUAGE_NAMES.items(), key=lambda kv: kv[1]))
        )
    return name


def canonical_language_name(value: str) -> str:
    """Best-effort canonical name for a language the model wrote (unknown names pass through)."""
    return _BY_LOWER.get(value.strip().lower(), value.strip())
