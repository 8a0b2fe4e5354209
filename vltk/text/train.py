"""Learn byte-level BPE merges from captions, with the same normalisation and pre-split that encoding uses.

    words, _ = count_words(["a red circle", "a blue square"])     # {'a': 2, 'red': 1, ...}, 2 captions
    merges = learn_merges(words, num_merges=512, min_frequency=2)
    tok = BPETokenizer(merges)                                     # vocabulary: 512 bytes + 512 merges + 2 specials

Each unique word is counted once with its frequency. Pair counts are kept up to date incrementally: a merge only
revisits the words that contain its pair, removing their old pairs and adding their new ones, and a max-heap with lazy
deletion (stale entries are skipped when popped) finds the next pair.

Tie-breaking (deterministic): the pair with the highest count wins; among equal counts, the smallest (first, second)
in Python string order (code-point order of the byte characters) wins. The result therefore depends only on the
multiset of words, never on caption order or hash seeds.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Callable, Iterable

from vltk.text.bpe import SPECIAL_TOKENS, Merge, apply_merge, byte_symbols, text_pieces

BASE_VOCAB = 512 + 2  # 256 byte characters, the same with </w>, and the two special tokens


def count_words(captions: Iterable[str], advance: Callable[[int], None] | None = None) -> tuple[Counter[str], int]:
    """How often each piece of `text_pieces` occurs across `captions` (a literal '<|endoftext|>' is the ordinary words
    '<|', 'endoftext', '|>'), and how many captions there were. `advance(1)` is called after every caption."""
    counts: Counter[str] = Counter()
    seen = 0
    for caption in captions:
        counts.update(text_pieces(caption))
        seen += 1
        if advance is not None:
            advance(1)
    return counts, seen


def _pairs(symbols: list[str]) -> Counter[Merge]:
    return Counter(zip(symbols, symbols[1:]))


def learn_merges(
    word_counts: dict[str, int],
    num_merges: int,
    min_frequency: int = 2,
    advance: Callable[[int], None] | None = None,
) -> list[Merge]:
    """Up to `num_merges` merges in rank order; fewer when no pair occurs at least `min_frequency` times. A pair whose
    merge would spell `<|startoftext|>` or `<|endoftext|>` is never learned.

    `advance(1)` is called after every merge (for a progress bar).
    """
    # Sorting the words makes the word order, and with it every later step, independent of how they were counted.
    items = sorted(word_counts.items())
    words = [byte_symbols(w) for w, _ in items]
    freqs = [c for _, c in items]
    counts: Counter[Merge] = Counter()
    where: dict[Merge, set[int]] = defaultdict(set)  # pair -> words that contain it (may hold stale entries)
    for w, symbols in enumerate(words):
        for pair, n in _pairs(symbols).items():
            counts[pair] += n * freqs[w]
            where[pair].add(w)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)

    merges: list[Merge] = []
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        if counts.get(pair, 0) != -neg:
            continue  # stale: the count changed after this entry was pushed (the current one is in the heap too)
        if -neg < min_frequency:
            break
        if pair[0] + pair[1] in SPECIAL_TOKENS:
            continue  # never learned: the token would spell a control token (only hand-given words can hold one)
        merges.append(pair)
        changed: set[Merge] = set()
        for w in sorted(where.pop(pair)):
            old = words[w]
            new = apply_merge(old, pair)
            if len(new) == len(old):
                continue
            words[w] = new
            for p, n in _pairs(old).items():
                counts[p] -= n * freqs[w]
                changed.add(p)
            for p, n in _pairs(new).items():
                counts[p] += n * freqs[w]
                where[p].add(w)
                changed.add(p)
        for p in changed:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p))
            else:
                del counts[p]
        if advance is not None:
            advance(1)
    return merges
