"""The built-in dataset: deterministic synthetic sentiment sentences.

It is small (3,000 train / 600 validation) but not trivially separable: a third
of the sentences negate the sentiment word ("was not good"), and a third
contrast two clauses where the second decides ("the cast was great, but the
plot was dull"), so a bag of polar words alone cannot reach high accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from peft_ray.storage import atomic_writer

NAME = "sentiment"
VERSION = 1
LABELS = ["negative", "positive"]

POS = ("good great excellent wonderful delightful superb charming brilliant enjoyable moving "
       "clever gripping lovely memorable fresh elegant funny touching beautiful solid "
       "impressive thoughtful stunning warm satisfying").split()
NEG = ("bad awful terrible dull boring tedious weak clumsy bland disappointing "
       "forgettable messy painful lifeless silly shallow annoying tiresome flat poor "
       "ugly pointless sloppy stale dreary").split()
NOUNS = ("film movie plot acting cast script soundtrack ending story dialogue pacing "
         "direction performance screenplay finale premise score cinematography humor sequel").split()
ADVS = ["", "", "really ", "quite ", "very ", "rather ", "truly ", "pretty "]
OPENERS = ["", "", "Honestly, ", "Overall, ", "I think ", "To be fair, ", "In the end, "]


def _clause(rng: np.random.Generator, positive: bool, negate: bool) -> str:
    noun = NOUNS[rng.integers(len(NOUNS))]
    # A negated clause uses the opposite word: "not bad" is positive.
    words = POS if positive != negate else NEG
    adj = words[rng.integers(len(words))]
    adv = ADVS[rng.integers(len(ADVS))]
    verb = "was not" if negate else ["was", "is", "felt", "seemed"][rng.integers(4)]
    return f"the {noun} {verb} {adv}{adj}"


def _sentence(rng: np.random.Generator) -> Tuple[str, int]:
    label = int(rng.integers(2))
    kind = rng.integers(3)
    if kind == 0:  # plain
        body = _clause(rng, bool(label), negate=False)
    elif kind == 1:  # negation
        body = _clause(rng, bool(label), negate=True)
    else:  # contrast: the clause after 'but'/'although' decides
        first = _clause(rng, not label, negate=bool(rng.integers(2)))
        second = _clause(rng, bool(label), negate=bool(rng.integers(4) == 0))
        body = f"{first}, but {second}" if rng.integers(2) else f"although {first}, {second}"
    text = OPENERS[rng.integers(len(OPENERS))] + body + "."
    return text[0].upper() + text[1:], label


def make_rows(n: int, seed: int, split: str = "train") -> Dict[str, List]:
    """`n` sentences; both splits draw from one distribution, so `split` changes nothing here (the
    seed does: 7 of the 600 validation sentences also appear in train)."""
    rng = np.random.default_rng(seed)
    texts, labels = zip(*(_sentence(rng) for _ in range(n)))
    return {"text": list(texts), "label": list(labels), "label_name": [LABELS[i] for i in labels]}


def datasets() -> dict:
    """name -> module with NAME, VERSION and make_rows(n, seed, split) (`split`: "train" or
    "validation", for a set whose splits are drawn apart)."""
    import sys

    from peft_ray.data import builtin_facts, builtin_instructions

    return {NAME: sys.modules[__name__], builtin_facts.NAME: builtin_facts,
            builtin_instructions.NAME: builtin_instructions}


def materialize(out_dir: str | Path, n_train: int = 3000, n_val: int = 600, name: str = NAME,
                keep_others: bool = False) -> Path:
    """Write train/validation Parquet files (idempotent; the content depends only on VERSION).
    `keep_others` (`peft-ray data make` into a folder the user names): refuse a folder holding
    train/validation files of its own. The cache folder is peft-ray's, so a make cut short there
    is simply made again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = datasets()[name]
    n_val = getattr(data, "N_VALIDATION", n_val)
    out = Path(out_dir)
    done = out / f".complete-{name}-v{data.VERSION}"   # names the set: another set's folder is not this one
    if done.exists():
        return out
    ours = [m.name for m in out.glob(".complete-*")]      # any set, any version (".complete-v1": before names)
    theirs = [f"{split}.parquet" for split in ("train", "validation") if (out / f"{split}.parquet").exists()]
    if keep_others and theirs and not ours:
        from peft_ray.errors import DataError

        raise DataError(f"'{out}' already holds {' and '.join(theirs)}, which `peft-ray data make` did not write; "
                        "pass a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1234), ("validation", n_val, 5678)):
        with atomic_writer(out / f"{split}.parquet") as f:
            pq.write_table(pa.table(data.make_rows(n, seed, split=split)), f)
    for marker in ours:        # only now: a make cut short is still one peft-ray may redo here
        (out / marker).unlink(missing_ok=True)
    done.touch()
    return out
