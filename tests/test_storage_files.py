"""atomic_write: the file appears whole or not at all; nothing is left behind when writing fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamcosal.storage.files import atomic_write


def test_a_file_is_written_and_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "new" / "report.json"
    with atomic_write(path, "w") as f:
        f.write("first")
        assert not path.exists()  # nothing under the final name until the write is complete
    assert path.read_text() == "first"
    with atomic_write(path) as f:
        f.write(b"second")
    assert path.read_bytes() == b"second" and [p.name for p in path.parent.iterdir()] == ["report.json"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, error: BaseException) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("old")
    with pytest.raises(type(error)):
        with atomic_write(path, "w") as f:
            f.write("half")
            raise error
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_only_whole_file_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "a"):
            pass
