"""The results viewer (``streamcosal view``) on real results: DAVIS clips through the dev engine, served on
127.0.0.1 and looked at by a real headless Chromium (the page's text in its DOM, its pixels in a
screenshot), a live run watched while it writes, every bad folder refused, nothing outside the folder served.

Chromium is Debian's ``chromium`` package; without it these tests fail, they never skip."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from filelock import FileLock
from prefect_fixtures import DEV_THRESHOLD
from test_pipeline import davis_video, dev_checkpoint, dev_engine  # noqa: F401  (fixtures)
from typer.testing import CliRunner

from streamcosal.cli import app as cli
from streamcosal.io.open import open_source
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import PipelineConfig
from streamcosal.storage import FrameResult, ResultWriter, decode_mask, read_events, read_results
from streamcosal.storage.parquet_files import source_key
from streamcosal.view.app import create_app
from streamcosal.view.data import ResultsView
from streamcosal.view.folder import ViewError, report_summary
from streamcosal.view.frames import FrameRenderer
from streamcosal.view.server import ServerThread, bind, loopback_only

RUN = "view-run"
WINDOW = (1200, 1000)  # the browser's window, CSS pixels (device scale 1)
RESULT_FIELDS = ("source", "group", "window", "frame_index", "timestamp", "mean_prob", "similarity", "model_name",
                 "model_version")
AREA_BLUE, EVENT_FILL = (31, 111, 235), (250, 213, 187)  # the timeline's area line; an event on white


@dataclass(frozen=True)
class Folder:
    out: Path
    swan: Path  # its video is there: frames drawn over
    goat: Path  # its video was deleted after the run: masks on black
    report: dict


@dataclass(frozen=True)
class Page:
    dom: str
    shot: np.ndarray  # [H, W, 3] uint8 RGB
    frame_index: int


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no chromium on PATH: the viewer's tests drive a real headless browser; install Debian's "
                    "chromium package (apt-get update && apt-get install -y chromium)")
    return path


@pytest.fixture(scope="module")
def folder(data: Path, dev_engine, tmp_path_factory) -> Folder:  # noqa: F811
    """Two 8-frame DAVIS clips through the dev engine (masks of 1-3 % of the frame; a low event threshold
    makes them events); the goat clip's video is deleted afterwards."""
    tmp = tmp_path_factory.mktemp("view")
    swan, _ = davis_video(data, tmp, "blackswan")
    goat, _ = davis_video(data, tmp, "goat")
    out = tmp / "out"
    config = PipelineConfig(threshold=DEV_THRESHOLD, window=4, run_id=RUN, event_threshold=0.001)
    report = run_pipeline([swan, goat], out, dev_engine, config)
    assert report.exit_code == 0 and report.frames == 16 and read_events(out).num_rows >= 2
    goat.unlink()
    return Folder(out, swan, goat, json.loads((out / "runs" / f"{RUN}.json").read_text()))


@pytest.fixture(scope="module")
def server(folder: Folder):
    with ServerThread(create_app(folder.out), bind("127.0.0.1", 0)) as running:
        yield running


def browse(chromium: str, url: str, *, shot: Path | None = None, budget_ms: int = 3000) -> str:
    """Chromium's DOM of ``url`` after ``budget_ms`` of the page's time (its scripts run); with ``shot``, its
    screenshot too (the same layout)."""
    what = ["--dump-dom", *([f"--screenshot={shot}"] if shot else [])]
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--virtual-time-budget={budget_ms}",
                           *what, url], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def get(url: str) -> tuple[int, Message, bytes]:
    """(status, headers (case-insensitive), body) of a GET."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers, response.read()


def rows_of(out: Path, video: Path) -> list[dict]:
    table = read_results(out)
    return sorted(table.filter(pc.equal(table["source"], str(video))).to_pylist(), key=lambda r: r["frame_index"])


def redness(image: np.ndarray) -> np.ndarray:
    return image[..., 0].astype(np.float32) - image[..., 1].astype(np.float32)


@pytest.fixture(scope="module")
def swan_page(chromium: str, folder: Folder, server: ServerThread, tmp_path_factory) -> Page:
    """The swan's page at its frame with the largest mask: its DOM and a screenshot at the same size."""
    frame = max(rows_of(folder.out, folder.swan), key=lambda r: r["area_fraction"])["frame_index"]
    url = f"{server.url}#source={source_key(str(folder.swan))}&frame={frame}"
    path = tmp_path_factory.mktemp("shot") / "swan.png"
    dom = browse(chromium, url, shot=path)
    return Page(dom, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), frame)


