"""`builtin:instructions`: short instructions with one checkable answer each, for an
instruction-tuning job on a pretrained chat model (jobs/instructions_smollm2_lora.yaml).

Seven skills, each with several phrasings: add two numbers, reverse a word list, write a
word in capitals, count words, give a word's first letter, sort three numbers, give a word's
opposite. An instruct model answers many of them zero-shot but in its own words ("Sure! The
sum of 17 and 25 is 42."), so exact match measures both the skill and the reply format
that fine-tuning teaches; token F1 gives partial credit.

Train and validation share no instance (version 2). Each instance has a content key, what it
asks with the phrasing left out (the two numbers of a sum in either order, the word to
capitalise, the three numbers to sort in any order), and a stable hash of the skill and key
puts it on one side: about one key in HELD_OUT is validation's. So a validation row asks
something train never showed, in any phrasing, and its exact match says what the skill learned
is worth, not what was remembered. Version 1 drew both splits from one pool, and 87 of its 200
validation instructions were train instructions word for word (every capitalise, first-letter
and opposite row: those skills drew from small word lists).
"""

from __future__ import annotations

import hashlib
from typing import Callable, Dict, Hashable, List, Tuple

import numpy as np

NAME = "instructions"
VERSION = 2
HELD_OUT = 4        # one content key in HELD_OUT goes to validation
N_VALIDATION = 200  # decoding on a CPU re-runs the sequence per token: keep evaluation minutes long

# 40 words, so that each side of the split holds several for the one-word skills
WORDS = ("apple river stone cloud garden window candle forest bridge mirror pencil rocket "
         "island meadow basket planet violin harbor tiger silver ladder button jacket pillow "
         "castle desert lemon wagon feather hammer turtle orange blanket dragon market valley "
         "kettle shadow puzzle anchor").split()
OPPOSITES = {"hot": "cold", "big": "small", "fast": "slow", "early": "late", "happy": "sad",
             "open": "closed", "light": "dark", "full": "empty", "up": "down", "old": "new",
             "wet": "dry", "strong": "weak", "loud": "quiet", "rich": "poor", "high": "low",
             "hard": "soft", "thick": "thin", "near": "far", "deep": "shallow", "clean": "dirty"}

Rng = np.random.Generator
Drawn = Tuple[str, str, Hashable]   # (instruction, response, content key)


def _pick(rng: Rng, items, k: int) -> List[str]:
    return [items[i] for i in rng.choice(len(items), size=k, replace=False)]


def _add(rng: Rng) -> Drawn:
    a, b = (int(x) for x in rng.integers(2, 60, size=2))
    ask = ["What is {a} + {b}?", "Add {a} and {b}.", "Compute the sum of {a} and {b}."][rng.integers(3)]
    return ask.format(a=a, b=b), str(a + b), tuple(sorted((a, b)))


def _reverse(rng: Rng) -> Drawn:
    words = _pick(rng, WORDS, int(rng.integers(3, 5)))
    ask = ["Reverse the order of these words: {w}", "Write these words in reverse order: {w}"][rng.integers(2)]
    return ask.format(w=" ".join(words)), " ".join(reversed(words)), tuple(words)


def _upper(rng: Rng) -> Drawn:
    word = _pick(rng, WORDS, 1)[0]
    ask = ["Write this word in capital letters: {w}", "Convert to uppercase: {w}"][rng.integers(2)]
    return ask.format(w=word), word.upper(), word


def _count(rng: Rng) -> Drawn:
    words = _pick(rng, WORDS, int(rng.integers(2, 8)))
    ask = ["How many words are in this list: {w}", "Count the words: {w}"][rng.integers(2)]
    return ask.format(w=" ".join(words)), str(len(words)), tuple(words)


def _first_letter(rng: Rng) -> Drawn:
    word = _pick(rng, WORDS, 1)[0]
    ask = ["What is the first letter of the word '{w}'?", "Give the first letter of {w}."][rng.integers(2)]
    return ask.format(w=word), word[0], word


def _sort(rng: Rng) -> Drawn:
    nums = [int(x) for x in rng.choice(np.arange(1, 100), size=3, replace=False)]
    ask = ["Sort these numbers from smallest to largest: {n}", "Put in ascending order: {n}"][rng.integers(2)]
    return ask.format(n=", ".join(map(str, nums))), ", ".join(map(str, sorted(nums))), tuple(sorted(nums))


def _opposite(rng: Rng) -> Drawn:
    word = _pick(rng, list(OPPOSITES), 1)[0]
    ask = ["What is the opposite of '{w}'?", "Give the antonym of the word {w}."][rng.integers(2)]
    return ask.format(w=word), OPPOSITES[word], word


SKILLS: Tuple[Callable[[Rng], Drawn], ...] = (_add, _reverse, _upper, _count, _first_letter, _sort, _opposite)


def held_out(skill: str, key: Hashable) -> bool:
    """Whether the instance with this content key is validation's: a stable hash (not Python's
    salted `hash`), the same on every machine and run."""
    digest = hashlib.blake2b(f"{skill}:{key!r}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % HELD_OUT == 0


def _draw(skill: Callable[[Rng], Drawn], rng: Rng, validation: bool) -> Drawn:
    """One instance of `skill` from the split's side of the keys (redrawn until it is)."""
    for _ in range(10_000):
        drawn = skill(rng)
        if held_out(skill.__name__, drawn[2]) == validation:
            return drawn
    raise RuntimeError(f"{skill.__name__}: no instance on the {'validation' if validation else 'train'} side")


def make_rows(n: int, seed: int, split: str = "train") -> Dict[str, List]:
    """`n` rows of `split` ("train" or "validation"), the skills in turn."""
    rng = np.random.default_rng(seed)
    skills = [SKILLS[i % len(SKILLS)] for i in range(n)]   # balanced skills, in a fixed order
    drawn = [_draw(skill, rng, split == "validation") for skill in skills]
    return {"instruction": [d[0] for d in drawn], "response": [d[1] for d in drawn],
            "skill": [skill.__name__.lstrip("_") for skill in skills]}
