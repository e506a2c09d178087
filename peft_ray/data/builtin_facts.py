"""`builtin:facts`: a synthetic question-answering set for generation examples and tests.

Each of 48 things has a fixed two-word answer ("What colour is the lantern?" ->
"amber and teal"), asked in 4 phrasings: 192 questions in all, so train and validation
draw from the same ones and every validation question is also a train question. This
measures whether the response is learned, masked and decoded right (exact match), not
generalisation or world knowledge, and needs no pretrained model.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

NAME = "facts"
VERSION = 1
THINGS = ("lantern anchor violin compass kettle ladder mirror saddle candle basket helmet barrel "
          "feather pillow trumpet bucket hammer spoon wagon blanket rocket tractor glove whistle "
          "carpet cactus parrot dolphin tiger falcon beetle rabbit pencil teapot statue fountain "
          "garden bridge castle harbor tunnel meadow island desert glacier canyon forest valley").split()
COLOURS = "amber teal crimson ivory olive coral navy silver scarlet indigo golden violet".split()
ASKS = ["What colour is the {t}?", "Which colours does the {t} have?", "Tell me the colours of the {t}.",
        "The {t} is painted in which colours?"]


def answer(thing: str) -> str:
    i = THINGS.index(thing)
    return f"{COLOURS[i % len(COLOURS)]} and {COLOURS[(5 * i + 3) % len(COLOURS)]}"


def make_rows(n: int, seed: int, split: str = "train") -> Dict[str, List]:
    """`n` questions; every split asks the same 192 (`split` changes nothing: above)."""
    rng = np.random.default_rng(seed)
    things = [THINGS[rng.integers(len(THINGS))] for _ in range(n)]
    return {"question": [ASKS[rng.integers(len(ASKS))].format(t=t) for t in things],
            "answer": [answer(t) for t in things]}
