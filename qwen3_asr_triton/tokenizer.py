"""Thin wrapper over the Rust ``tokenizers`` library for a checkpoint's tokenizer.json.

Serving never imports transformers: the exporter writes ``tokenizer.json``
(converted by transformers from whatever the checkpoint ships) next to the
graphs and this class reads it. Special-token ids are looked up by their text,
so no id is hard-coded here.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from .errors import InputError

TOKENIZER_FILENAME = "tokenizer.json"


class TextTokenizer:
    """Encode prompt text and decode generated ids.

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        The checkpoint's fast tokenizer.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tok = tokenizer
        self._added = {t.content: i for i, t in tokenizer.get_added_tokens_decoder().items()}

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILENAME
        return cls(Tokenizer.from_file(str(path)))

    @property
    def added_tokens(self) -> dict[str, int]:
        """Text -> id of every added (control) token, special or not."""
        return dict(self._added)

    def token_id(self, token: str) -> int:
        """Id of a control token such as ``<|im_start|>``; raises KeyError when absent."""
        try:
            return self._added[token]
        except KeyError:
            tid = self._tok.token_to_id(token)
            if tid is None:
                raise KeyError(f"token {token!r} is not in the tokenizer") from None
            return tid

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with control tokens recognised, no BOS/EOS added."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; :class:`InputError` for a negative id.

        Ids past the tokenizer's vocabulary (the model's output layer is padded beyond it) decode to
        nothing, as the official decoding does.
        """
        ids = list(ids)
        bad = next((i for i in ids if i < 0), None)
        if bad is not None:
            raise InputError(f"token id {bad} is negative")
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def check_plain_text(self, text: str, what: str) -> None:
        """Reject text that contains a control token (it would rewrite the prompt's structure)."""
        for token in self._added:
            if token in text:
                raise InputError(f"{what} must not contain the control token {token!r}")
