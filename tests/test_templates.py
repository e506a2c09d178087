from __future__ import annotations

import pytest

from peft_ray.templates import Template, TemplateError, normalize_verbalizer


def test_render_fields_and_escapes():
    t = Template.parse("{soft:4} Review: {text} {{sic}} It was {label}.")
    assert t.columns == ["text"] and t.soft_tokens == 4 and t.has_label_slot
    assert t.render({"text": "great fun"}, "[MASK]") == "Review: great fun {sic} It was [MASK]."


def test_two_columns_and_null_rows():
    t = Template.parse("{soft} {question} ? {context}")
    assert t.columns == ["question", "context"]
    assert t.render({"question": "why", "context": None}) is None
    assert t.render({"question": "  ", "context": "x"}) is None


@pytest.mark.parametrize("text", ["{text.__class__}", "{0.__init__}", "{text[0]}", "{__import__}",
                                  "{text} }", "{text", "{a{b}}", "no columns at all", "{text} {soft}"])
def test_rejected_templates(text):
    with pytest.raises(TemplateError):
        Template.parse(text)


def test_verbalizer_normalized():
    assert normalize_verbalizer({"a": "x", "b": ["y", "z"]}) == {"a": ["x"], "b": ["y", "z"]}


@pytest.mark.parametrize("text, sep", [("Review: {text}\nSentiment: {label}", " "), ("{text} Sentiment:\n{label}", "\n"),
                                       ("{text} Sentiment:{label}", ""), ("{text}{label}", ""), ("{soft} {text}", " "),
                                       ("{text}\n\n{label}", "\n\n")])
def test_label_sep_is_what_the_template_writes_before_the_label(text, sep):
    assert Template.parse(text).label_sep == sep
