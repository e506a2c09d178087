"""The prompt template language. Templates are data, never code.

    "{soft} Review: {text} Sentiment: {label}."

- ``{column}``   the value of a data column (plain identifiers only);
- ``{soft}``     the method's soft virtual tokens; ``{soft:N}`` says N of them;
- ``{label}``    the label slot (the mask token for masked-LM scoring);
- ``{{`` / ``}}`` literal braces.

No eval, no Jinja, no attribute or index access: ``{text.__class__}`` and
``{0.__init__}`` are syntax errors here, not lookups.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from peft_ray.errors import SpecError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_field_name(name: str) -> bool:
    """Whether a template can name this column as a field ({name})."""
    return bool(_IDENT.match(name)) and not name.startswith("__")
_SOFT = re.compile(r"soft(?::(\d+))?\Z")


@dataclass(frozen=True)
class Part:
    kind: str                 # "text" | "column" | "soft" | "label"
    value: str = ""           # literal text or column name
    n: Optional[int] = None   # soft-token count given as {soft:N}


class TemplateError(SpecError):
    pass


def _parse_field(body: str, pos: int, where: str) -> Part:
    m = _SOFT.match(body)
    if m:
        if m.group(1) and len(m.group(1)) > 6:    # int() of thousands of digits raises, or takes long
            raise TemplateError(f"{where}: {{soft:N}} at position {pos}: N has {len(m.group(1))} digits; "
                                "N is a count of virtual tokens, at most method.num_virtual_tokens")
        n = int(m.group(1)) if m.group(1) else None
        if n == 0:
            raise TemplateError(f"{where}: {{soft:0}} at position {pos}: N must be >= 1")
        return Part("soft", n=n)
    if body == "label":
        return Part("label")
    if _IDENT.match(body) and not body.startswith("__"):
        return Part("column", body)
    raise TemplateError(
        f"{where}: field '{{{body}}}' at position {pos} is not allowed. Fields are plain column "
        "names, {soft}, {soft:N} or {label}; attribute access, indexing and code are never "
        "evaluated. Write '{{' or '}}' for literal braces.")


def _tokenize(text: str, where: str) -> List[Part]:
    parts: List[Part] = []
    buf, i = [], 0
    while i < len(text):
        c = text[i]
        if text.startswith("{{", i) or text.startswith("}}", i):
            buf.append(c)
            i += 2
        elif c == "{":
            end = text.find("}", i)
            nxt = text.find("{", i + 1)
            if end < 0 or (0 <= nxt < end):
                raise TemplateError(f"{where}: unbalanced '{{' at position {i}: close it with '}}' "
                                    "or write '{{' for a literal brace")
            if buf:
                parts.append(Part("text", "".join(buf)))
                buf = []
            parts.append(_parse_field(text[i + 1:end].strip(), i, where))
            i = end + 1
        elif c == "}":
            raise TemplateError(f"{where}: unbalanced '}}' at position {i}: write '}}}}' for a literal brace")
        else:
            buf.append(c)
            i += 1
    if buf:
        parts.append(Part("text", "".join(buf)))
    return parts


@dataclass(frozen=True)
class Template:
    text: str
    parts: Tuple[Part, ...]

    @classmethod
    def parse(cls, text: str, where: str = "template.text") -> "Template":
        parts = tuple(_tokenize(text, where))
        if not any(p.kind == "column" for p in parts):
            raise TemplateError(f"{where}: names no data column; add one such as {{text}}")
        softs = [i for i, p in enumerate(parts) if p.kind == "soft"]
        if len(softs) > 1 or (softs and softs[0] != 0):
            raise TemplateError(
                f"{where}: soft tokens must come first, once ('{{soft}} ...'): HF PEFT prompt "
                "adapters prepend the virtual tokens, and peft-ray keeps its adapters loadable there")
        return cls(text, parts)

    @property
    def columns(self) -> List[str]:
        return list(dict.fromkeys(p.value for p in self.parts if p.kind == "column"))

    @property
    def column_slots(self) -> List[str]:
        """Every {column} slot in order, a column used twice twice (rows.tokens.fit_columns)."""
        return [p.value for p in self.parts if p.kind == "column"]

    @property
    def soft_tokens(self) -> Optional[int]:
        """N from {soft:N}, or None when the template leaves the count to the method."""
        return next((p.n for p in self.parts if p.kind == "soft"), None)

    @property
    def has_label_slot(self) -> bool:
        return any(p.kind == "label" for p in self.parts)

    @property
    def label_sep(self) -> str:
        """What the template writes between its prompt and {label}: the whitespace ending the text
        before the slot ("\n" in "Sentiment:\n{label}", "" in "Sentiment:{label}"); a space where
        the label is appended (no slot). Rendering strips the prompt's end, so the label's tokens carry
        it: a model is scored on the text as written."""
        if not self.has_label_slot:
            return " "
        before = self._text_before_slot()
        return before[len(before.rstrip()):]

    @property
    def text_before_label(self) -> str:
        """The template's own text just before {label}, without its outer whitespace ("" where a
        column or nothing comes before the slot): what label words are tokenized after."""
        return self._text_before_slot().strip()

    def _text_before_slot(self) -> str:
        """The text part just before {label} ("" where a column, nothing or no slot is there)."""
        cut = next((i for i, p in enumerate(self.parts) if p.kind == "label"), 0)
        before = self.parts[cut - 1] if cut else None
        return before.value if before is not None and before.kind == "text" else ""

    def prompt_part(self) -> "Template":
        """The template up to its {label} slot (all of it when it has none): a generation prompt."""
        cut = next((i for i, p in enumerate(self.parts) if p.kind == "label"), len(self.parts))
        return Template(self.text, self.parts[:cut])

    def render(self, row: Mapping[str, Any], label_text: str = "") -> Optional[str]:
        """The hard text of one row; None when a named column is null or empty."""
        out = []
        for p in self.parts:
            if p.kind == "text":
                out.append(p.value)
            elif p.kind == "label":
                out.append(label_text)
            elif p.kind == "column":
                v = row.get(p.value)
                if v is None or (isinstance(v, str) and not v.strip()):
                    return None
                out.append(v if isinstance(v, str) else " ".join(map(str, v)) if isinstance(v, list) else str(v))
        return "".join(out).strip()


def normalize_verbalizer(verbalizer: Optional[Dict[str, Any]]) -> Optional[Dict[str, List[str]]]:
    """label -> list of words (a single word becomes a one-element list)."""
    if verbalizer is None:
        return None
    return {str(k): ([v] if isinstance(v, str) else [str(w) for w in v]) for k, v in verbalizer.items()}


def check_verbalizer(verbalizer, labels: List[str], head: str) -> None:
    """template.verbalizer against the task's labels (a task's check calls it with its own)."""
    verb = normalize_verbalizer(verbalizer)
    if verb is None:
        if head == "verbalizer":
            raise SpecError("template.verbalizer: task.head is 'verbalizer' but no verbalizer is given")
        return
    missing = [lab for lab in labels if lab not in verb]
    if missing:
        raise SpecError(f"template.verbalizer: label(s) {missing} from task.labels have no words; "
                        f"add e.g. '{missing[0]}: [word]'")
    extra = [k for k in verb if labels and k not in labels]
    if extra:
        raise SpecError(f"template.verbalizer: key(s) {extra} are not in task.labels {labels}")
    empty = [k for k, words in verb.items() if not words or not all(w.strip() for w in words)]
    if empty:
        raise SpecError(f"template.verbalizer: label(s) {empty} have an empty word list")


def one_line(text: str) -> str:
    """A template as one terminal line: its line breaks and tabs shown as \\n, \\r, \\t."""
    return text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
