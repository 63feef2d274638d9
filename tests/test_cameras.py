"""A camera file: its mistakes are one line naming the camera, ``${NAME}`` comes from the environment, a
password is stored nowhere, and each camera runs in its group with its own drop policy and latency target.

The runs are real and short: recorded clips named as cameras (read live, like a camera replaying them),
a stream over HTTP with a password in its URL (tests/stream_server.py), and in the slow test a real RTSP
camera that wants a login (tests/rtsp_camera.py). The engine is an untrained Lite0 at 64 px.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import pytest
from conftest import untrained_checkpoint
from typer.testing import CliRunner
from video_fixtures import encode_video

from streamcosal.cli import app
from streamcosal.io.stream import ReconnectPolicy
from streamcosal.run import jobs
from streamcosal.run.cameras import CameraFileError, load_cameras
from streamcosal.run.groups import default_groups
from streamcosal.run.records import PipelineConfig, SourceSettings
from streamcosal.storage import read_events, read_results

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "s3cret-Pw"
QUICK = ReconnectPolicy(max_attempts=1, backoff_s=0.05, max_backoff_s=0.1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The bundled example's frames at 160x96, 25 frames/s: two recordings (2.4 s) and an MPEG-TS of them, and the
    untrained checkpoint."""
    folder = tmp_path_factory.mktemp("clips")
    with av.open(str(REPO / "examples" / "cat.mp4")) as container:
        frames = [cv2.resize(f.to_ndarray(format="rgb24"), (160, 96)) for f in container.decode(video=0)]
    encode_video(frames, folder / "porch.mp4", fps=25)
    encode_video(frames[::-1], folder / "yard.mp4", fps=25)
    encode_video(frames, folder / "stream.ts", fps=25, container_format="mpegts")
    return {"porch": folder / "porch.mp4", "yard": folder / "yard.mp4", "ts": folder / "stream.ts",
            "weights": untrained_checkpoint(folder, 64)}


