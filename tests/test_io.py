"""kdbench.io.atomic_write: the file appears whole or not at all, with the permissions of a plainly created file."""
import os

import pytest

from kdbench.io import atomic_write, write_json, write_text


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_file_gets_the_mode_of_a_plainly_created_file(tmp_path, mask):
    old = os.umask(mask)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        written = (write_text(tmp_path / "a.md", "text"), write_json(tmp_path / "b.json", {"a": 1}),
                   atomic_write(tmp_path / "c.png", lambda f: f.write(b"\x89PNG"), mode="wb"))
    finally:
        os.umask(old)
    for path in written:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask == plain.stat().st_mode & 0o777


def test_text_is_utf8_as_given(tmp_path):
    path = write_text(tmp_path / "deep" / "t.md", "74.60 ± 0.60\r\nΔ\n")  # parents are created
    assert path.read_bytes() == "74.60 ± 0.60\r\nΔ\n".encode("utf-8")


@pytest.mark.parametrize("existing", [None, "old contents"])
def test_a_failed_write_leaves_no_temporary_file_and_no_partial_target(tmp_path, existing):
    target = tmp_path / "leaderboard.md"
    if existing is not None:
        target.write_text(existing)

    def write(f):
        f.write("half a table")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if existing is None else ["leaderboard.md"])
    assert existing is None or target.read_text() == existing


def test_replaces_an_existing_file_whole(tmp_path):
    target = write_text(tmp_path / "r.json", "a much longer first version\n")
    write_text(target, "short\n")
    assert target.read_text() == "short\n" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
