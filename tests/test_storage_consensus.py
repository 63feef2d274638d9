"""The FAISS consensus store: decay math, nearest groups, persistence, atomic save."""

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from streamcosal.storage import ConsensusStore, UnknownGroupError, consensus_store

C = 1000


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def _profile_logits(rng: np.random.Generator, classes: list[int], n: int) -> np.ndarray:
    """[n, C] logits of images of one kind: noise plus a strong response on ``classes``."""
    logits = rng.normal(0.0, 1.0, (n, C))
    logits[:, classes] += rng.uniform(6.0, 9.0, (n, len(classes)))
    return logits


def test_update_and_decay_match_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    store = ConsensusStore.open(tmp_path / "consensus.npz")
    a, b, c = (rng.normal(0, 3, (k, C)) for k in (4, 2, 3))

    store.update("cam", a, t=10.0, half_life=2.0)
    store.update("cam", b, t=13.0, half_life=2.0)
    consensus = store.update("cam", c, t=14.0, half_life=2.0)

    expected = (a.sum(0) * 0.5**1.5 + b.sum(0)) * 0.5**0.5 + c.sum(0)
    state = store.state("cam")
    np.testing.assert_allclose(state.sums, expected, rtol=1e-12)
    assert state.n == pytest.approx((4 * 0.5**1.5 + 2) * 0.5**0.5 + 3)
    assert state.t == 14.0
    np.testing.assert_allclose(consensus, _softmax(expected), rtol=1e-5, atol=1e-9)
    np.testing.assert_array_equal(store.consensus("cam"), consensus)
    assert consensus.dtype == np.float32 and consensus.sum() == pytest.approx(1.0, abs=1e-5)


def test_no_decay_is_the_plain_gicd_sum_and_softmax_is_stable(tmp_path: Path) -> None:
    store = ConsensusStore(tmp_path / "s.npz")
    logits = np.zeros((2, C))
    logits[:, 7] = 800.0  # exp(1600) overflows without the max shift
    store.update("g", logits, t=0.0)
    store.update("g", logits, t=100.0)
    store.update("g", logits, t=50.0)  # without decay, time order does not matter
    assert store.state("g").n == 6 and store.state("g").t == 100.0
    consensus = store.consensus("g")
    assert np.all(np.isfinite(consensus)) and consensus[7] == pytest.approx(1.0)


def test_errors_name_the_group_and_the_problem(tmp_path: Path) -> None:
    store = ConsensusStore(tmp_path / "s.npz")
    store.update("cam-1", np.zeros((1, C)), t=5.0)
    with pytest.raises(UnknownGroupError, match=r"'cam-9'.*'cam-1'"):
        store.consensus("cam-9")
    with pytest.raises(KeyError):
        store.nearest("cam-9")
    with pytest.raises(ValueError, match=r"\[N, 1000\]"):
        store.update("cam-1", np.zeros((1, 10)), t=6.0)
    with pytest.raises(ValueError, match="earlier"):
        store.update("cam-1", np.zeros((1, C)), t=4.0, half_life=1.0)


