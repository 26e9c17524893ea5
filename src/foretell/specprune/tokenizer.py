"""Word-level instruction tokenizer for the small OFT-style VLA (the testbed's instructions use a
closed vocabulary, so a word vocabulary is exact and needs no downloaded tokenizer)."""

from __future__ import annotations

import json
import pathlib
import re

import torch

from foretell.core.errors import ForetellError

SPECIAL_TOKENS = ("<pad>", "<unk>")
_WORD = re.compile(r"[a-z0-9]+")


class InstructionTokenizer:
    """Maps lower-cased words to ids; id 0 is padding, id 1 is an unknown word.

    ``encode`` returns a 1-D LongTensor; ``encode_batch`` right-pads to the longest instruction
    (or to ``length``) with the pad id.
    """

    def __init__(self, words):
        vocab = list(SPECIAL_TOKENS)
        for word in words:
            for w in _WORD.findall(str(word).lower()):
                if w not in vocab:
                    vocab.append(w)
        self.vocab: list[str] = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    @property
    def vocab_size(self) -> int:
        """Number of ids, including the special tokens."""
        return len(self.vocab)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def tokenize(self, text: str) -> list[str]:
        """Lower-cased word pieces of ``text`` (punctuation is dropped)."""
        return _WORD.findall(text.lower())

    def encode(self, text: str) -> torch.Tensor:
        """Ids of ``text`` as a LongTensor [L]; raises ForetellError on an empty instruction."""
        ids = [self.index.get(w, self.unk_id) for w in self.tokenize(text)]
        if not ids:
            raise ForetellError(f"instruction {text!r} has no words; give a non-empty instruction such as 'put the red block on the green pad'")
        return torch.tensor(ids, dtype=torch.long)

    def encode_batch(self, texts, length: int | None = None) -> torch.Tensor:
        """Ids of several instructions as a LongTensor [B, length], right-padded with ``pad_id``."""
        rows = [self.encode(t) for t in texts]
        width = max(len(r) for r in rows) if length is None else int(length)
        if any(len(r) > width for r in rows):
            raise ForetellError(f"an instruction has more than length={width} words; pass a larger length")
        out = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def decode(self, ids) -> str:
        """Words of ``ids`` joined by spaces, padding skipped."""
        return " ".join(self.vocab[int(i)] for i in ids if int(i) != self.pad_id)

    def save(self, path) -> None:
        """Write the vocabulary as JSON (``{"vocab": [...]}``)."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"vocab": self.vocab}, indent=1))

    @classmethod
    def load(cls, path) -> "InstructionTokenizer":
        """Read a vocabulary written by :meth:`save`."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise ForetellError(f"tokenizer file {path} does not exist; pass a JSON file written by InstructionTokenizer.save")
        vocab = json.loads(path.read_text()).get("vocab")
        if not isinstance(vocab, list) or list(vocab[: len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
            raise ForetellError(f"{path} is not a tokenizer file; expected {{\"vocab\": [\"<pad>\", \"<unk>\", ...]}}")
        tok = cls([])
        tok.vocab = list(vocab)
        tok.index = {w: i for i, w in enumerate(tok.vocab)}
        return tok
