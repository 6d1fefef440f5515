"""Build a DynaMaR template pool: the k most mutually dissimilar templates among candidates.

Dissimilarity of two templates `a` and `b` (DynaMaR's score: normalised Hamming plus normalised
Levenshtein distance), computed on their word sequences — the templates split on white space, each
placeholder (`{sentence}`, `{mask}`) one word, punctuation attached to its word as written:

    hamming(a, b)     = (#{i < min(|a|, |b|): a_i != b_i} + ||a| - |b||) / max(|a|, |b|)
    levenshtein(a, b) = edit distance (insert, delete, substitute; each cost 1) / max(|a|, |b|)
    d(a, b)           = (hamming(a, b) + levenshtein(a, b)) / 2            in [0, 1]

Hamming compares positions (where the mask and the texts sit), Levenshtein the words regardless of
shifts; identical templates score 0, templates with no word in the same place and no shared words 1.
A pool maximises the sum of pairwise dissimilarities over all k-subsets (exhaustively while there
are at most 200,000 subsets, else greedily: the most dissimilar pair, then repeatedly the candidate
with the largest summed dissimilarity to those chosen). Ties go to the earlier candidates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

_EXHAUSTIVE_LIMIT = 200_000


def _words(template: str) -> list[str]:
    return template.split()


def hamming_distance(a: Sequence[str], b: Sequence[str]) -> float:
    """Normalised Hamming distance of two word sequences (length difference counts as mismatches)."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 0.0
    mismatches = sum(x != y for x, y in zip(a, b)) + abs(len(a) - len(b))
    return mismatches / longest


def levenshtein_distance(a: Sequence[str], b: Sequence[str]) -> float:
    """Normalised Levenshtein (edit) distance of two word sequences."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 0.0
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1] / longest


def template_dissimilarity(a: str, b: str) -> float:
    """DynaMaR's dissimilarity of two templates: mean of normalised Hamming and Levenshtein distances over words."""
    wa, wb = _words(a), _words(b)
    return (hamming_distance(wa, wb) + levenshtein_distance(wa, wb)) / 2


def build_template_pool(candidates: Sequence[str], k: int) -> list[str]:
    """The `k` candidates with the largest summed pairwise dissimilarity, in candidate order.

    Raises `ValueError` for duplicates or when `k` is not in `[1, len(candidates)]`.
    """
    candidates = list(candidates)
    if len(set(candidates)) != len(candidates):
        raise ValueError("Template candidates contain duplicates.")
    if not 1 <= k <= len(candidates):
        raise ValueError(f"A pool of {k} templates needs 1..{len(candidates)} (the number of candidates).")
    n = len(candidates)
    if k == n:
        return candidates
    d = [[template_dissimilarity(candidates[i], candidates[j]) for j in range(n)] for i in range(n)]
    if k == 1:
        # The most "central" single template would be arbitrary: the first candidate is the user's choice.
        return candidates[:1]
    if math.comb(n, k) <= _EXHAUSTIVE_LIMIT:
        best = max(
            itertools.combinations(range(n), k),
            key=lambda subset: (round(sum(d[i][j] for i, j in itertools.combinations(subset, 2)), 12), [-i for i in subset]),
        )
        return [candidates[i] for i in best]
    first = max(itertools.combinations(range(n), 2), key=lambda pair: (round(d[pair[0]][pair[1]], 12), [-i for i in pair]))
    chosen = list(first)
    while len(chosen) < k:
        rest = [i for i in range(n) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (round(sum(d[i][j] for j in chosen), 12), -i)))
    return [candidates[i] for i in sorted(chosen)]