def test_the_page_lists_the_sources_frames_events_and_consensus(folder: Folder, swan_page: Page) -> None:
    dom = swan_page.dom
    items = re.findall(r'<li class="source[^"]*" data-key="([^"]+)">(.*?)</li>', dom)
    assert [key for key, _ in items] == [source_key(str(folder.swan)), source_key(str(folder.goat))]  # by name
    for video in (folder.swan, folder.goat):
        item = dict(items)[source_key(str(video))]
        assert str(video) in item and f"group {video.stem} · 8 frames" in item and ">done<" in item
    assert f'<h2 id="source-name">{folder.swan}</h2>' in dom
    assert f"frame {swan_page.frame_index + 1} of 8 · index {swan_page.frame_index}" in dom
    events = read_events(folder.out).filter(pc.equal(read_events(folder.out)["source"], str(folder.swan)))
    assert events.num_rows >= 1
    assert len(re.findall(r'<tr class="event">', dom)) == events.num_rows
    assert len(re.findall(r'<rect [^>]*class="event"', dom)) == events.num_rows
    first = events.sort_by("start_time").to_pylist()[0]
    assert f"<td>{first['n_frames']}</td><td>{first['start_frame']}</td><td>{first['end_frame']}</td>" in dom
    points = re.search(r'<polyline points="([^"]+)"[^>]*class="area"', dom).group(1).split()
    assert len(points) == 8  # one per frame
    labels = folder.report["consensus"]["blackswan"]
    assert len(labels) == 3 and all(f'<li class="label">{name} {p:.2f}</li>' in dom for name, p in labels)
    assert "consensus of group 'blackswan'" in dom and "up to date" in dom and folder.report["model"] in dom


def test_the_screenshot_shows_the_mask_over_the_frame_and_the_timeline(folder: Folder, swan_page: Page) -> None:
    left, top, width, height = (int(v) for v in re.search(r'data-rect="([\d,]+)"', swan_page.dom).group(1).split(","))
    assert (width, height) == (640, 384)  # the 160x96 frame, shown 640 px wide
    shown = swan_page.shot[top:top + height, left:left + width]
    with open_source(folder.swan) as source:
        original = source.read_frames([swan_page.frame_index])[0].image
    original = cv2.resize(original, (width, height), interpolation=cv2.INTER_LINEAR)
    row = next(r for r in rows_of(folder.out, folder.swan) if r["frame_index"] == swan_page.frame_index)
    mask = cv2.resize(decode_mask(row).astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    inside = cv2.erode(mask, np.ones((9, 9), np.uint8)).astype(bool)
    assert inside.sum() > 200
    # the mask tinted red over the frame: inside it the page is far redder than the frame itself
    assert redness(shown)[inside].mean() - redness(original)[inside].mean() > 40
    # away from the mask, its outline and its box, the page shows the frame as it is
    x, y, w, h = (v * 4 for v in row["bbox"])
    drawn = cv2.dilate(mask, np.ones((25, 25), np.uint8))
    cv2.rectangle(drawn, (x, y), (x + w, y + h), 1, 25)
    away = ~drawn.astype(bool)
    assert away.sum() > 0.3 * away.size
    assert np.abs(shown.astype(np.float32) - original.astype(np.float32))[away].mean() < 12
    # the timeline: the area line and the events are drawn in their colours
    def near(color: tuple[int, int, int], tolerance: int) -> int:
        return int((np.abs(swan_page.shot.astype(np.int32) - color).max(axis=2) <= tolerance).sum())
    assert near(AREA_BLUE, 40) > 800 and near(EVENT_FILL, 12) > 2000


def test_a_frame_is_its_video_frame_with_the_mask_drawn(folder: Folder, server: ServerThread) -> None:
    row = max(rows_of(folder.out, folder.swan), key=lambda r: r["area_fraction"])
    key = source_key(str(folder.swan))
    status, headers, body = get(f"{server.url}api/frame/{key}/{RUN}/{row['frame_index']}.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and "X-Streamcosal-Note" not in headers
    served = cv2.cvtColor(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    with open_source(folder.swan) as source:
        original = source.read_frames([row["frame_index"]])[0].image
    mask = decode_mask(row)
    assert served.shape == original.shape == (*mask.shape, 3)
    assert redness(served)[mask].mean() - redness(original)[mask].mean() > 40
    x, y, w, h = row["bbox"]
    drawn = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8))
    cv2.rectangle(drawn, (x, y), (x + w - 1, y + h - 1), 1, 7)
    away = ~drawn.astype(bool)
    assert np.abs(served.astype(np.float32) - original.astype(np.float32))[away].mean() < 6


def test_a_deleted_source_shows_its_mask_alone_on_black(chromium: str, folder: Folder, server: ServerThread) -> None:
    row = max(rows_of(folder.out, folder.goat), key=lambda r: r["area_fraction"])
    key = source_key(str(folder.goat))
    status, headers, body = get(f"{server.url}api/frame/{key}/{RUN}/{row['frame_index']}.jpg")
    assert status == 200 and "no longer exists" in headers["X-Streamcosal-Note"]
    served = cv2.cvtColor(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    mask = decode_mask(row)
    x, y, w, h = row["bbox"]
    drawn = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8))
    cv2.rectangle(drawn, (x, y), (x + w - 1, y + h - 1), 1, 7)
    assert served[~drawn.astype(bool)].mean() < 4  # black
    assert redness(served)[mask].mean() > 60  # the tint alone
    dom = browse(chromium, f"{server.url}#source={key}&frame={row['frame_index']}")
    note = re.search(r'<p id="frame-note">(.*?)</p>', dom).group(1)
    assert note.startswith("Not the frame:") and str(folder.goat) in note and "no longer exists" in note
    assert "shown alone, on black" in note


