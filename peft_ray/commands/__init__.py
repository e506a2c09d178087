"""CLI command modules. Each module defines `register(main: click.Group)`; add new
command modules to COMMAND_MODULES (one line each) so the CLI picks them up."""

from __future__ import annotations

import importlib

import click

COMMAND_MODULES = [
    "peft_ray.commands.train",
    "peft_ray.commands.validate",
    "peft_ray.commands.data",       # data make
    "peft_ray.commands.export",
    "peft_ray.commands.jobs",       # submit / jobs (issue 7)
    "peft_ray.commands.tune",
    "peft_ray.commands.eval",       # eval / predict (issue 5)
    "peft_ray.commands.predict",
    "peft_ray.commands.zero_shot",  # the prompt alone, no training (issue 14)
    "peft_ray.commands.spec",       # config / schema (issue 15)
]


def register_all(main: click.Group) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(main)
