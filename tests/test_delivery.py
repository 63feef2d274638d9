"""Event delivery against real local servers: a webhook receiver (http.server on 127.0.0.1) and a real
MQTT broker (Debian's mosquitto, started here on a free port, one with a password file for the refused
login), on real videos through the real pipeline (tests/event_fixtures.py)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
from event_fixtures import (  # noqa: F401  (dev_checkpoint, engine, video: fixtures)
    FPS,
    SIZE,
    THRESHOLD,
    config,
    decoded_frame,
    dev_checkpoint,
    engine,
    events_video,
    looks_highlighted,
    video,
)
from PIL import Image
from pydantic import ValidationError
from typer.testing import CliRunner

from streamcosal.cli import app
from streamcosal.params import RunParams, explain
from streamcosal.run.delivery import Delivery, DeliveryPolicy
from streamcosal.run.delivery.mqtt import MqttTarget
from streamcosal.run.delivery.target import DeliveryError
from streamcosal.run.delivery.webhook import WebhookTarget
from streamcosal.run.observers import EventRecord
from streamcosal.run.pipeline import run_pipeline
from streamcosal.run.records import RunReport
from streamcosal.storage import Event, read_events, read_results
from streamcosal.storage.parquet_files import source_key

PASSWORD = "s3cret-pw"  # in URLs given to the run: it must appear in no report, log, payload or output
QUICK = DeliveryPolicy(timeout_s=0.5, attempts=2, backoff_s=0.1, drain_s=1.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """A webhook endpoint on 127.0.0.1: ``answer`` "ok" (200), "hang" (reads the request, never answers) or
    "redirect:URL" (302 to URL). Every request is kept, a GET's with an empty body."""

    def __init__(self, answer: str = "ok", port: int = 0) -> None:
        self.requests: list[tuple[dict, dict, float]] = []  # (headers, JSON body, time.monotonic() of arrival)
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if answer == "hang":
                    receiver.release.wait()
                    return
                receiver.requests.append((dict(self.headers), body, time.monotonic()))
                self.send_response(302 if answer.startswith("redirect:") else 200)
                if answer.startswith("redirect:"):
                    self.send_header("Location", answer.removeprefix("redirect:"))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                receiver.requests.append((dict(self.headers), {}, time.monotonic()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, login: str = "") -> str:
        return f"http://{login}127.0.0.1:{self.port}/hooks/cosal"

    @property
    def bodies(self) -> list[dict]:
        return [body for _, body, _ in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def receiver(answer: str = "ok", port: int = 0) -> Iterator[Receiver]:
    server = Receiver(answer, port)
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def mosquitto(folder: Path, user: str | None = None, password: str | None = None) -> Iterator[int]:
    """A mosquitto broker on 127.0.0.1 (a free port, yielded); with ``user``, only that login is let in."""
    broker = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)
    if broker is None:
        pytest.fail("mosquitto (the MQTT broker) is not installed: apt-get install -y mosquitto")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [f"listener {port} 127.0.0.1", "persistence false", "log_dest stderr", "user root"]
    if user is None:
        lines.append("allow_anonymous true")
    else:
        subprocess.run(["mosquitto_passwd", "-c", "-b", str(folder / "passwd"), user, password], check=True)
        lines += ["allow_anonymous false", f"password_file {folder / 'passwd'}"]
    (folder / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    log = (folder / "mosquitto.log").open("w")
    process = subprocess.Popen([broker, "-c", str(folder / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert process.poll() is None and time.monotonic() < deadline, (folder / "mosquitto.log").read_text()
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        log.close()


class Subscriber:
    """A paho client collecting what is published under ``topic`` (a filter)."""

    def __init__(self, port: int, topic: str) -> None:
        try:
            from paho.mqtt import client as mqtt
        except ImportError:
            pytest.fail("paho-mqtt is not installed: pip install 'streamcosal[mqtt]' (or paho-mqtt)")
        self.messages: list[tuple[str, dict]] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="streamcosal-test")
        self.client.on_connect = lambda c, u, f, reason, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, json.loads(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5), "could not subscribe to the test broker"

    def wait_for(self, n: int, seconds: float = 5.0) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + seconds
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # and nothing more arrives
        return self.messages

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_snapshot(body: dict, video: Path) -> None:
    """The payload's snapshot is a JPEG of the peak frame's size, the peak frame with the overlay drawn."""
    snapshot = body["snapshot"]
    assert snapshot["content_type"] == "image/jpeg" and (snapshot["width"], snapshot["height"]) == SIZE
    image = Image.open(io.BytesIO(base64.b64decode(snapshot["base64"])))
    assert image.format == "JPEG" and image.size == SIZE
    assert looks_highlighted(np.asarray(image.convert("RGB")), decoded_frame(video, body["peak_frame"]))


def check_secret_kept(report: RunReport, out: Path, *texts: str) -> None:
    saved = (out / "runs" / f"{report.run_id}.json").read_text()
    for text in (saved, *texts):
        assert PASSWORD not in text


def test_a_webhook_gets_each_event_once_with_its_snapshot_and_clip(engine, video, tmp_path, caplog):
    out = tmp_path / "out"
    with receiver() as hook, caplog.at_level(logging.DEBUG):
        report = run_pipeline([video], out, engine, config(webhook=[hook.url(f"alice:{PASSWORD}@")], event_clips=True))
    stored = read_events(out).to_pylist()
    assert report.exit_code == 0 and len(stored) == 2 == report.events
    ids = [f"{report.run_id}:{source_key(str(video))}:{e['start_frame']}" for e in stored]
    assert sorted(body["id"] for body in hook.bodies) == sorted(ids)  # each event, once
    for headers, body, _ in hook.requests:
        assert headers["Authorization"] == "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        assert headers["Content-Type"] == "application/json" and headers["X-Streamcosal-Event"] == body["id"]
        event = next(e for e in stored if e["start_frame"] == body["start_frame"])
        assert {k: body[k] for k in Event.__dataclass_fields__} == {k: event[k] for k in Event.__dataclass_fields__}
        assert (body["source"], body["group"], body["run_id"]) == (str(video), "goat", report.run_id)
        check_snapshot(body, video)
        assert body["clip"]["content_type"] == "video/mp4" and body["clip"]["frames"] == body["n_frames"]
        with av.open(io.BytesIO(base64.b64decode(body["clip"]["base64"]))) as clip:
            frames = [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]
        assert len(frames) == body["n_frames"] and frames[0].shape == (SIZE[1], SIZE[0], 3)
    [sent] = report.deliveries
    assert (sent.target, sent.delivered, sent.undelivered) == (hook.url("alice:***@"), 2, [])
    check_secret_kept(report, out, caplog.text)


def test_mqtt_gets_each_event_once_on_its_sources_topic(engine, video, tmp_path):
    """Each event once per broker URL (two prefixes here; a second --mqtt kept only the last)."""
    with mosquitto(tmp_path / "broker") as port:
        listener = Subscriber(port, "#")
        try:
            brokers = [f"mqtt://127.0.0.1:{port}/site1", f"mqtt://127.0.0.1:{port}/site2"]
            report = run_pipeline([video], tmp_path / "out", engine, config(mqtt=brokers))
            messages = listener.wait_for(4)
        finally:
            listener.close()
    assert report.exit_code == 0 and [(d.delivered, d.undelivered) for d in report.deliveries] == [(2, [])] * 2
    assert sorted(topic for topic, _ in messages) == [f"{site}/goat/{source_key(str(video))}/events"
                                                      for site in ("site1", "site1", "site2", "site2")]
    messages = [m for m in messages if m[0].startswith("site1/")]
    assert sorted(body["start_frame"] for _, body in messages) == [0, 12]  # each event, once
    for _, body in messages:
        check_snapshot(body, video)
        assert body["clip"] is None  # clips are off by default


def test_a_live_sources_events_are_delivered_while_it_runs(engine, tmp_path):
    video = events_video(tmp_path / "goat.mp4", "BBBBBBddddddBBBBBBdddddddddd")
    last_frame: list[float] = []
    with receiver() as hook:
        report = run_pipeline([video], tmp_path / "out", engine, config(live=True, drop_policy="all",
                                                                          webhook=[hook.url()]),
                              on_frame=lambda frame: last_frame.append(time.monotonic()))
    assert report.exit_code == 0 and report.frames == 28
    assert sorted(body["start_frame"] for body in hook.bodies) == [0, 12]
    # the first event is final at frame 12 (1.2 s), the last frame is read at 2.7 s: it arrived long before
    assert hook.requests[0][2] < last_frame[-1]
    assert sorted(e["start_frame"] for e in read_events(tmp_path / "out").to_pylist()) == [0, 12]


def test_a_hanging_webhook_and_a_broker_refusing_the_login_neither_stop_nor_hold_up_the_run(
        engine, video, tmp_path, caplog):
    started = time.monotonic()
    plain = run_pipeline([video], tmp_path / "plain", engine, config())
    plain_s = time.monotonic() - started
    with mosquitto(tmp_path / "broker", "alice", "the-right-one") as port, receiver("hang") as hook, \
            caplog.at_level(logging.INFO):
        targets = [WebhookTarget(hook.url(f"bob:{PASSWORD}@")), MqttTarget(f"mqtt://alice:{PASSWORD}@127.0.0.1:{port}")]
        started = time.monotonic()
        report = run_pipeline([video], tmp_path / "out", engine, config(), observers=[Delivery(targets, QUICK)])
        delivering_s = time.monotonic() - started
    # loosely: the run is not held up by the endpoints beyond the drain time (nothing timed is asserted)
    print(f"run without delivery {plain_s:.2f} s, with a hanging webhook and a refused broker {delivering_s:.2f} s "
          f"(drain {QUICK.drain_s} s)")
    assert report.exit_code == 0 and report.sources[0].status == "done" and report.events == 2
    assert read_results(tmp_path / "out").num_rows == 18 == report.frames == plain.frames
    webhook, broker = report.deliveries
    assert webhook.target == hook.url("bob:***@") and broker.target == f"mqtt://alice:***@127.0.0.1:{port}"
    assert webhook.delivered == broker.delivered == 0
    assert sorted(u.event for u in webhook.undelivered) == sorted(u.event for u in broker.undelivered)
    assert len(webhook.undelivered) == 2 and all("no answer within 0.5 s" in u.reason for u in webhook.undelivered)
    assert len(broker.undelivered) == 2
    assert all(u.reason == "the broker refused the login (Not authorized)" for u in broker.undelivered)
    assert "the broker refused the login" in caplog.text  # said when it connected, at the first frame
    check_secret_kept(report, tmp_path / "out", caplog.text)


def test_an_endpoint_that_is_down_is_retried_until_it_answers(engine, video, tmp_path):
    port, started = free_port(), []

    def start_it_later(event: EventRecord) -> None:  # down when the first event is sent, up a moment later
        if not started:
            started.append(threading.Timer(0.4, lambda: started.append(Receiver(port=port))))
            started[0].start()

    policy = DeliveryPolicy(timeout_s=1.0, attempts=8, backoff_s=0.1, max_backoff_s=0.4, drain_s=10)
    delivery = Delivery([WebhookTarget(f"http://127.0.0.1:{port}/hook")], policy)
    try:
        report = run_pipeline([video], tmp_path / "out", engine, config(), on_event=start_it_later,
                              observers=[delivery])
        hook = started[1]
    finally:
        started[0].join()
        for server in started[1:]:
            server.close()
    assert report.deliveries[0].delivered == 2 and report.deliveries[0].undelivered == []
    assert sorted(body["start_frame"] for body in hook.bodies) == [0, 12]  # each once, after the retries


def test_a_webhook_that_redirects_is_not_delivered_to_and_its_login_goes_nowhere_else() -> None:
    """A 302 was followed: the POST arrived elsewhere as a GET without the event, with the login, and the
    event counted as delivered. Now the event fails, naming where the endpoint points."""
    image, mask = np.zeros((SIZE[1], SIZE[0], 3), np.uint8), np.zeros((SIZE[1], SIZE[0]), bool)
    event = EventRecord("run", "cam", "lobby", Event(0, 9, 0.0, 0.9, 0.9, 0.5, 0.4, 10), 0, 0.0, image, mask)
    with receiver() as elsewhere, receiver(f"redirect:{elsewhere.url()}") as hook:
        with pytest.raises(DeliveryError, match=rf"HTTP 302 Found: the endpoint redirects to "
                                                rf"{re.escape(elsewhere.url())}; give that URL") as failed:
            WebhookTarget(hook.url(f"bob:{PASSWORD}@")).send(event, b"{}", timeout_s=5)
        assert not failed.value.retry and len(hook.requests) == 1 and elsewhere.requests == []


def test_a_full_queue_fails_new_events_at_once_and_the_end_lists_what_waits(tmp_path, caplog):
    """... and Ctrl-C while the end waits for the deliveries ends the wait (a second Ctrl-C of a stopped run
    lost its report), said in the log before."""
    class Stuck:
        name = "http://127.0.0.1:9/stuck"

        def __init__(self) -> None:
            self.sending, self.release = threading.Event(), threading.Event()

        def open(self, timeout_s: float) -> None:
            pass

        def send(self, event: EventRecord, body: bytes, timeout_s: float) -> None:
            self.sending.set()
            self.release.wait(5)

        def close(self) -> None:
            self.release.set()

    def event(start: int) -> EventRecord:
        image, mask = np.zeros((SIZE[1], SIZE[0], 3), np.uint8), np.zeros((SIZE[1], SIZE[0]), bool)
        interval = Event(start, start + 9, start / FPS, (start + 9) / FPS, 0.9, 0.5, 0.4, 10)
        return EventRecord("run", "cam", "lobby", interval, start, start / FPS, image, mask)

    stuck = Stuck()
    delivery = Delivery([stuck], DeliveryPolicy(queue_size=1, drain_s=60), snapshots=False)
    delivery.on_frame(None)  # type: ignore[arg-type]  # the first frame starts the threads
    delivery.on_event(event(0))
    assert stuck.sending.wait(5)  # the first is being sent
    delivery.on_event(event(10))  # waits in the queue
    delivery.on_event(event(20))  # the queue is full
    report = RunReport("run", str(tmp_path), "model", "now")
    ctrl_c = threading.Timer(0.5, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="streamcosal.run.delivery.worker"):
        ctrl_c.start()
        delivery.on_end(report)
    assert time.monotonic() - start < 10 and "up to 60 s more (Ctrl-C stops waiting" in caplog.text
    reasons = {u.event: u.reason for u in report.deliveries[0].undelivered}
    assert reasons["run:" + source_key("cam") + ":20"].startswith("the delivery queue was full (1 events waiting")
    assert reasons["run:" + source_key("cam") + ":0"] == "not delivered when the run ended (still being sent)"
    assert reasons["run:" + source_key("cam") + ":10"] == "not delivered when the run ended (still being sent)"


def test_the_video_command_delivers_and_lists_what_did_not_arrive(dev_checkpoint, video, tmp_path):  # noqa: F811
    with mosquitto(tmp_path / "broker", "alice", "the-right-one") as port, receiver() as hook:
        mqtt = f"mqtt://alice:{PASSWORD}@127.0.0.1:{port}"
        result = CliRunner().invoke(app, ["video", str(video), "--out", str(tmp_path / "out"), "--weights",
                                          str(dev_checkpoint), "--threshold", str(THRESHOLD), "--window", "4",
                                          "--webhook", hook.url(f"bob:{PASSWORD}@"), "--mqtt", mqtt,
                                          "--no-event-snapshots"])
    assert result.exit_code == 0, result.output  # undelivered events are a note, not a failure
    assert f"1 of 1 events delivered to {hook.url('bob:***@')}" in result.output
    assert f"note: 0 of 1 events delivered to mqtt://alice:***@127.0.0.1:{port}; not delivered:" in result.output
    assert "the broker refused the login (Not authorized)" in result.output and PASSWORD not in result.output
    [body] = hook.bodies  # the untrained engine's masks at this threshold are whole frames: one event
    assert body["snapshot"] is None and body["n_frames"] == 18


def test_delivery_settings_are_checked_without_showing_the_password_and_change_no_result_key() -> None:
    for settings, says in (({"webhook": [f"ftp://bob:{PASSWORD}@host/x"]}, "is not a webhook"),
                           ({"mqtt": f"tcp://bob:{PASSWORD}@host"}, "is not a broker"),
                           ({"webhook": [f"http://bob:{PASSWORD}@host:abc/x"]}, "is not a webhook"),  # not a port
                           ({"webhook": [f"http://bob:{PASSWORD}@host:99999/x"]}, "is not a webhook"),
                           ({"webhook": [f"http://bob:{PASSWORD}@[::1/x"]}, "is not a webhook"),
                           ({"mqtt": f"mqtt://bob:{PASSWORD}@host:80a/site"}, "is not a broker"),
                           ({"mqtt": f"mqtt://bob:{PASSWORD}@host/site/+"}, "cannot hold MQTT's wildcards"),
                           ({"mqtt": f"mqtt://bob:{PASSWORD}@host/site/#"}, "cannot hold MQTT's wildcards"),
                           ({"mqtt": f"mqtt://bob:{PASSWORD}@host/site/#/x"}, "cannot hold MQTT's wildcards")):
        with pytest.raises(ValidationError) as refused:
            RunParams(**settings)
        message = explain(refused.value)
        assert "bob:***@" in message and PASSWORD not in message and says in message, message
    assert RunParams(mqtt=f"mqtt://bob:a+b{PASSWORD}@host:1883/site/cams").mqtt  # a + in the password is no wildcard
    with pytest.raises(ValueError, match="give an http"):
        WebhookTarget("http://")
    # the targets a library user builds check the same, naming the URL without its password
    for build, url, says in ((WebhookTarget, f"http://bob:{PASSWORD}@host:99999/x", "is not a webhook"),
                             (MqttTarget, f"mqtt://bob:{PASSWORD}@host:80a/site", "is not a broker"),
                             (MqttTarget, f"mqtt://bob:{PASSWORD}@[::1/site", "is not a broker"),
                             (MqttTarget, f"mqtt://bob:{PASSWORD}@host/site/+", "cannot hold MQTT's wildcards")):
        with pytest.raises(ValueError, match=says) as refused:
            build(url)
        assert "bob:***@" in str(refused.value) and PASSWORD not in str(refused.value)
    delivering = RunParams(webhook=["http://a/b"], mqtt="mqtt://b", event_snapshots=False, event_clips=True)
    assert delivering.result_params() == RunParams().result_params()
