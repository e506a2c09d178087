"""`builtin:instructions`: short instructions with one checkable answer each, for an
instruction-tuning job on a pretrained chat model (jobs/instructions_smollm2_lora.yaml).

Seven skills, each with several phrasings: add two numbers, reverse a word list, write a
word in capitals, count words, give a word's first letter, sort three numbers, give a word's
opposite. An instruct model answers many of them zero-shot but in its own words ("Sure! The
sum of 17 and 25 is 42."), so exact match measures both the skill and the reply format
that fine-tuning teaches; token F1 gives partial credit. Train and validation draw from the
same generators with different seeds: sums, reversals, counts and sorts are mostly new
instances; capitals, first letters and opposites come from small word lists and repeat (of
the 200 validation instructions, 87 appear word for word in train, every one of those three
skills' among them), so exact match is part memory: README.md and BENCHMARKS.md say so.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np

NAME = "instructions"
VERSION = 1
N_VALIDATION = 200  # decoding on a CPU re-runs the sequence per token: keep evaluation minutes long

WORDS = ("apple river stone cloud garden window candle forest bridge mirror pencil rocket "
         "island meadow basket planet violin harbor tiger silver").split()
OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "early": "late", "happy": "sad",
             "open": "closed", "light": "dark", "full": "empty", "up": "down", "old": "new",
             "wet": "dry", "strong": "weak", "loud": "quiet", "rich": "poor", "high": "low"}

Rng = np.random.Generator


def _pick(rng: Rng, items, k: int) -> List[str]:
    return [items[i] for i in rng.choice(len(items), size=k, replace=False)]


def _add(rng: Rng) -> Tuple[str, str]:
    a, b = (int(x) for x in rng.integers(2, 60, size=2))
    ask = ["What is {a} + {b}?", "Add {a} and {b}.", "Compute the sum of {a} and {b}."][rng.integers(3)]
    return ask.format(a=a, b=b), str(a + b)


def _reverse(rng: Rng) -> Tuple[str, str]:
    words = _pick(rng, WORDS, int(rng.integers(3, 5)))
    ask = ["Reverse the order of these words: {w}", "Write these words in reverse order: {w}"][rng.integers(2)]
    return ask.format(w=" ".join(words)), " ".join(reversed(words))


def _upper(rng: Rng) -> Tuple[str, str]:
    word = _pick(rng, WORDS, 1)[0]
    ask = ["Write this word in capital letters: {w}", "Convert to uppercase: {w}"][rng.integers(2)]
    return ask.format(w=word), word.upper()


def _count(rng: Rng) -> Tuple[str, str]:
    words = _pick(rng, WORDS, int(rng.integers(2, 8)))
    ask = ["How many words are in this list: {w}", "Count the words: {w}"][rng.integers(2)]
    return ask.format(w=" ".join(words)), str(len(words))


def _first_letter(rng: Rng) -> Tuple[str, str]:
    word = _pick(rng, WORDS, 1)[0]
    ask = ["What is the first letter of the word '{w}'?", "Give the first letter of {w}."][rng.integers(2)]
    return ask.format(w=word), word[0]


def _sort(rng: Rng) -> Tuple[str, str]:
    nums = [int(x) for x in rng.choice(np.arange(1, 100), size=3, replace=False)]
    ask = ["Sort these numbers from smallest to largest: {n}", "Put in ascending order: {n}"][rng.integers(2)]
    return ask.format(n=", ".join(map(str, nums))), ", ".join(map(str, sorted(nums)))


def _opposite(rng: Rng) -> Tuple[str, str]:
    word = _pick(rng, list(OPPOSITES), 1)[0]
    ask = ["What is the opposite of '{w}'?", "Give the antonym of the word {w}."][rng.integers(2)]
    return ask.format(w=word), OPPOSITES[word]


SKILLS: Tuple[Callable[[Rng], Tuple[str, str]], ...] = (_add, _reverse, _upper, _count, _first_letter, _sort,
                                                        _opposite)


def make_rows(n: int, seed: int) -> Dict[str, List]:
    rng = np.random.default_rng(seed)
    pairs = [SKILLS[i % len(SKILLS)](rng) for i in range(n)]  # balanced skills, in a fixed order
    return {"instruction": [p[0] for p in pairs], "response": [p[1] for p in pairs],
            "skill": [SKILLS[i % len(SKILLS)].__name__.lstrip("_") for i in range(n)]}