def camera_file(folder: Path, text: str, name: str = "cameras.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(CameraFileError) as caught:
        load_cameras(path, env=env)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


# ----------------------------------------------------------------------------- mistakes, one line each


@pytest.mark.parametrize("text, line, expected", [
    ("cameras:\n  porch:\n    url: porch.mp4\n    drop_polcy: all\n", 4,
     "camera 'porch': unknown key 'drop_polcy' (did you mean 'drop_policy'? a camera takes url, "),
    ("cameras:\n  porch:\n    url: porch.mp4\n  yard:\n    url: yard.mp4\n  porch:\n    url: yard.mp4\n", 6,
     "camera 'porch' is defined twice (also at line 2): give each camera its own name"),
    ("cameras:\n  porch:\n    url: rtps://viewer:hunter2@cam/stream\n", 3,
     "camera 'porch': url: rtps://viewer:***@cam/stream: unsupported scheme 'rtps': a camera is rtsp://"),
    ("cameras:\n  porch:\n    url: rtsp:///stream1\n", 3, "camera 'porch': url: rtsp:///stream1: no host"),
    ("cameras:\n  porch:\n    url: gone.mp4\n", 3, "camera 'porch': url: gone.mp4: no such file "),
    ("cameras:\n  porch:\n    url: porch.mp4\n    drop_policy: newest\n", 4,
     "camera 'porch': drop_policy: Input should be 'latest', 'stride' or 'all' (got 'newest')"),
    ("cameras:\n  porch:\n    url: porch.mp4\n    max_latency: 0\n", 4, "camera 'porch': max_latency: "),
    ("cameras:\n  porch:\n    url: porch.mp4\n    fps: 5\n    stride: 2\n", 2,
     "camera 'porch': give either fps or stride, not both"),
    ("cameras:\n  porch:\n    group: door\n", 2, "camera 'porch': url is missing"),
    ("defaults:\n  windw: 4\ncameras:\n  porch: {url: porch.mp4}\n", 2,
     "defaults: unknown key 'windw' (did you mean 'window'?"),
    ("metrics: {port: 70000}\ncameras:\n  porch: {url: porch.mp4}\n", 1, "metrics.port: Input should be less than"),
    ("cameras:\n  porch: {url: porch.mp4}\n  porch: {url: yard.mp4}\n", 3, "camera 'porch' is defined twice"),
    ("cameras:\n  porch: {url: porch.mp4, enabled: false}\n", 1, "every camera is disabled"),
    ("cameras:\n  porch:\n    url: porch.mp4\n  yard:\n    url: ./porch.mp4\n", 5,
     "camera 'yard': the same source as camera 'porch'"),
    ("cameras:\n  porch: {url: porch.mp4\n", 3, "not valid YAML"),
    ("cameras:\n  - url: porch.mp4\n    group: door\n", 1,
     "cameras: is a list; name each camera instead, its settings under its name (porch: {url: rtsp://"),
    ("cameras:\n  yes: {url: porch.mp4}\n", 1, "cameras: a camera named yes, no, on or off is read as true: quote"),
], ids=["typo", "duplicate", "scheme", "no-host", "no-file", "policy", "latency", "fps-and-stride", "no-url",
        "defaults-typo", "metrics-port", "duplicate-flow", "all-disabled", "same-source", "yaml", "a-list", "yes"])
def test_a_mistake_is_one_line_naming_the_file_line_and_camera(tmp_path: Path, text: str, line: int,
                                                                 expected: str) -> None:
    (tmp_path / "porch.mp4").write_bytes(b"")
    (tmp_path / "yard.mp4").write_bytes(b"")
    path = camera_file(tmp_path, text)
    found = problems(path)
    assert len(found) == 1 and "\n" not in found[0], found
    assert found[0].startswith(f"{path}:{line}: ") and expected in found[0], found[0]
    assert "hunter2" not in found[0]


@pytest.mark.parametrize("text, expected", [
    (None, "no such camera file; check the path"),
    ("", "empty: a camera file needs a cameras: mapping"),
    ("# only a comment\n", "empty: a camera file needs a cameras: mapping"),
    ("cameras:\n", "cameras: no camera: give at least one"),
    ("- rtsp://cam/stream\n", "should be a mapping with cameras:"),
])
def test_a_missing_or_empty_file_is_one_line(tmp_path: Path, text: str | None, expected: str) -> None:
    path = tmp_path / "cameras.yaml"
    if text is not None:
        path.write_text(text)
    found = problems(path)
    assert len(found) == 1 and found[0].startswith(str(path)) and expected in found[0], found


def test_every_mistake_of_a_file_is_listed_one_per_line(tmp_path: Path) -> None:
    path = camera_file(tmp_path, "cameras:\n  a:\n    url: a.mp4\n  b:\n    url: rtsp://cam\n    latency: 1\n")
    found = problems(path)
    assert [p.split(": ", 1)[0] for p in found] == [f"{path}:3", f"{path}:6"]
    assert "camera 'a'" in found[0] and "camera 'b': unknown key 'latency' (did you mean 'max_latency'?" in found[1]


# ----------------------------------------------------------------------------- ${NAME}, passwords


def test_a_variable_in_a_url_comes_from_the_environment_and_is_shown_as_stars(tmp_path: Path) -> None:
    path = camera_file(tmp_path, "cameras:\n  door:\n    url: rtsp://viewer:${DOOR_PW}@cam.local:554/s1\n"
                                 "  yard:\n    url: rtsp://${YARD_HOST}/live?user=v&password=${YARD_PW}\n")
    cameras = load_cameras(path, env={"DOOR_PW": PASSWORD, "YARD_HOST": "10.0.0.9", "YARD_PW": PASSWORD})
    assert cameras.sources() == [f"rtsp://viewer:{PASSWORD}@cam.local:554/s1",
                                 f"rtsp://10.0.0.9/live?user=v&password={PASSWORD}"]
    assert cameras.names() == {"rtsp://viewer:***@cam.local:554/s1": "door",
                               "rtsp://10.0.0.9/live?user=v&password=***": "yard"}
    config = cameras.pipeline_config()
    assert PASSWORD not in repr(cameras) + repr(config) + config.model_dump_json()
    found = problems(path, env={"YARD_HOST": "10.0.0.9"})
    assert found == [(f"{path}:3: camera 'door': url: ${{DOOR_PW}} not set in the environment: export DOOR_PW=... "
                     "where the run starts (or write the value in the file)"),
                     (f"{path}:5: camera 'yard': url: ${{YARD_PW}} not set in the environment: export YARD_PW=... "
                     "where the run starts (or write the value in the file)")]


def test_variables_fill_the_results_folder_and_the_delivery_urls_too(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """${NAME} in out, defaults.webhook and defaults.mqtt was used as written (results under a folder named
    '${OUT}', a webhook login '${HOOK_PW}', a topic starting with '$'), and ~ in out made a folder '~'."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = ("out: ${SITE_OUT}/results\ndefaults:\n  webhook: ['http://bob:${HOOK_PW}@127.0.0.1:8080/hook']\n"
            "  mqtt: mqtt://bob:${HOOK_PW}@127.0.0.1/${SITE}\ncameras:\n  door: {url: rtsp://cam.local/s1}\n")
    path = camera_file(tmp_path, text)
    env = {"SITE_OUT": str(tmp_path / "site"), "HOOK_PW": PASSWORD, "SITE": "north"}
    cameras = load_cameras(path, env=env)
    assert cameras.out_folder(None) == tmp_path / "site" / "results"
    params = cameras.params()
    assert params.webhook == [f"http://bob:{PASSWORD}@127.0.0.1:8080/hook"]
    assert params.mqtt == [f"mqtt://bob:{PASSWORD}@127.0.0.1/north"]
    assert problems(path, env={"SITE_OUT": "x", "HOOK_PW": PASSWORD}) == [(
        f"{path}:4: defaults.mqtt: ${{SITE}} not set in the environment: export SITE=... where the run starts (or "
        "write the value in the file)")]
    home = camera_file(tmp_path, "out: ~/results\ncameras:\n  door: {url: rtsp://cam.local/s1}\n")
    assert load_cameras(home, env={}).out_folder(None) == tmp_path / "home" / "results"


def test_a_password_in_a_wrong_value_is_shown_as_stars(tmp_path: Path) -> None:
    """A webhook given as a string, not a list, said '(got 'http://bob:PASSWORD@...')'."""
    path = camera_file(tmp_path, f"defaults:\n  webhook: http://bob:{PASSWORD}@127.0.0.1/x\n"
                                 "cameras:\n  door: {url: rtsp://cam.local/s1}\n")
    found = problems(path)
    assert len(found) == 1 and "bob:***@127.0.0.1" in found[0] and PASSWORD not in found[0], found


@pytest.mark.parametrize("text", [
    # a billion laughs: ten levels of aliases, each repeating the one before nine times
    "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))
    + "cameras:\n  door: {url: rtsp://cam.local/s1, group: *j}\n",
    "cameras: " + "[" * 3000 + "]" * 3000 + "\n",  # deeper than Python's recursion
])
def test_a_file_of_nested_aliases_or_too_deep_is_refused_at_once(tmp_path: Path, text: str) -> None:
    """The aliases were walked expanded (9^10 keys: no answer in minutes); deep nesting raised RecursionError."""
    path = camera_file(tmp_path, text)
    start = time.monotonic()
    found = problems(path)
    assert time.monotonic() - start < 10 and all(line.startswith(f"{path}") for line in found), found
    assert any("group" in line or "nested too deeply" in line for line in found), found


def test_a_relative_file_camera_is_named_by_its_plain_path(tmp_path: Path) -> None:
    """url: ../porch.mp4 in a camera file of sites/: the camera's source is TMP/porch.mp4 (was TMP/sites/../porch.mp4)."""
    (tmp_path / "porch.mp4").write_bytes(b"")
    (tmp_path / "sites").mkdir()
    path = camera_file(tmp_path / "sites", "cameras:\n  porch: {url: ../porch.mp4}\n")
    assert load_cameras(path, env={}).sources() == [str(tmp_path / "porch.mp4")]


def test_the_example_file_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONT_DOOR_PASSWORD", PASSWORD)
    monkeypatch.setenv("HALLWAY_PASSWORD", PASSWORD)
    cameras = load_cameras(REPO / "examples" / "cameras.yaml")
    settings = cameras.per_source()
    groups = {name: s.group for name, s in settings.items()}
    assert len(set(groups.values())) < len(groups)  # two cameras share a group
    assert len({s.drop_policy for s in settings.values()}) > 1 and not any(PASSWORD in name for name in settings)
    assert cameras.params().live and cameras.params().metrics_port == 9108


# ----------------------------------------------------------------------------- per-source settings


def test_a_sources_own_settings_replace_the_runs() -> None:
    config = PipelineConfig(stride=3, max_latency=1.0, per_source={
        "a": SourceSettings(fps=5.0, drop_policy="all"), "b": SourceSettings(stride=2, max_latency=0.25)})
    a, b, other = config.for_source("a"), config.for_source("b"), config.for_source("c")
    assert (a.fps, a.stride, a.drop_policy, a.max_latency) == (5.0, 1, "all", 1.0)
    assert (b.fps, b.stride, b.drop_policy, b.max_latency) == (None, 2, "latest", 0.25)
    assert other is config
    fps_run = PipelineConfig(fps=2.0, per_source={"b": SourceSettings(stride=2)}).for_source("b")
    assert (fps_run.fps, fps_run.stride) == (None, 2)


def test_sources_with_a_group_of_their_own_settings_are_grouped_by_it() -> None:
    own = {"rtsp://u:***@a/1": SourceSettings(group="lobby"), "rtsp://b/1": SourceSettings(group="lobby"),
           "/v/lobby.mp4": SourceSettings(drop_policy="all")}
    groups = default_groups(["rtsp://u:pw@a/1", "/v/lobby.mp4", "rtsp://b/1", "/v/c.mp4"], None, own)
    assert groups == [("lobby", ["rtsp://u:pw@a/1", "rtsp://b/1"]), ("/v/lobby.mp4", ["/v/lobby.mp4"]),
                      ("c", ["/v/c.mp4"])]  # a default name that is a named group's is the path


def test_the_files_defaults_and_model_layer_over_the_flows(tmp_path: Path, clips: dict[str, Path]) -> None:
    from streamcosal.params import EngineSpec, RunParams

    path = camera_file(tmp_path, f"model: {{weights: dev.pt}}\ndefaults: {{fps: 4, window: 2}}\n"
                                 f"cameras:\n  porch: {{url: '{clips['porch']}'}}\n")
    cameras = load_cameras(path)
    params = cameras.params(RunParams(stride=3, threshold=0.4, window=6))
    assert (params.fps, params.stride, params.window, params.threshold, params.live) == (4.0, 1, 2, 0.4, True)
    engine = cameras.engine(EngineSpec(device="cpu"))
    assert engine.weights == tmp_path / "dev.pt" and engine.device == "cpu"


# ----------------------------------------------------------------------------- the command


def test_check_lists_the_cameras_without_passwords_or_torch(tmp_path: Path, clips: dict[str, Path]) -> None:
    path = camera_file(tmp_path, f"defaults: {{max_latency: 2}}\ncameras:\n"
                                 f"  porch: {{url: 'file://{clips['porch']}', group: garden, fps: 5}}\n"
                                 f"  door: {{url: 'rtsp://viewer:${{DOOR_PW}}@cam.local/s1', drop_policy: all}}\n"
                                 f"  old: {{url: 'rtsp://viewer:{PASSWORD}@gone/s1', enabled: false}}\n")
    code = ("import sys, streamcosal.cli\ntry:\n    streamcosal.cli.app(['cameras', sys.argv[1], '--check'])\n"
            "except SystemExit as e:\n    assert 'torch' not in sys.modules, 'torch was imported'\n    raise")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False,
                          env={"DOOR_PW": PASSWORD, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "camera\tgroup\tdrop policy\tmax latency\tsampling\tsource",
        f"porch\tgarden\tlatest\t2 s\t5 frames/s\t{clips['porch']}",
        "door\tdoor\tall\tnone (all)\tevery frame\trtsp://viewer:***@cam.local/s1",
        "old\t-\t-\t-\t-\trtsp://viewer:***@gone/s1 (disabled)"]
    assert PASSWORD not in done.stdout + done.stderr


def test_a_wrong_file_exits_2_before_the_model_loads_and_writes_nothing(tmp_path: Path) -> None:
    path = camera_file(tmp_path, "cameras:\n  porch:\n    url: porch.mp4\n  door:\n    url: ftp://cam/x\n")
    result = CliRunner().invoke(app, ["cameras", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert lines == [(f"error: {path}:3: camera 'porch': url: porch.mp4: no such file {tmp_path / 'porch.mp4'} "
                     "(a relative path is relative to the camera file's folder)"),
                     (f"error: {path}:5: camera 'door': url: ftp://cam/x: unsupported scheme 'ftp': a camera is "
                     "rtsp://, rtsps://, rtmp://, http://, https://, udp://, tcp://, srt://, rtp://, /dev/videoN, or a "
                     "video file (a path or file://)")]
    assert not (tmp_path / "out").exists()


def test_the_flow_takes_a_camera_file_or_sources() -> None:
    import inspect

    from streamcosal.flows.video import cosal_video

    parameters = inspect.signature(cosal_video.fn).parameters
    assert parameters["cameras"].default is None and parameters["source"].default is None
    with pytest.raises(ValueError, match="give one of source"):
        cosal_video.fn(out="results")
    with pytest.raises(ValueError, match="give one of source"):
        cosal_video.fn("a.mp4", "results", cameras="cameras.yaml")
    with pytest.raises(ValueError, match="a camera file gives each camera's group"):
        cosal_video.fn(cameras="cameras.yaml", group="lobby")


# ----------------------------------------------------------------------------- real runs


def test_two_cameras_in_their_groups_run_with_their_own_drop_policies(tmp_path: Path, clips: dict[str, Path]) -> None:
    """Two recordings as cameras (read live), in different groups, `latest` with a 0.5 s target and `all`; the
    run command prints each by its camera name and the report keeps each one's policy and target."""
    path = camera_file(tmp_path, f"out: results\nmodel: {{weights: '{clips['weights']}', device: cpu}}\n"
                                 "defaults: {window: 4, duration: 1.5, max_latency: 2}\ncameras:\n"
                                 f"  porch: {{url: '{clips['porch']}', group: garden, max_latency: 0.5}}\n"
                                 f"  yard: {{url: '{clips['yard']}', drop_policy: all}}\n")
    result = CliRunner().invoke(app, ["cameras", str(path), "--run-id", "cams"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "results"
    report = json.loads((out / "runs" / "cams.json").read_text())
    runs = {s["source"]: s for s in report["sources"]}
    porch, yard = runs[str(clips["porch"])], runs[str(clips["yard"])]
    assert (porch["group"], porch["mode"], porch["status"]) == ("garden", "streaming", "done")
    assert (porch["live"]["policy"], porch["live"]["max_latency_s"]) == ("latest", 0.5)
    assert (yard["group"], yard["live"]["policy"], yard["live"]["max_latency_s"]) == ("yard", "all", None)
    assert yard["live"]["dropped"] == 0 and yard["frames"] > 0 and porch["frames"] > 0
    rows = read_results(out).to_pylist()
    assert {(r["source"], r["group"]) for r in rows} == {(str(clips["porch"]), "garden"), (str(clips["yard"]), "yard")}
    assert f"done  porch  {clips['porch']}  group 'garden'" in result.output
    assert "0 dropped (all)" in result.output


def test_a_password_from_the_environment_is_stored_nowhere(tmp_path: Path, clips: dict[str, Path],
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A stream whose URL takes its password from ${CAM_PW} (served over HTTP), beside a recording: the run
    connects with the password, and the rows, events, report, file names, log, the flow's artifact and
    summary all say viewer:***."""
    from stream_server import serve_stream

    caplog.set_level(logging.INFO)
    monkeypatch.setenv("CAM_PW", PASSWORD)
    out = tmp_path / "out"
    with serve_stream(clips["ts"].read_bytes(), plays=1, chunk_delay_s=0.01) as server:
        url = server.url.replace("http://", "http://viewer:${CAM_PW}@")
        path = camera_file(tmp_path, f"model: {{weights: '{clips['weights']}', device: cpu}}\n"
                                     "defaults: {window: 4, duration: 1.5, event_min_duration: 0, event_threshold: 0}\n"
                                     f"cameras:\n  gate: {{url: '{url}', group: gate}}\n"
                                     f"  porch: {{url: '{clips['porch']}', drop_policy: stride}}\n")
        report = jobs.run_cameras(path, out, run_id="secret", raise_on_failure=False, reconnect=QUICK)
        shown = server.url.replace("http://", "http://viewer:***@")
    runs = {s.source: s for s in report.sources}
    assert runs[shown].frames > 0 and runs[shown].live.policy == "latest", runs
    assert runs[str(clips["porch"])].live.policy == "stride"
    rows = read_results(out).to_pylist()
    assert shown in {r["source"] for r in rows}
    texts = [repr(rows), repr(read_events(out).to_pylist()), caplog.text, jobs.report_markdown(report),
             repr(jobs.report_summary(report)), *(f.read_text() for f in out.rglob("*.json")),
             *(str(f) for f in out.rglob("*"))]
    assert not [t for t in texts if PASSWORD in t]
    assert shown in (out / "runs" / "secret.json").read_text()


@pytest.mark.slow
def test_a_real_rtsp_camera_with_a_login_beside_a_recording(tmp_path: Path, clips: dict[str, Path],
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """GStreamer's RTSP server wanting viewer:PASSWORD, the password in the environment, the camera in its
    group with `latest` and a 0.5 s target, a recording in another with `all`, for 4 s."""
    from rtsp_camera import make_clip, rtsp_camera

    caplog.set_level(logging.INFO)
    monkeypatch.setenv("CAM_PW", PASSWORD)
    clip = make_clip(tmp_path / "swan.mp4", "blackswan")
    out = tmp_path / "out"
    with rtsp_camera({"/cam": clip}, auth=f"viewer:{PASSWORD}") as camera:
        url = camera.url("/cam", "viewer:${CAM_PW}")
        path = camera_file(tmp_path, f"model: {{weights: '{clips['weights']}', device: cpu}}\n"
                                     "defaults: {window: 4, duration: 4}\nmetrics: {port: 0}\n"
                                     f"cameras:\n  door: {{url: '{url}', group: entrance, max_latency: 0.5}}\n"
                                     f"  porch: {{url: '{clips['porch']}', drop_policy: all}}\n")
        report = jobs.run_cameras(path, out, run_id="rtsp")
        shown = camera.url("/cam", "viewer:***")
    runs = {s.source: s for s in report.sources}
    door, porch = runs[shown], runs[str(clips["porch"])]
    assert door.status == "done" and door.frames >= 8 and door.group == "entrance"
    assert (door.live.policy, door.live.max_latency_s) == ("latest", 0.5)
    assert (porch.live.policy, porch.live.dropped, porch.group) == ("all", 0, "porch")
    texts = [repr(read_results(out).to_pylist()), caplog.text, jobs.report_markdown(report),
             *(f.read_text() for f in out.rglob("*.json")), *(str(f) for f in out.rglob("*"))]
    assert not [t for t in texts if PASSWORD in t]
