"""One definition of every run parameter: the CLI's and the flows' defaults are the models'."""

from __future__ import annotations

import inspect

import pytest
import typer.main
from pydantic import ValidationError

from streamcosal.cli import app
from streamcosal.inference.engine import engine_for
from streamcosal.params import DELIVERY, LIVE_ONLY, EngineSpec, RunParams, explain
from streamcosal.run.records import PipelineConfig


def cli_defaults(command: str) -> dict[str, object]:
    return {p.name: p.default for p in typer.main.get_command(app).commands[command].params}  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", ["images", "eval", "video", "search"])
def test_the_cli_defaults_are_the_models(command: str) -> None:
    defaults = cli_defaults(command)
    engine = {name: defaults[name] for name in EngineSpec.model_fields}  # every engine option, in every command
    assert EngineSpec(**engine) == EngineSpec()
    if command == "video":  # the run parameters, and the live settings a run's caller sets (PipelineConfig)
        shared = {name: defaults[name] for name in PipelineConfig.model_fields if name in defaults}
        assert len(shared) >= 12 and shared == {name: getattr(PipelineConfig(), name) for name in shared}
        assert LIVE_ONLY <= set(shared) and LIVE_ONLY <= set(RunParams.model_fields)  # flows set them too
        assert defaults["overlay"] is False and defaults["precision"] == "auto"


def test_the_flows_take_the_models_with_the_models_defaults() -> None:
    from streamcosal.flows.archive import cosal_archive
    from streamcosal.flows.evaluate import cosal_eval
    from streamcosal.flows.video import cosal_video

    for flow in (cosal_video, cosal_archive, cosal_eval):
        parameters = inspect.signature(flow.fn).parameters
        assert parameters["engine"].default == EngineSpec()
        if "params" in parameters:
            assert parameters["params"].default == RunParams()
    assert "params" in inspect.signature(cosal_video.fn).parameters and "window" not in inspect.signature(cosal_video.fn).parameters


def test_a_pipeline_config_is_the_run_parameters_plus_the_runs_own() -> None:
    params = RunParams(window=4, mode="global")
    config = PipelineConfig(**params.model_dump(), run_id="r1")
    assert config.window == 4 and config.run_id == "r1" and isinstance(config, RunParams)
    assert set(params.result_params()) == set(RunParams.model_fields) - {"flush_every", "parallel_groups", "decoder", "temporal_smoothing"} - LIVE_ONLY - DELIVERY
    smoothed = RunParams(window=4, mode="global", temporal_smoothing=True).result_params()
    assert smoothed == params.result_params() | {"temporal_smoothing": True}  # off: keys as before it existed


def test_the_live_settings_are_run_parameters() -> None:
    """A camera run through a flow or job (``params``) sets its drop policy, latency target, duration and
    metrics endpoint, and any run whether its sources are read live; they do not change the key of an
    archive's files (which are never read live)."""
    from streamcosal.run.jobs import pipeline_config

    live = {"live": True, "drop_policy": "stride", "max_latency": 0.5, "duration": 60.0, "metrics_port": 9108, "metrics_host": "0.0.0.0"}
    assert set(live) == LIVE_ONLY
    config = pipeline_config(RunParams(**live), run_id="r1")
    assert {name: getattr(config, name) for name in live} == live
    assert RunParams(**live).result_params() == RunParams().result_params()


@pytest.mark.parametrize(("values", "message"), [
    ({"window": 0}, "window: Input should be greater than or equal to 1 (got 0)"),
    ({"window": 4, "step": 5}, "step must be in 1..window (4), got 5"),
    ({"fps": 5.0, "stride": 2}, "give either fps or stride, not both"),
    ({"mode": "live"}, "mode: Input should be 'auto', 'global' or 'streaming' (got 'live')"),
    ({"windows": 4}, "windows: Extra inputs are not permitted (got 4)"),
    ({"drop_policy": "newest"}, "drop_policy: Input should be 'latest', 'stride' or 'all' (got 'newest')"),
    ({"max_latency": 0}, "max_latency: Input should be greater than 0 (got 0)"),
    ({"live": True, "mode": "global"}, "live sources are segmented as they come, against a running consensus: "
                                       "live takes mode streaming (or auto), not global"),
])
def test_bad_run_parameters_are_refused_in_one_line(values: dict, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        RunParams(**values)
    assert explain(refused.value) == message
    with pytest.raises(ValueError):  # pydantic's error is a ValueError: callers that caught check()'s still do
        PipelineConfig(**values)


def test_an_impossible_precision_is_refused() -> None:
    with pytest.raises(ValidationError, match="precision"):
        EngineSpec(precision="int8")


def test_identity_names_a_non_default_input_size_flip_embedding_share_and_gate(tmp_path) -> None:
    from conftest import untrained_checkpoint

    ck = untrained_checkpoint(tmp_path, 224)
    plain = EngineSpec(weights=ck).identity()
    assert plain.startswith("gicd-efficientnet_lite0 dev ") and len(plain.split()) == 3  # as before the options
    assert EngineSpec(weights=ck, input_size=224).identity() == plain  # the checkpoint's own size
    assert EngineSpec(weights=ck, input_size=320, flip=True).identity() == plain + " 320px flip"
    assert EngineSpec(weights=ck, embedding_share=0).identity() == plain  # the checkpoint's own share
    assert EngineSpec(weights=ck, embedding_share=0.4).identity() == plain + " share0.4"
    default = EngineSpec().identity()
    assert EngineSpec(embedding_share=0.4).identity() == default and EngineSpec(embedding_share=0).identity() == default + " share0"
    assert EngineSpec(weights=ck, prototype_gate=0).identity() == plain
    assert EngineSpec(weights=ck, prototype_gate=0.5, embedding_share=0.4).identity() == plain + " share0.4 gate0.5"
    assert EngineSpec(prototype_gate=0.5).identity() == default and EngineSpec(prototype_gate=0).identity() == default + " gate0"
    assert EngineSpec(input_size=224).identity() == default + " 224px"  # fixed, where the default ranges 224-288


def test_the_embedding_share_option_reaches_the_engine() -> None:
    paper = engine_for(EngineSpec(embedding_share=0, device="cpu"))
    assert paper.model.embedding_share == 0 and "embedding share" not in paper.describe()
    assert engine_for(EngineSpec(device="cpu")).model.embedding_share == 0.4  # the embedded default's
    with pytest.raises(ValidationError) as refused:
        EngineSpec(embedding_share=1.5)
    assert explain(refused.value) == "embedding_share: Input should be less than or equal to 1 (got 1.5)"


def test_the_prototype_gate_option_reaches_the_engine() -> None:
    ungated = engine_for(EngineSpec(prototype_gate=0, device="cpu"))
    assert ungated.model.prototype_gate == 0 and "prototype gate" not in ungated.describe()
    default = engine_for(EngineSpec(device="cpu"))
    assert default.model.prototype_gate == 0.5 and default.model_metadata()["prototype_gate"] == "0.5"
    with pytest.raises(ValidationError) as refused:
        EngineSpec(prototype_gate=-1)
    assert explain(refused.value) == "prototype_gate: Input should be greater than or equal to 0 (got -1)"
