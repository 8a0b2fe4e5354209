"""Byte-level BPE exactly as CLIP does it, with MAGVLT's batch conventions and BPE-dropout.

    tok = BPETokenizer.from_clip_gz(path_to_bpe_simple_vocab_16e6_txt_gz)   # or .from_artifact(Path("text-tok"))
    ids = tok.encode_batch(["a red circle above a blue square"])           # (1, 64) int32: ids, EOS, EOS-padding
    n_txt = text_lengths(ids, tok.eos_id)                                    # (1,): tokens before the first EOS + 1

The pipeline (CLIP's SimpleTokenizer, mlfoundations/open_clip src/open_clip/tokenizer.py): normalise (ftfy,
HTML-unescape twice, collapse whitespace, lowercase), pre-split with CLIP's regex, map each piece's UTF-8 bytes to
printable characters, then merge adjacent symbols lowest rank first with `</w>` on the last one. Vocabulary layout: 256
byte characters, the same 256 with `</w>`, one token per merge in rank order, then `<|startoftext|>` and
`<|endoftext|>`; with CLIP's 48,894 merges that is 49,408 ids, EOS = 49,407.
`encode_batch` follows MAGVLT (no SOT; EOS after the text when it fits; EOS = PAD); `clip_tokenize` follows CLIP
(SOT + ids + EOT in 77, truncated with EOT last, padded with 0) and equals `open_clip.tokenize` on text without
open_clip's own special names (below).

Text is always text: every caption, prompt and training sentence is split by `text_pieces`, whose pattern has no
special-token alternative, so a literal `<|endoftext|>` in the data encodes as the pieces `<|`, `endoftext`, `|>` and
only the code places SOT / EOS / padding. openai/CLIP's clip/simple_tokenizer.py matches `<|startoftext|>` and
`<|endoftext|>` in the text and maps them to the special ids (cutting a caption short); open_clip's
src/open_clip/tokenizer.py renamed its specials `<start_of_text>` / `<end_of_text>`, so it reads CLIP's literals as
text, as here, but maps its own names to the specials, which this tokenizer reads as text too.
"""

from __future__ import annotations

import functools
import gzip
import html
import random
from pathlib import Path
from typing import Iterable, Sequence

import ftfy
import numpy as np
import regex

from vltk.errors import VltkError
from vltk.records import TextTokenizerContents

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
SPECIAL_TOKENS = (SOT, EOT)  # in id order, after the merges; only the code places them, text never reads as them
WORD_END = "</w>"
SEP = "|"  # MAGVLT's SEP is this ordinary, non-word-final piece (kakaobrain/magvlt maskgit.py), not a new token
CLIP_NUM_MERGES = 49152 - 256 - 2  # CLIP keeps merges lines[1 : 49152-256-2+1] of its vocabulary file
MERGES_HEADER = "#version: 0.2"
MAX_CACHE = 1 << 20  # words; cleared when full so that an endless stream of new words cannot grow memory forever

Rng = random.Random | np.random.Generator
Merge = tuple[str, str]


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """Byte -> a printable character: printable Latin-1 bytes map to themselves, the other 68 to chr(256 + k)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + k) for k, b in enumerate(others)})
    return table  # insertion order = vocabulary order: the printable bytes first, then the others


@functools.cache
def _split_pattern() -> regex.Pattern:
    # CLIP's pre-split without its leading special-token alternatives (user text never becomes a control token):
    # English contractions, letter runs, single digits, punctuation runs. A piece never mixes letters with '<' or '|',
    # so no piece can spell a special token.
    return regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE)


# Printable ASCII without '&' (plus tab/newline/CR): ftfy.fix_text and html.unescape leave such text unchanged
# (every ftfy fix acts on non-ASCII, '&' entities, ESC or control characters), so most captions skip both.
_PLAIN = str.maketrans("", "", "\t\n\r")


def normalize(text: str) -> str:
    """CLIP's cleaning: ftfy.fix_text, html.unescape twice, whitespace runs -> one space, strip, lowercase."""
    if not (text.isascii() and "&" not in text and text.translate(_PLAIN).isprintable()):
        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def pre_split(normalized: str) -> list[str]:
    """The pieces BPE runs on (each becomes one or more tokens): 'it's 42!' -> ['it', "'s", '4', '2', '!']."""
    return _split_pattern().findall(normalized)


