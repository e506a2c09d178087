"""`peft-ray tune`: a Ray Tune search over prompt templates, verbalizers, PEFT methods and
hyper-parameters. Every trial runs the `peft-ray train` path (a TorchTrainer driven from a
Tune function); ASHA stops weak trials at their evaluations; the run dir gets a leaderboard,
learning curves, the best adapter and the best trial's job YAML.

The typed ``tune:`` section lives with the job schema (``peft_ray/spec/tune.py``). Modules: ``space`` (candidates, fail-fast validation,
Ray search space), ``prescreen`` (zero-shot template scoring), ``trial`` (the Tune function and
the resource plan), ``results`` (leaderboard, plot, exports), ``runner`` (run_tune).
Importing this package does nothing else.
"""