def test_nothing_but_the_page_and_its_endpoints_is_served(folder: Folder, server: ServerThread) -> None:
    key = source_key(str(folder.swan))
    host, port = server.url.split("//")[1].strip("/").split(":")
    refused = ["/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/api/source/..%2F..%2F..%2Fetc%2Fpasswd",
               "/api/source/../../../etc/passwd", "/api/frame/..%2F..%2Fetc%2Fpasswd/view-run/0.jpg",
               f"/api/frame/{key}/..%2F..%2Fruns/0.jpg", f"/api/frame/{key}/{RUN}/99.jpg",
               f"/api/frame/{key}/{RUN}/{10**23}.jpg", f"/api/frame/{key}/older-run/0.jpg", "/api/source/not-a-source", f"/runs/{RUN}.json",
               f"/frames/source_key={key}/{RUN}.000000.parquet", "/consensus.npz", "/page.html",
               "/static/../pyproject.toml", f"/{folder.swan}", "/api/state/../../../etc/passwd"]
    for path in refused:
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 404, (path, response.status)
        assert b"root:" not in body and b"PAR1" not in body and b"hidden" not in body
        connection.close()
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/api/state", body=b"{}")
    assert connection.getresponse().status == 405
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", "/api/state", headers={"Host": "attacker.example"})  # a DNS name pointed here
    assert connection.getresponse().status == 400
    _, headers, body = get(f"{server.url}api/state")
    assert "default-src 'none'" in headers["Content-Security-Policy"] and b"prob_png" not in body
    # no page asset comes from elsewhere: every src/href of the page is its own
    _, _, page = get(server.url)
    assert not re.findall(rb'(?:src|href)="(?:https?:)?//', page)


def test_run_reports_are_shown_without_passwords() -> None:
    report = {"run_id": "r", "model": "m", "notes": ["rtsp://cam:hunter2@10.0.0.5/live dropped"],
              "sources": [{"source": "rtsp://cam:hunter2@10.0.0.5/live", "group": "g", "status": "done",
                           "warnings": ["http://h/v?user=u&pwd=hunter2 slow"], "error": None}],
              "consensus": {"g": [["tabby", 0.9], ["tiger cat", 0.05], ["Egyptian cat", 0.01]]}}
    shown = json.dumps(report_summary(report))
    assert "hunter2" not in shown and "rtsp://cam:***@10.0.0.5/live" in shown


