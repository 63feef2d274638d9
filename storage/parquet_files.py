"""Atomic, source-partitioned Parquet files: the one write path and read path for our tables.

A file is first written under a hidden temporary name (``.<name>.<uuid>.tmp``: a leading dot,
which pyarrow datasets skip, and no ``.parquet`` suffix, so ``**/*.parquet`` globs in DuckDB or
Spark skip it too), fsynced, then ``os.replace``d to its final name. A reader therefore sees
either the whole file or nothing, and an interrupted write leaves nothing a reader would pick up.

Partitions are hive-style directories ``source_key=<slug>-<hash>``: sources are URLs or paths,
which are not safe directory names, so the key is a short readable slug plus a hash of the full
source string. The full string stays in the ``source`` column.
"""

import hashlib
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .files import atomic_write
from .schema import READABLE_VERSIONS, SCHEMA_NAME_KEY, SCHEMA_VERSION, SCHEMA_VERSION_KEY

PARTITION_KEY = "source_key"


def source_key(source: str) -> str:
    """A directory-safe partition value for ``source``: ``<slug of at most 40 chars>-<12 hex>``."""
    slug = re.sub(r"[^a-z0-9]+", "-", source.lower()).strip("-")[-40:].strip("-")
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
    return f"{slug}-{digest}" if slug else digest


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that readers never see a partial file.

    ``os.replace`` overwrites: callers choose names that are unique.
    """
    with atomic_write(path) as f:
        pq.write_table(table, f)


def write_by_source(directory: Path, table: pa.Table, file_name: str) -> list[Path]:
    """Write ``table`` as one file ``directory/source_key=<key>/<file_name>`` per distinct source.

    Returns the paths written, in the order the sources first appear in ``table``.
    """
    paths = []
    for source in pc.unique(table["source"]).to_pylist():
        part = table.filter(pc.equal(table["source"], source))
        path = directory / f"{PARTITION_KEY}={source_key(source)}" / file_name
        write_atomic(part, path)
        paths.append(path)
    return paths


def data_files(directory: Path) -> list[Path]:
    """The visible Parquet files under ``directory``, sorted; hidden and temporary ones skipped."""
    return sorted(
        p
        for p in directory.glob(f"{PARTITION_KEY}=*/*.parquet")
        if not p.name.startswith((".", "_"))
    )


def read_files(directory: Path, schema: pa.Schema) -> pa.Table:
    """Read every data file under ``directory`` with ``schema``, after checking each file's version.

    Raises:
        FileNotFoundError: ``directory`` does not exist.
        ValueError: a file is not readable Parquet, or was written with another schema or version.
    """
    if not directory.is_dir():
        raise FileNotFoundError(
            f"no {schema.metadata[SCHEMA_NAME_KEY].decode()} table at {directory}: "
            "check the results root, or write results there first"
        )
    files = data_files(directory)
    for path in files:
        _check_file(path, schema)
    if not files:
        return schema.empty_table()
    return ds.dataset([str(p) for p in files], schema=schema, format="parquet").to_table()


def _check_file(path: Path, schema: pa.Schema) -> None:
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as e:
        raise ValueError(
            f"{path} is not a readable Parquet file ({e}); move it out of the results folder"
        ) from e
    name = schema.metadata[SCHEMA_NAME_KEY]
    if metadata.get(SCHEMA_NAME_KEY) != name:
        raise ValueError(
            f"{path} is not a streamcosal {name.decode()} file (no matching schema metadata); "
            "move it out of the results folder"
        )
    version = metadata.get(SCHEMA_VERSION_KEY, b"?").decode()
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{path} has {name.decode()} schema version {version}, this streamcosal reads version "
            f"{SCHEMA_VERSION}; read it with the streamcosal release that wrote it, or move it away"
        )
