"""A camera file's YAML read with the line of every key, for messages that point at the line to change
(:mod:`streamcosal.run.cameras`): a key given twice in one mapping (which PyYAML silently keeps the
last of) is refused, aliases are walked once (a file of nested aliases, "a billion laughs", is not
expanded to list its keys), and a file nested deeper than Python's recursion is refused as such.

    data, lines = parse_with_lines(path, text)       # lines[("cameras", "porch", "url")] == 7
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from streamcosal.io.redact import redact

Twice = tuple[tuple[str, ...], int, int]  # a key's path, its line, the line it was first given at


class YamlFileError(ValueError):
    """A YAML file that cannot be read as one: one line naming the file (and its line where known)."""


def parse_with_lines(path: Path, text: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """The file's data and the line of each key (by its path of keys).

    Raises:
        YamlFileError: an empty file, a key given twice, YAML that does not parse, nesting too deep.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise YamlFileError(f"{path}: empty: a camera file needs a cameras: mapping; see examples/cameras.yaml")
        lines: dict[tuple[str, ...], int] = {}
        twice = _key_lines(node, (), lines, set())
        if twice:
            raise YamlFileError("\n".join(_twice(path, *where) for where in twice))
        return loader.construct_document(node), lines
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise YamlFileError(f"{path}{where}: not valid YAML: {redact(problem)}") from None
    except RecursionError:
        raise YamlFileError(f"{path}: nested too deeply to be read (hundreds of levels): a camera file is a few "
                            "levels of keys") from None
    finally:
        loader.dispose()


def _key_lines(node: yaml.Node, at: tuple[str, ...], lines: dict[tuple[str, ...], int], seen: set[int]) -> list[Twice]:
    """Fill ``lines`` with the line of every key under ``node``, each node once (an alias's keys are where
    its anchor is); the keys given twice: (path, line, first line)."""
    if id(node) in seen:
        return []
    seen.add(id(node))
    twice: list[Twice] = []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            where = (*at, str(key.value)) if isinstance(key, yaml.ScalarNode) else None
            if where is not None and where in lines and key.value != "<<":
                twice.append((where, key.start_mark.line + 1, lines[where]))
                continue
            if where is not None:
                lines[where] = key.start_mark.line + 1
            twice += _key_lines(value, where or at, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            twice += _key_lines(item, (*at, str(index)), lines, seen)
    return twice


def _twice(path: Path, where: tuple[str, ...], line: int, first: int) -> str:
    if len(where) == 2 and where[0] == "cameras":
        return (f"{path}:{line}: camera {where[1]!r} is defined twice (also at line {first}): give each camera its "
                "own name")
    who = f"camera {where[1]!r}: " if len(where) > 2 and where[0] == "cameras" else ""
    key = ".".join(where[2:] if who else where)
    return f"{path}:{line}: {who}key {key!r} is given twice (also at line {first}): keep one"
