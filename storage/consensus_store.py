"""The running consensus per group/track, searchable with FAISS and persisted atomically.

GICD's consensus of a group is softmax(sum of its images' classifier logits). For streams each
group keeps a decayed running sum ``S`` [C] of logits, a decayed count ``n`` and the time ``t`` of
its last update; ``update`` applies, with ``decay = 0.5 ** ((t - t_prev) / half_life)``::

    S = S * decay + logits.sum(0)        n = n * decay + N

The consensus is ``softmax(S * min(1, group_size / n))``: the sum of up to ``group_size`` images'
logits, and beyond that their mean times ``group_size``. So a stream that has seen a thousand
frames is on the scale of a group of ``group_size`` images (the pipeline's ``consensus_frames``,
the frames global mode sums), not a thousand times sharper: its consensus equals the global
consensus of its frames, and search scores between streams and videos stay comparable.

A FAISS ``IndexIDMap2(IndexFlatIP(C))`` holds the L2-normalised consensus of every group under a
stable int64 id, so ``nearest`` finds the groups with the most similar consensus (cosine).

The index stays on the CPU even where a GPU is present: GPU indexes do not support
``IndexIDMap2`` (remove/reconstruct by id), every update would have to re-upload the index, and
a flat search over thousands of 1000-d vectors takes microseconds on the CPU anyway.

On disk the store is one ``.npz`` file (no pickles): the sums, ids, counts and times of every
group. The index is derived data and is rebuilt from the sums on ``open``, so it can never
disagree with them. ``save`` writes a hidden temporary file and ``os.replace``s it over the old
one, so a process killed while saving leaves the previous state intact.

Several processes may share one store (two ``streamcosal video`` runs into one ``--out``):
``save`` holds a lock file beside it (``<name>.lock``, filelock) while it re-reads the file and
merges: the groups this store changed since it was opened are written as it has them, every
other group as the file has it. Two processes that change the same group: the last save wins
for that group.
"""

import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from filelock import FileLock, Timeout

from .files import atomic_write

FORMAT = "streamcosal.consensus_store"
FORMAT_VERSION = 1
NUM_CLASSES = 1000  # ImageNet classifier logits
GROUP_SIZE = 32  # images a consensus sums at most; more are averaged to this scale
LOCK_TIMEOUT_S = 120.0  # how long save() waits for another process's save


class UnknownGroupError(KeyError):
    """A group that was never updated was asked for."""

    def __str__(self) -> str:  # KeyError would show the message with quotes around it
        return str(self.args[0])


@dataclass(frozen=True)
class GroupState:
    """The running state of one group."""

    group: str
    id: int  # stable FAISS id
    sums: np.ndarray  # [C] float64: decayed sum of logits
    n: float  # decayed number of images
    t: float  # stream time of the last update, seconds
    created: float  # wall-clock (Unix) time of the first update
    updated: float  # wall-clock (Unix) time of the last update


