"""The `peft-ray` command line: the group; every command lives in peft_ray/commands/."""

from __future__ import annotations

import os

import click

from peft_ray.commands import register_all


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="peft-ray")
def main() -> None:
    """peft-ray: parameter-efficient fine-tuning on Ray Train + DeepSpeed ZeRO.

    \b
    A job is one YAML file (see jobs/). Typical use:
      peft-ray validate jobs/default.yaml          # check everything, train nothing
      peft-ray train jobs/default.yaml             # Ray in-process, 2 workers, ZeRO-2
      peft-ray train jobs/sst2_prompt_tuning.yaml data.root=../shared/data/sst2
      peft-ray train JOB.yaml --resume             # continue from the latest good checkpoint
    """
    # Ray folds log lines that differ only in numbers into "[repeated Nx across cluster]": one
    # trial's eval line stood for another's (the trial ids differ only in digits) and steps came
    # out of order. Read once, when ray is imported, which the commands do later; a user's own
    # setting wins.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


register_all(main)

if __name__ == "__main__":
    main()
