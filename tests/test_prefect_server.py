"""End to end: a real local Prefect server, `streamcosal serve`, `prefect deployment run` through the CLI.

Every process is started in its own session and stopped by its process group in the fixture's
finalizer (serve first, then the server), also when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from prefect_fixtures import Processes, clip, dev_checkpoint, free_port, http_ok, streamcosal_command, wait_for

from streamcosal.storage import read_results

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


def test_served_cosal_video_deployment_runs_from_the_cli(processes: Processes, tmp_path: Path, data: Path) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api,
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_RUNNER_POLL_FREQUENCY="2")  # serve picks a triggered run up within 2 s (default 10)
    timings = {}

    start = time.monotonic()
    server = processes.start("server", ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], env)
    weights, video, out = dev_checkpoint(tmp_path), clip(tmp_path, "blackswan"), tmp_path / "results"  # meanwhile
    timings["server"] = time.monotonic() - start + wait_for("the Prefect server answers", lambda: http_ok(f"{api}/health"), 180,
                                 alive=server, log=lambda: processes.log(server))
    serve = processes.start("serve", [*streamcosal_command(), "serve"], env)
    timings["serve"] = wait_for("streamcosal serve registers cosal-video/default",
                                lambda: http_ok(f"{api}/deployments/name/cosal-video/default"), 180,
                                alive=serve, log=lambda: processes.log(serve))

    tic = time.monotonic()
    run = subprocess.run(
        ["prefect", "deployment", "run", "cosal-video/default", "--param", f"source={video}",
         "--param", f"out={out}", "--param", f'engine={{"weights": "{weights}", "device": "cpu"}}',
         "--param", 'params={"window": 4, "consensus_frames": 8, "overlay": true}', "--watch", "--watch-interval", "1", "--watch-timeout", "300"],
        env=env, capture_output=True, text=True, timeout=360)
    timings["run (CLI, --watch)"] = time.monotonic() - tic
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"prefect deployment run failed:\n{output}\n--- serve log ---\n{processes.log(serve)}"
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", output)
    assert flow_run_id, output
    with urllib.request.urlopen(f"{api}/flow_runs/{flow_run_id.group(1)}", timeout=10) as response:
        flow_run = json.load(response)
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    timings["flow run (server)"] = flow_run["total_run_time"]
    timings["total"] = time.monotonic() - start

    rows = read_results(out)
    assert rows.num_rows == 8
    assert sorted(rows["frame_index"].to_pylist()) == list(range(8))
    assert set(rows["source"].to_pylist()) == {str(video)}
    assert list((out / "overlays").rglob("*.mp4")), "the deployment writes the overlay it was asked for"
    print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