class ConsensusStore:
    """Running consensus per group, persisted at ``path``. Thread-safe.

    Create or load with ``ConsensusStore.open(path)``; call ``save()`` to persist.
    """

    def __init__(self, path: Path, dim: int = NUM_CLASSES, group_size: int = GROUP_SIZE) -> None:
        """An empty store that will save to ``path``; use ``open`` to load an existing one.

        group_size: the consensus of more images than this is their mean logits times it.
        """
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1 image, got {group_size}")
        self.path = Path(path)
        self.dim = dim
        self.group_size = group_size
        self._states: dict[str, GroupState] = {}
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._next_id = 0
        self._changed: set[str] = set()  # groups updated or put since open/save
        self._sources: dict[str, str] = {}  # group -> what its consensus was computed from, where known
        self._lock = threading.RLock()

    @classmethod
    def open(cls, path: Path, dim: int = NUM_CLASSES, group_size: int = GROUP_SIZE) -> "ConsensusStore":
        """Load the store saved at ``path``, or create an empty one if there is no file yet.

        Raises:
            ValueError: ``path`` exists but is not a consensus store of this format, or its
                vectors are not ``dim``-dimensional.
        """
        store = cls(path, dim, group_size)
        if store.path.exists():
            store._load()
        return store

    def groups(self) -> list[str]:
        """Names of all groups, in order of first update."""
        with self._lock:
            return list(self._states)

    def __contains__(self, group: str) -> bool:
        with self._lock:
            return group in self._states

    def __len__(self) -> int:
        with self._lock:
            return len(self._states)

    def state(self, group: str) -> GroupState:
        """The running state of ``group`` (a copy)."""
        with self._lock:
            s = self._get(group)
            return GroupState(s.group, s.id, s.sums.copy(), s.n, s.t, s.created, s.updated)

    def update(
        self, group: str, logits: np.ndarray, t: float, half_life: float | None = None, source: str | None = None
    ) -> np.ndarray:
        """Add a batch of images' logits to ``group``'s running sum; returns the new consensus.

        Args:
            group: group or track name; created on its first update.
            logits: [N, C] classifier logits of N images (or [C] for one image).
            t: stream time of the batch, seconds; with a half_life it must not go back in time
                for a group (without one, the group keeps the latest t it has seen).
            half_life: seconds after which old evidence weighs half; None for no decay.
            source: what the frames come from (e.g. the video's resolved path), kept for ``source``.

        Returns:
            [C] float32 consensus of the group after the update.
        """
        logits = np.asarray(logits, dtype=np.float64)
        if logits.ndim == 1:
            logits = logits[None]
        if logits.ndim != 2 or logits.shape[1] != self.dim or logits.shape[0] == 0:
            raise ValueError(
                f"update({group!r}) needs logits of shape [N, {self.dim}] with N >= 1, "
                f"got {logits.shape}"
            )
        if not np.all(np.isfinite(logits)):
            raise ValueError(f"update({group!r}): logits contain NaN or inf")
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life must be > 0 seconds or None, got {half_life}")
        with self._lock:
            now = time.time()
            old = self._states.get(group)
            if old is None:
                n = float(len(logits))
                state = GroupState(group, self._next_id, logits.sum(0), n, t, now, now)
                self._next_id += 1
            else:
                if half_life is not None and t < old.t:
                    raise ValueError(
                        f"update({group!r}) at t={t} is earlier than its last update t={old.t}; "
                        "feed each group's frames in time order"
                    )
                decay = 1.0 if half_life is None else 0.5 ** ((t - old.t) / half_life)
                state = GroupState(
                    group,
                    old.id,
                    old.sums * decay + logits.sum(0),
                    old.n * decay + len(logits),
                    max(t, old.t),
                    old.created,
                    now,
                )
            if source is not None:
                self._sources[group] = source
            return self._set(state)

    def put(self, group: str, sums: np.ndarray, n: float, t: float, source: str | None = None) -> np.ndarray:
        """Set ``group``'s state to a running sum ``sums`` [C] of ``n`` images at time ``t``
        (e.g. copied from another store); returns its consensus [C]. ``source``: what it was
        computed from (e.g. the video's resolved path), kept for ``source``."""
        sums = np.asarray(sums, dtype=np.float64)
        if sums.shape != (self.dim,) or not np.all(np.isfinite(sums)):
            raise ValueError(f"put({group!r}) needs finite sums of shape [{self.dim}], got {sums.shape}")
        with self._lock:
            now = time.time()
            old = self._states.get(group)
            if old is None:
                state = GroupState(group, self._next_id, sums.copy(), float(n), t, now, now)
                self._next_id += 1
            else:
                state = GroupState(group, old.id, sums.copy(), float(n), t, old.created, now)
            if source is not None:
                self._sources[group] = source
            return self._set(state)

    def source(self, group: str) -> str | None:
        """What ``group``'s consensus was last computed from (``put``/``update(..., source=)``), if known."""
        with self._lock:
            return self._sources.get(group)

    def _set(self, state: GroupState) -> np.ndarray:
        """Store ``state`` and re-index its consensus (the lock is held)."""
        self._states[state.group] = state
        self._changed.add(state.group)
        consensus = self._consensus(state.sums, state.n)
        self._index.remove_ids(np.array([state.id], dtype=np.int64))
        self._index.add_with_ids(_unit(consensus)[None], np.array([state.id], dtype=np.int64))
        return consensus

    def consensus(self, group: str) -> np.ndarray:
        """[C] float32 consensus of ``group``: softmax of its running sum of logits, on the scale
        of at most ``group_size`` images."""
        with self._lock:
            state = self._get(group)
            return self._consensus(state.sums, state.n)

    def nearest(self, query: str | np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` groups whose consensus is most similar to ``query``, best first.

        Args:
            query: a group name (that group itself is left out of the answer), or a [C]
                consensus vector (e.g. the softmax of one image's logits).
            k: how many groups at most.

        Returns:
            (group, cosine similarity of the consensus vectors) pairs.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with self._lock:
            if isinstance(query, str):
                exclude = self._get(query).id
                state = self._states[query]
                vector = self._consensus(state.sums, state.n)
            else:
                exclude = None
                vector = np.asarray(query, dtype=np.float32)
                if vector.shape != (self.dim,) or not np.all(np.isfinite(vector)):
                    raise ValueError(
                        f"nearest() needs a group name or a finite [{self.dim}] consensus vector, "
                        f"got shape {vector.shape}"
                    )
            n_search = min(k + (exclude is not None), self._index.ntotal)
            if n_search == 0:
                return []
            scores, ids = self._index.search(_unit(vector)[None], n_search)
            names = {s.id: s.group for s in self._states.values()}
            hits = [
                (names[i], float(score))
                for score, i in zip(scores[0], ids[0])
                if i >= 0 and i != exclude
            ]
            return hits[:k]

    def save(self, replace: bool = False) -> None:
        """Persist the store to ``path`` atomically (the old file stays valid until then), merged
        with what other processes saved there since (see the module's docstring); with ``replace``
        the file holds exactly this store's groups instead (a store rebuilt from its sources).

        Raises:
            OSError: the file cannot be written, or another process held its lock for
                ``LOCK_TIMEOUT_S``; the message names the file.
        """
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(self.path.with_name(f"{self.path.name}.lock"), timeout=LOCK_TIMEOUT_S)
            try:
                with lock:
                    if self.path.exists() and not replace:
                        self._merge(ConsensusStore.open(self.path, self.dim, self.group_size))
                    self._write()
            except Timeout as e:
                raise OSError(f"{self.path}: another process held {lock.lock_file} for {LOCK_TIMEOUT_S:.0f} s; "
                              "if none is running, delete that lock file and run again") from e
            self._changed.clear()

    def _merge(self, saved: "ConsensusStore") -> None:
        """Take every group of ``saved`` that this store did not change (and keep this store's
        groups ``saved`` lacks); rebuild the index (the lock is held). Groups keep the ids ``saved``
        gave them; the others get fresh ids where ``saved`` uses theirs."""
        states = {g: s for g, s in saved._states.items() if g not in self._changed}
        used = {s.id for s in states.values()}
        next_id = max(used | {s.id for s in self._states.values()}, default=-1) + 1
        for group in self._states:
            if group in states:
                continue
            state = self._states[group]
            old = saved._states.get(group)
            if old is not None:
                state = GroupState(group, old.id, state.sums, state.n, state.t, min(old.created, state.created),
                                   state.updated)
            elif state.id in used:
                state = GroupState(group, next_id, state.sums, state.n, state.t, state.created, state.updated)
                next_id += 1
            used.add(state.id)
            states[group] = state
        self._states = states
        self._sources = {g: src for g in states
                         if (src := (self._sources if g in self._changed or g not in saved._states else saved._sources).get(g))}
        self._next_id = max(next_id, max(used, default=-1) + 1)
        self._index.reset()
        if states:
            ids = np.array([s.id for s in states.values()], dtype=np.int64)
            self._index.add_with_ids(np.stack([_unit(self._consensus(s.sums, s.n)) for s in states.values()]), ids)

    def _write(self) -> None:
        """Write the whole store to ``path`` through a temporary file (the locks are held)."""
        states = list(self._states.values())
        arrays = {
            "format": np.array(FORMAT),
            "format_version": np.array(FORMAT_VERSION),
            "groups": np.array([s.group for s in states], dtype=str),
            "ids": np.array([s.id for s in states], dtype=np.int64),
            "sums": np.array([s.sums for s in states], dtype=np.float64).reshape(-1, self.dim),
            "n": np.array([s.n for s in states], dtype=np.float64),
            "t": np.array([s.t for s in states], dtype=np.float64),
            "created": np.array([s.created for s in states], dtype=np.float64),
            "updated": np.array([s.updated for s in states], dtype=np.float64),
            "sources": np.array([self._sources.get(s.group, "") for s in states], dtype=str),
        }
        with atomic_write(self.path) as f:
            np.savez(f, **arrays)

    def _get(self, group: str) -> GroupState:
        try:
            return self._states[group]
        except KeyError:
            known = ", ".join(repr(g) for g in list(self._states)[:20]) or "none yet"
            raise UnknownGroupError(
                f"no consensus for group {group!r} in {self.path}: it was never updated "
                f"(known groups: {known}); call update() with its logits first"
            ) from None

    def _load(self) -> None:
        try:
            data = np.load(self.path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with data:
                arrays = {key: data[key] for key in data.files}
        except OSError as e:
            raise ValueError(f"{self.path} cannot be read ({e.strerror or e}); check its permissions, or pass "
                             "another path") from e
        except (ValueError, zipfile.BadZipFile, EOFError) as e:  # numpy's own text would suggest an unsafe load
            raise ValueError(f"{self.path} is not a consensus store: not an .npz archive of arrays (damaged, or "
                             "another kind of file); pass the consensus.npz a run wrote, or, where this one was a "
                             "store and is damaged, move it away for a run to start an empty one") from e
        if "format" not in arrays or arrays["format"] != FORMAT:
            raise ValueError(f"{self.path} is not a streamcosal consensus store (no '{FORMAT}' marker); pass another path")
        if int(arrays["format_version"]) != FORMAT_VERSION:
            raise ValueError(
                f"{self.path} is consensus store format {int(arrays['format_version'])}, this "
                f"streamcosal reads format {FORMAT_VERSION}; use the release that wrote it"
            )
        missing = {"groups", "ids", "sums", "n", "t", "created", "updated"} - set(arrays)
        if missing:
            raise ValueError(f"{self.path} is a damaged consensus store: it lacks {sorted(missing)}; move it away for a "
                             "run to start an empty one")
        sums = arrays["sums"]
        if sums.ndim != 2 or sums.shape[1] != self.dim:
            raise ValueError(
                f"{self.path} holds {sums.shape[-1]}-d consensus sums, this store expects "
                f"{self.dim}-d; open it with dim={sums.shape[-1]} or pass another path"
            )
        ids = arrays["ids"]
        for i, group in enumerate(arrays["groups"].tolist()):
            self._states[group] = GroupState(group, int(ids[i]), sums[i].copy(), *(float(arrays[key][i]) for key in
                                                                                  ("n", "t", "created", "updated")))
        if "sources" in arrays:  # stores written before sources were kept have none
            self._sources = {g: src for g, src in zip(arrays["groups"].tolist(), arrays["sources"].tolist()) if src}
        if len(ids):
            vectors = np.stack([_unit(self._consensus(row, n)) for row, n in zip(sums, arrays["n"])])
            self._index.add_with_ids(vectors, ids)
        self._next_id = int(ids.max()) + 1 if len(ids) else 0


    def _consensus(self, sums: np.ndarray, n: float) -> np.ndarray:
        """[C] float32 softmax of the running sum [C] of n images, scaled to at most group_size."""
        return _softmax(sums * min(1.0, self.group_size / n) if n > 0 else sums)


def _softmax(sums: np.ndarray) -> np.ndarray:
    """[C] float32 softmax of [C] sums, computed stably in float64."""
    z = np.exp(sums - sums.max())
    return (z / z.sum()).astype(np.float32)


def _unit(vector: np.ndarray) -> np.ndarray:
    """[C] float32 ``vector`` scaled to unit L2 norm (unchanged if it is all zeros)."""
    vector = np.asarray(vector, dtype=np.float32)
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector
