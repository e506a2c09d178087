"""A resumed Ray run prunes the interrupted run's folder under ray/, keeping the best checkpoint."""

from pathlib import Path

from peft_ray.storage import Location
from peft_ray.train.prune import prune_interrupted_runs, say_pruned


def _run(root: Path, name: str, *checkpoints: str) -> Path:
    run = root / "ray" / name
    for c in checkpoints:
        (run / c / "adapter").mkdir(parents=True)
        (run / c / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    return run


def test_the_interrupted_runs_folder_goes_and_the_resumed_one_stays(tmp_path, capsys):
    old = _run(tmp_path, "job-1", "checkpoint_a", "checkpoint_b")
    new = _run(tmp_path, "job-2", "checkpoint_c")
    best = Location.at(new / "checkpoint_c")
    pruned, kept = prune_interrupted_runs(Location.at(tmp_path / "ray"), str(new), best)
    assert (pruned, kept) == (["job-1"], None)
    assert not old.exists()
    assert sorted(p.name for p in new.iterdir()) == ["checkpoint_c", "checkpoint_manager_snapshot.json"]
    say_pruned(pruned, kept)
    assert "ray/job-1" in capsys.readouterr().out


def test_the_best_checkpoint_of_the_interrupted_run_is_kept_alone(tmp_path, capsys):
    old = _run(tmp_path, "job-1", "checkpoint_a", "checkpoint_b")
    new = _run(tmp_path, "job-2", "checkpoint_c")
    best = Location.at(old / "checkpoint_a")
    pruned, kept = prune_interrupted_runs(Location.at(tmp_path / "ray"), str(new), best)
    assert pruned == ["job-1"] and kept == best
    assert [p.name for p in old.iterdir()] == ["checkpoint_a"]
    assert (old / "checkpoint_a" / "adapter" / "adapter_model.safetensors").exists()
    assert (new / "checkpoint_c").exists()
    say_pruned(pruned, kept)
    assert "the best checkpoint" in capsys.readouterr().out


def test_nothing_goes_when_the_result_lies_elsewhere(tmp_path):
    old = _run(tmp_path, "job-1", "checkpoint_a")
    pruned, _ = prune_interrupted_runs(Location.at(tmp_path / "ray"), str(tmp_path / "elsewhere" / "job-2"), None)
    assert pruned == [] and (old / "checkpoint_a").exists()
    missing = tmp_path / "missing"
    assert prune_interrupted_runs(Location.at(missing), str(missing / "x"), None) == ([], None)
