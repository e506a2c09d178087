"""Atomic writes cannot be redirected by a planted link."""

from __future__ import annotations

from peft_ray.storage import Location, atomic_write


def test_planted_link_at_the_old_temp_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".job.yaml.tmp").symlink_to(victim)        # the fixed name writes used to go through
    Location.at(out / "job.yaml").write_text("name: x\n")
    assert victim.read_text() == "keep"
    assert (out / "job.yaml").read_text() == "name: x\n"


def test_link_at_the_target_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "metrics.json").symlink_to(victim)
    atomic_write(tmp_path / "metrics.json", b"{}")
    assert victim.read_text() == "keep"
    assert not (tmp_path / "metrics.json").is_symlink()


def test_temp_files_leave_nothing_behind(tmp_path):
    atomic_write(tmp_path / "a.json", b"{}")
    atomic_write(tmp_path / "a.json", b"[]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert (tmp_path / "a.json").read_bytes() == b"[]"


def test_folder_swap_uses_unpredictable_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "w").write_text("new")
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / ".adapter.tmp").symlink_to(victim)     # the fixed names replace_with used to use
    (tmp_path / ".adapter.old").symlink_to(victim)
    Location.at(tmp_path / "adapter").replace_with(Location.at(src))
    assert (tmp_path / "adapter" / "w").read_text() == "new"
    assert list(victim.iterdir()) == []