def test_nearest_finds_the_group_of_the_same_kind(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    kinds = {
        "dog": [207, 208, 250],
        "car": [436, 511, 817],
        "bird": [10, 11, 12],
        "boat": [472, 554],
    }
    store = ConsensusStore.open(tmp_path / "consensus.npz")
    for name, classes in kinds.items():
        for camera in ("north", "south"):
            store.update(f"{name}-{camera}", _profile_logits(rng, classes, 5), t=0.0)

    for name in kinds:
        hits = store.nearest(f"{name}-north", k=3)
        assert hits[0][0] == f"{name}-south"
        assert f"{name}-north" not in [g for g, _ in hits] and len(hits) == 3
        assert hits[0][1] > hits[1][1]

    one_image = _softmax(_profile_logits(rng, kinds["car"], 1)[0])
    assert {g for g, _ in store.nearest(one_image, k=2)} == {"car-north", "car-south"}
    assert len(store.nearest("dog-north", k=50)) == 7


def test_save_and_reopen_continue_with_the_same_state(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "state" / "consensus.npz"
    store = ConsensusStore.open(path)
    for i in range(6):
        logits = _profile_logits(rng, [i * 100, i * 100 + 1], 3)
        store.update(f"track-{i}", logits, t=1.0, half_life=5)
    store.save()

    again = ConsensusStore.open(path)
    assert again.groups() == store.groups()
    for group in store.groups():
        np.testing.assert_array_equal(again.consensus(group), store.consensus(group))
        old, new = store.state(group), again.state(group)
        np.testing.assert_array_equal(new.sums, old.sums)
        assert (new.id, new.n, new.t, new.created, new.updated) == (
            old.id, old.n, old.t, old.created, old.updated
        )
        assert again.nearest(group, k=3) == store.nearest(group, k=3)

    # Both continue identically, and a new group gets a fresh id.
    logits = _profile_logits(rng, [0, 1], 2)
    expected = store.update("track-0", logits, t=3.0, half_life=5)
    np.testing.assert_array_equal(again.update("track-0", logits, t=3.0, half_life=5), expected)
    again.update("new", logits, t=3.0)
    assert again.state("new").id == 6


def test_interrupted_save_leaves_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "consensus.npz"
    store = ConsensusStore.open(path)
    store.update("old", np.eye(1, C, 3), t=0.0)
    store.save()
    before = path.read_bytes()

    store.update("new", np.eye(1, C, 5), t=0.0)

    def write_half_then_die(f, **arrays) -> None:
        f.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(consensus_store.np, "savez", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        store.save()
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["consensus.npz", "consensus.npz.lock"]  # no temporary file
    assert ConsensusStore.open(path).groups() == ["old"]


def test_corrupted_or_foreign_files_are_named(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        ConsensusStore.open(garbage)

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(ValueError, match="foreign.npz.*not a streamcosal consensus store"):
        ConsensusStore.open(foreign)

    small = ConsensusStore(tmp_path / "small.npz", dim=10)
    small.update("g", np.zeros((1, 10)), t=0.0)
    small.save()
    with pytest.raises(ValueError, match="dim=10"):
        ConsensusStore.open(tmp_path / "small.npz")


def test_updates_and_saves_from_two_threads(tmp_path: Path) -> None:
    path = tmp_path / "consensus.npz"
    store = ConsensusStore.open(path)
    rng = np.random.default_rng(3)
    batches = [rng.normal(size=(2, C)) for _ in range(40)]

    def updater() -> None:
        for i, logits in enumerate(batches):
            store.update(f"g{i % 4}", logits, t=float(i))

    def saver() -> None:
        for _ in range(10):
            store.save()

    threads = [threading.Thread(target=updater), threading.Thread(target=saver)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.save()

    reopened = ConsensusStore.open(path)
    for g in range(4):
        expected = sum(batches[i].sum(0) for i in range(g, 40, 4))
        np.testing.assert_allclose(reopened.state(f"g{g}").sums, expected, rtol=1e-12)


def test_put_copies_a_state_from_another_store(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    source = ConsensusStore(tmp_path / "a.npz")
    source.update("video-a", rng.normal(size=(5, 1000)), t=2.0)
    state = source.state("video-a")
    merged = ConsensusStore(tmp_path / "merged.npz")
    merged.put("video-a", state.sums, state.n, state.t)
    np.testing.assert_allclose(merged.consensus("video-a"), source.consensus("video-a"))
    assert merged.state("video-a").n == 5.0 and merged.nearest(source.consensus("video-a"), k=1)[0][0] == "video-a"


def test_two_stores_saving_into_one_file_keep_both_groups(tmp_path: Path) -> None:
    """Two runs into one --out: each saves its own groups; neither loses the other's."""
    path = tmp_path / "consensus.npz"
    first, second = ConsensusStore.open(path), ConsensusStore.open(path)
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(3, C)), rng.normal(size=(2, C))
    first.update("video-a", a, t=1.0)
    second.update("video-b", b, t=2.0)
    first.save()
    second.save()
    first.update("video-a", a, t=3.0)  # first saves again: it keeps video-b, saved meanwhile
    first.save()
    merged = ConsensusStore.open(path)
    assert sorted(merged.groups()) == ["video-a", "video-b"]
    np.testing.assert_allclose(merged.state("video-a").sums, 2 * a.sum(0))
    np.testing.assert_allclose(merged.state("video-b").sums, b.sum(0))
    assert merged.state("video-a").id != merged.state("video-b").id
    assert merged.nearest("video-a", k=5)[0][0] == "video-b"


SAVER = """
import sys
import numpy as np
from streamcosal.storage import ConsensusStore
path, name = sys.argv[1], sys.argv[2]
store = ConsensusStore.open(path)
for i in range(30):
    store.update(name, np.full((1, 1000), float(i)), t=float(i))
    store.save()
"""


def test_processes_saving_at_once_lose_no_group(tmp_path: Path) -> None:
    path = tmp_path / "consensus.npz"
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(path), f"run{k}"]) for k in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    store = ConsensusStore.open(path)
    assert sorted(store.groups()) == ["run0", "run1", "run2"]
    for k in range(3):
        np.testing.assert_allclose(store.state(f"run{k}").sums, np.full(1000, float(sum(range(30)))))