def text_pieces(text: str) -> list[str]:
    """The pieces of user or data text, always ordinary text: '<|endoftext|>' -> ['<|', 'endoftext', '|>'].

    The one way text enters the BPE (encoding, BPE-dropout and training alike), so no path can read a special token."""
    return pre_split(normalize(text))


def byte_symbols(piece: str) -> list[str]:
    """A piece as byte characters with `</w>` on the last one: 'héé' -> ['h', 'Ã', '©', 'Ã', '©</w>']."""
    table = bytes_to_unicode()
    symbols = [table[b] for b in piece.encode("utf-8")]
    symbols[-1] += WORD_END
    return symbols


def apply_merge(symbols: list[str], pair: Merge) -> list[str]:
    """Merge every occurrence of `pair`, left to right without overlap: (a,a) on a a a -> aa a."""
    first, second = pair
    out: list[str] = []
    i, n = 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == first and symbols[i + 1] == second:
            out.append(first + second)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def text_lengths(ids: np.ndarray, eos_id: int) -> np.ndarray:
    """MAGVLT's n_txt per row of (N, L) ids: tokens before the first EOS + 1 (the EOS), or L when there is none."""
    is_eos = ids == eos_id
    return np.where(is_eos.any(axis=1), is_eos.argmax(axis=1) + 1, ids.shape[1]).astype(np.int64)