def test_a_source_kept_from_two_runs_is_shown_with_the_newer(folder: Folder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(folder.out, out)
    for path in list((out / "frames").glob("source_key=*/*.parquet")):
        table = pq.read_table(path)  # keeps the schema metadata
        older = table.set_column(0, table.schema.field(0), pa.array(["older-run"] * table.num_rows))
        pq.write_table(older, path.with_name("older-run.0.parquet"))
    state = ResultsView(out).state()
    assert [(s["run_id"], s["other_runs"], s["frames"]) for s in state["sources"]] == [(RUN, ["older-run"], 8)] * 2


def test_a_file_being_processed_is_listed_running_with_its_hidden_rows_counted(folder: Folder, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(folder.out, out)
    rows = rows_of(out, folder.swan)
    later = [{**r, "source": "/elsewhere/new.mp4"} for r in rows[:2]]
    with FileLock(out / "runs" / "writing-run.lock"):  # as the run holds it
        writer = ResultWriter(out, "writing-run", flush_every=3)
        for source in (str(folder.swan), "/elsewhere/new.mp4"):
            writer.stage(source)  # as the pipeline writes a file's rows: hidden until it is done
        for row in rows[:5] + later:
            writer.write(FrameResult(mask=decode_mask(row), **{k: row[k] for k in RESULT_FIELDS}))
        state = ResultsView(out).state()
        swan, new = (next(s for s in state["sources"] if s["source"] == name)
                     for name in (str(folder.swan), "/elsewhere/new.mp4"))
        assert state["running"] == ["writing-run"] and swan["status"] == new["status"] == "running"
        assert (swan["run_id"], swan["frames"], swan["pending"]) == (RUN, 8, {"run_id": "writing-run", "frames": 5})
        assert (new["frames"], new["pending"]) == (0, {"run_id": "writing-run", "frames": 1})
        assert ResultsView(out).row(new["key"], "writing-run", rows[0]["frame_index"]) is None  # hidden: not shown
        writer.commit(str(folder.swan))  # the file is done: its rows appear at once
        swan = next(s for s in ResultsView(out).state()["sources"] if s["source"] == str(folder.swan))
        assert (swan["run_id"], swan["frames"], swan["pending"], swan["other_runs"]) == ("writing-run", 5, None, [RUN])


def test_a_live_run_is_shown_running_and_grows(chromium: str, data: Path, dev_engine, tmp_path: Path) -> None:  # noqa: F811
    clip, _ = davis_video(data, tmp_path, "blackswan", n=48, fps=8)  # 6 s played as a camera
    out = tmp_path / "out"
    config = PipelineConfig(live=True, window=4, threshold=DEV_THRESHOLD, run_id="live-run", flush_every=2,
                            flush_every_s=0.1, event_threshold=0.001)
    done: dict = {}
    run = threading.Thread(target=lambda: done.update(report=run_pipeline([clip], out, dev_engine, config)))
    run.start()
    try:
        lock = out / "runs" / "live-run.lock"
        deadline = time.monotonic() + 30
        while not (lock.exists() and (out / "frames").is_dir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        app = create_app(out)
        app.state.view.check()  # no rows yet, perhaps, but a run is running: served
        counts, dom, mine = [], [], 0
        with ServerThread(app, bind("127.0.0.1", 0)) as server:
            page = threading.Thread(target=lambda: dom.append(browse(chromium, server.url)))
            while run.is_alive():
                state = json.loads(get(f"{server.url}api/state")[2])
                mine += 1
                source = state["sources"][0] if state["sources"] else None
                if source is not None and state["running"]:
                    assert state["running"] == ["live-run"] and source["status"] == "running"
                    counts.append(source["frames"])
                    if page.ident is None and source["frames"] > 0:
                        page.start()  # the page, looked at while the run writes
                time.sleep(0.2)
            run.join()
            if page.ident is not None:
                page.join()
            page_polls = app.state.polls - mine
            final = json.loads(get(f"{server.url}api/state")[2])
    finally:
        run.join()
    report = done["report"]
    assert dom and "running: live-run" in dom[0] and ">running<" in dom[0] and str(clip) in dom[0]
    assert len(set(counts)) >= 3 and counts == sorted(counts)  # the rows appear as they are written
    assert page_polls >= 2  # the page asked again by itself
    source = final["sources"][0]
    assert final["running"] == [] and source["status"] == "done" and source["frames"] == report.frames > counts[0]
    assert final["groups"]["blackswan"]["consensus"] == [[n, round(p, 4)] for n, p in report.consensus["blackswan"]]


runner = CliRunner()


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(cli, ["view", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    return result.output


def test_bad_folders_are_refused_with_one_line_each(folder: Folder, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert f"no results folder at {missing}" in one_line_error([str(missing)])
    (tmp_path / "file").write_text("x")
    assert "is a file, not a results folder" in one_line_error([str(tmp_path / "file")])
    (tmp_path / "empty").mkdir()
    message = one_line_error([str(tmp_path / "empty")])
    assert "is empty: no results yet" in message and f"--out {tmp_path / 'empty'}" in message
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    assert "is not a streamcosal results folder (no runs/ or frames/" in one_line_error([str(tmp_path / "photos")])
    (tmp_path / "nothing" / "runs").mkdir(parents=True)
    assert "holds no results yet (no frame rows, and no run is running there)" in one_line_error(
        [str(tmp_path / "nothing")])
    odd = tmp_path / "odd"
    shutil.copytree(folder.out, odd)
    pq.write_table(pa.table({"x": [1]}), odd / "frames" / f"source_key={source_key(str(folder.swan))}" / "x.parquet")
    assert "holds a results file streamcosal cannot read" in one_line_error([str(odd)])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"cannot listen on 127.0.0.1 port {port}" in one_line_error([str(folder.out), "--port", str(port)])
    assert "--port 70000 is not a port" in one_line_error([str(folder.out), "--port", "70000"])
    with pytest.raises(ViewError, match="no results yet"):
        ResultsView(tmp_path / "nothing").check()


def test_a_relative_source_is_read_from_the_folder_its_run_started_in(data: Path, dev_engine, tmp_path: Path,  # noqa: F811
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`streamcosal video clip.mp4` run in one folder, viewed from another holding its own clip.mp4 of the
    same size: the mask is drawn over the run's clip (it was drawn over the other one, without a note)."""
    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    started.mkdir(), elsewhere.mkdir()
    clip, _ = davis_video(data, started, "blackswan")
    other, _ = davis_video(data, elsewhere, "goat")
    other.rename(elsewhere / clip.name)  # the same name and size, another video
    monkeypatch.chdir(started)
    out = tmp_path / "out"
    config = PipelineConfig(threshold=DEV_THRESHOLD, window=4, run_id=RUN)
    assert run_pipeline([Path(clip.name)], out, dev_engine, config).exit_code == 0
    monkeypatch.chdir(elsewhere)
    view, row = ResultsView(out), rows_of(out, Path(clip.name))[3]
    assert view.started_in(RUN) == started
    rendered = FrameRenderer().render(row, view.started_in(RUN))
    served = cv2.cvtColor(cv2.imdecode(np.frombuffer(rendered.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    away = ~cv2.dilate(decode_mask(row).astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    differences = {}
    for name, video in (("started", clip), ("elsewhere", elsewhere / clip.name)):
        with open_source(video) as source:
            frame = source.read_frames([3])[0].image
        differences[name] = np.abs(served.astype(np.float32) - frame)[away].mean()
    assert rendered.note is None and differences["started"] < 20 < differences["elsewhere"], differences  # the box too
    # another video of the same size put in its place after the run: drawn, with a note (it was drawn without one)
    (elsewhere / clip.name).replace(started / clip.name)
    rendered = FrameRenderer().render(row, view.started_in(RUN), view.started_at(RUN))
    assert rendered.jpeg and rendered.note is not None, rendered.note
    assert rendered.note.startswith(f"{clip.name} (in {started}, the folder its run started in) was written or put in place at "), \
        rendered.note
    assert rendered.note.endswith("after its run started " f"({view.started_at(RUN).isoformat(timespec='seconds')}): "
                                  "the picture may not be the one the mask was made on"), rendered.note
    (started / clip.name).unlink()
    note = FrameRenderer().render(row, view.started_in(RUN)).note
    assert note == f"the source {clip.name} (in {started}, the folder its run started in) no longer exists: the " \
                   "mask is shown alone, on black"


def test_only_an_address_other_machines_reach_is_warned_about() -> None:
    """`--host 127.1` or `localhost` listen on loopback (warned as open to other machines before); 0.0.0.0
    and :: listen on every interface (bound, never listening, here)."""
    for host in ("127.0.0.1", "127.1", "127.0.0.2", "localhost", "::1"):
        with bind(host, 0) as sock:
            assert loopback_only(sock), host
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family) as sock:
            sock.bind((address, 0))
            assert not loopback_only(sock), address


def test_an_empty_folder_with_a_run_running_is_served_by_the_command(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    with FileLock(out / "runs" / "starting-run.lock"):
        viewer = subprocess.Popen([sys.executable, "-c", "from streamcosal.cli import app; app()", "view", str(out),
                                   "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = viewer.stdout.readline()
            url = re.search(r"at (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)", line).group(1)
            state = json.loads(get(url + "api/state")[2])
            assert state["running"] == ["starting-run"] and state["sources"] == [] and state["error"] is None
        finally:
            viewer.terminate()
            viewer.wait(30)
