"""A video job (the cosal-video flow's body) fails when the CLI would exit non-zero."""

import pickle

import pytest

from streamcosal.run.jobs import VideoJobError, raise_for_failures, report_markdown
from streamcosal.run.records import RunReport, SourceRun


def report(**changes) -> RunReport:
    run = RunReport(run_id="r1", out="results", model="gicd test", started="2026-11-28T12:00:00+00:00",
                    sources=[SourceRun("a.mp4", "a", status="done", frames=10)])
    for key, value in changes.items():
        setattr(run, key, value)
    return run


def test_a_clean_run_passes():
    assert report().exit_code == 0
    raise_for_failures(report())


def test_results_not_saved_fail_the_job_and_say_what():
    run = report(errors=["the last results not saved: cannot write results/frames: No space left on device"])
    assert run.exit_code != 0
    with pytest.raises(VideoJobError, match="not saved:\n  the last results not saved") as failed:
        raise_for_failures(run)
    assert pickle.loads(pickle.dumps(failed.value)).report.errors == run.errors  # Ray pickles errors
    assert "- the last results not saved" in report_markdown(run)


def test_a_failed_source_or_a_stop_fails_the_job():
    with pytest.raises(VideoJobError, match="1 of 2 source"):
        raise_for_failures(report(sources=[SourceRun("a.mp4", "a", status="done"),
                                           SourceRun("b.mp4", "b", status="failed", error="cannot open b.mp4")]))
    with pytest.raises(VideoJobError, match="stopped by SIGTERM"):
        raise_for_failures(report(interrupted="SIGTERM"))


def test_the_markdown_names_each_groups_consensus():
    run = report(consensus={"a": [("tabby", 0.62), ("tiger cat", 0.2), ("Egyptian cat", 0.15)]})
    assert "- a: tabby 0.62, tiger cat 0.20, Egyptian cat 0.15" in report_markdown(run)
    assert "consensus" not in report_markdown(report())  # a model without GIM has none