class BPETokenizer:
    """CLIP's byte-level BPE over a merges list (rank = position), with a per-word cache."""

    def __init__(self, merges: Sequence[Merge], context_length: int = 64):
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        byte_chars = list(bytes_to_unicode().values())
        tokens = byte_chars + [c + WORD_END for c in byte_chars]
        index = {t: i for i, t in enumerate(tokens)}
        for rank, (first, second) in enumerate(merges):
            merged = first + second
            if first not in index or second not in index or first.endswith(WORD_END) or merged in index:
                raise VltkError(f"merge {rank} ({first!r} {second!r}) does not extend the vocabulary built so far")
            if merged in SPECIAL_TOKENS:  # its id would decode and count as text, but the string is the control token's
                raise VltkError(f"merge {rank} ({first!r} {second!r}) spells the special token {merged!r}")
            index[merged] = len(tokens)
            tokens.append(merged)
        for special in SPECIAL_TOKENS:
            index[special] = len(tokens)
            tokens.append(special)
        self.merges: tuple[Merge, ...] = tuple((a, b) for a, b in merges)
        self.tokens = tokens  # id -> token string
        self.context_length = context_length
        self._index = index
        self._ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self._special_ids = frozenset(index[t] for t in SPECIAL_TOKENS)
        self._cache: dict[str, list[int]] = {}

    # ---- ids
    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def sot_id(self) -> int:
        return self._index[SOT]

    @property
    def eos_id(self) -> int:
        return self._index[EOT]

    @property
    def pad_id(self) -> int:
        return self._index[EOT]  # MAGVLT pads with EOS

    @property
    def sep_id(self) -> int:
        return self._index[SEP]

    def token_to_id(self, token: str) -> int:
        return self._index[token]

    # ---- BPE
    def _bpe(self, piece: str, dropout: float, rng: Rng | None) -> list[int]:
        """Token ids of one pre-split piece. With dropout, each applicable merge is skipped with probability
        `dropout` at every step (candidates tried in rank order; all skipped ends the word), as in Provilkov et al."""
        symbols = byte_symbols(piece)
        ranks = self._ranks
        while len(symbols) > 1:
            candidates = {p: r for p in zip(symbols, symbols[1:]) if (r := ranks.get(p)) is not None}
            if not candidates:
                break
            if dropout > 0.0:
                in_rank_order = sorted(candidates, key=candidates.__getitem__)
                pair = next((p for p in in_rank_order if rng.random() >= dropout), None)
                if pair is None:
                    break
            else:
                pair = min(candidates, key=candidates.__getitem__)
            symbols = apply_merge(symbols, pair)
        return [self._index[s] for s in symbols]

    def encode(self, text: str, dropout: float = 0.0, rng: Rng | None = None) -> list[int]:
        """Token ids of `text`, all ordinary (special-token text included) and none added. `dropout` > 0 needs `rng`
        and bypasses the cache."""
        if dropout > 0.0:
            if rng is None:
                raise ValueError("BPE-dropout needs an explicit rng (random.Random or np.random.Generator)")
            return [i for piece in text_pieces(text) for i in self._bpe(piece, dropout, rng)]
        cache = self._cache
        ids: list[int] = []
        for piece in text_pieces(text):
            hit = cache.get(piece)
            if hit is None:
                if len(cache) >= MAX_CACHE:
                    cache.clear()
                hit = cache[piece] = self._bpe(piece, 0.0, None)
            ids += hit
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, special tokens left out; a word end becomes one space (no trailing space)."""
        table = _byte_decoder()
        out = bytearray()
        for i in map(int, ids):
            if i in self._special_ids:
                continue
            token = self.tokens[i]
            word_end = token.endswith(WORD_END)
            out += bytes(table[c] for c in (token[: -len(WORD_END)] if word_end else token))
            if word_end:
                out += b" "
        return out.decode("utf-8", errors="replace").rstrip(" ")

    # ---- batches
    def encode_batch(
        self, texts: Sequence[str], context_length: int | None = None, dropout: float = 0.0, rng: Rng | None = None
    ) -> np.ndarray:
        """MAGVLT rows (N, context_length) int32: ids truncated to the context, an EOS if it fits, EOS padding."""
        length = context_length or self.context_length
        out = np.full((len(texts), length), self.eos_id, dtype=np.int32)
        for row, text in zip(out, texts):
            ids = self.encode(text, dropout, rng)[:length]
            row[: len(ids)] = ids
        return out

    def decode_batch(self, ids: np.ndarray) -> list[str]:
        """The text of each MAGVLT row, read up to its first EOS."""
        return [self.decode(row[:n]) for row, n in zip(ids, text_lengths(ids, self.eos_id))]

    def clip_tokenize(self, texts: str | Sequence[str], context_length: int = 77) -> np.ndarray:
        """CLIP's rows (N, context_length) int64: SOT + ids + EOT, truncated with EOT last, padded with 0."""
        texts = [texts] if isinstance(texts, str) else texts
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for row, text in zip(out, texts):
            ids = [self.sot_id, *self.encode(text), self.eos_id][:context_length]
            ids[-1] = self.eos_id
            row[: len(ids)] = ids
        return out

    # ---- files
    @classmethod
    def from_clip_gz(cls, path: Path, context_length: int = 64) -> BPETokenizer:
        """CLIP's `bpe_simple_vocab_16e6.txt.gz`, keeping exactly the merges CLIP keeps."""
        try:
            lines = gzip.open(path).read().decode("utf-8").split("\n")
        except (OSError, UnicodeDecodeError, EOFError) as err:
            raise VltkError(f"cannot read CLIP vocabulary {path}: {err}") from None
        merges = _parse_merges(lines[1 : CLIP_NUM_MERGES + 1], path)
        if len(merges) != CLIP_NUM_MERGES:
            raise VltkError(f"{path} has {len(merges)} merges, CLIP's vocabulary file has {CLIP_NUM_MERGES}")
        return cls(merges, context_length)

    @classmethod
    def from_merges_file(cls, path: Path, context_length: int = 64) -> BPETokenizer:
        """A plain merges.txt: a '#version' header line, then one 'first second' merge per line in rank order."""
        try:
            lines = Path(path).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as err:
            raise VltkError(f"cannot read merges file {path}: {err}") from None
        if "#version" not in lines[0]:
            raise VltkError(f"{path} is not a merges file: its first line should be a '#version' header")
        merges = _parse_merges(lines[1:], path)
        try:
            return cls(merges, context_length)
        except VltkError as err:  # a merge that does not extend the vocabulary: say which file holds it
            raise VltkError(f"{path}: {err}") from None

    @classmethod
    def from_artifact(cls, path: Path) -> BPETokenizer:
        """The tokenizer a `vltk tokenize text` artifact holds (its context length comes from the manifest)."""
        contents = TextTokenizerContents.read(Path(path))
        tok = cls.from_merges_file(Path(path) / "merges.txt", contents.context_length)
        if tok.vocab_size != contents.vocab_size:
            raise VltkError(
                f"{path}: merges.txt gives {tok.vocab_size} tokens, the manifest says {contents.vocab_size}"
            )
        return tok

    def save_merges(self, path: Path) -> None:
        lines = [MERGES_HEADER, *(f"{first} {second}" for first, second in self.merges)]
        Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


@functools.cache
def _byte_decoder() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def _parse_merges(lines: Sequence[str], path: Path) -> list[Merge]:
    merges = []
    for n, line in enumerate(lines, start=2):
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise VltkError(f"{path}: line {n} is not a merge 'first second': {line!r}")
        merges.append((parts[0], parts[1]))
    return merges
