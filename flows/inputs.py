"""The path parameters of a flow run: paths on the machine that serves the deployment, relative ones
taken from the folder ``streamcosal serve`` runs in. They are made absolute when the run starts, so
that every message names the file it means, and the results folder is made (or refused) before any
work."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from streamcosal.io.stream import is_stream


def served_path(path: str) -> str:
    """``path`` (``~`` expanded) made absolute against the serving process's folder."""
    return os.path.abspath(os.path.expanduser(path))


def source_paths(sources: str | list[str]) -> str | list[str]:
    """A video source, or a list of them, each as given where it is a stream URL or a camera device, else a
    path made absolute.

    Raises:
        ValueError: an empty list or a blank source.
    """
    return listed_paths(sources, "source", keep=is_stream)


def results_folder(out: str) -> str:
    """``out`` made absolute and created: the folder results go to.

    Raises:
        ValueError: ``out`` is blank, or cannot be made or written (a file, read-only, no such place).
    """
    if not out.strip():
        raise ValueError(f"out is empty: give the folder results go to (an absolute path; a relative one is taken "
                         f"from the folder streamcosal serve runs in, {os.getcwd()})")
    folder = Path(served_path(out))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"out {folder} cannot be made a results folder ({err.strerror or err}): give a folder "
                         "you can write to") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"out {folder} cannot be written: give a folder you can write to")
    return str(folder)


def listed_paths(paths: str | list[str], what: str, keep: Callable[[str], bool] = lambda path: False) -> str | list[str]:
    """A path (a folder or glob) or a list of paths, each made absolute (those ``keep`` says: as given).

    Raises:
        ValueError: an empty list or a blank path.
    """
    if isinstance(paths, str):
        if not paths.strip():
            raise ValueError(f"{what} is empty: give a path or a list of paths")
        return paths if keep(paths) else served_path(paths)
    if not paths:
        raise ValueError(f"{what} is an empty list: give at least one path")
    return [listed_paths(p, what, keep) for p in paths]  # type: ignore[misc]
