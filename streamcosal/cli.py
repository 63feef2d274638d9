"""The ``streamcosal`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .engine import CoSalEngine
from .model import WeightsError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Co-saliency detection (GICD) for image groups, videos and camera streams.")
err = Console(stderr=True, soft_wrap=True)


@app.callback()
def _root() -> None:
    """Co-saliency detection (GICD) for image groups, videos and camera streams."""

WeightsOpt = Annotated[Optional[Path], typer.Option("--weights", help="A streamcosal checkpoint (default: the embedded model).")]
OfficialOpt = Annotated[Optional[Path], typer.Option("--official", help="The authors' gicd_ginet.pth (VGG-16 GICD).")]
Vgg16Opt = Annotated[Optional[Path], typer.Option("--vgg16", help="torchvision's vgg16-397923af.pth (for --official).")]
PrecisionOpt = Annotated[str, typer.Option("--precision", help="fp32, bf16 (GPUs, CPUs with AVX512-BF16) or fp16 (GPUs).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]


def load_engine(weights: Path | None, official: Path | None, vgg16: Path | None, precision: str, device: str) -> CoSalEngine:
    """The engine the options ask for, or exit 2 with the reason."""
    try:
        if official is not None:
            return CoSalEngine.from_official_checkpoint(official, vgg16, precision=precision, device=device)  # type: ignore[arg-type]
        if weights is not None:
            return CoSalEngine.from_checkpoint(weights, precision=precision, device=device)
        return CoSalEngine.from_pretrained(precision=precision, device=device)
    except (WeightsError, ValueError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e


@app.command()
def images(
    input: Annotated[Path, typer.Argument(help="A folder of groups (INPUT/<group>/<image>) or one folder of images.")],
    out: Annotated[Path, typer.Option("--out", help="Maps are written to OUT/<group>/<stem>.png.")],
    weights: WeightsOpt = None,
    official: OfficialOpt = None,
    vgg16: Vgg16Opt = None,
    precision: PrecisionOpt = "fp32",
    device: DeviceOpt = "auto",
) -> None:
    """Segment the common object of every image group; 8-bit maps at each image's original size."""
    from .images import segment_folders

    if not input.is_dir():
        err.print(f"[red]error:[/red] input folder not found: {input}")
        raise typer.Exit(2)
    engine = load_engine(weights, official, vgg16, precision, device)
    report = segment_folders(input, out, engine)
    n = sum(report.written.values())
    typer.echo(f"wrote {n} maps in {len(report.written)} groups to {out}")
    for failure in report.failures:
        err.print(f"[red]failed:[/red] {failure.reason}")
    if not report.ok:
        err.print(f"{len(report.failures)} failures; every other image was processed")
        raise typer.Exit(1)


@app.command("eval")
def eval_(
    out: Annotated[Path, typer.Option("--out", help="Reports, tables and plots go here.")],
    pred: Annotated[Optional[list[Path]], typer.Option("--pred", help="Maps folder PRED/<group>/<stem>.png; repeat to compare methods.")] = None,
    gt: Annotated[Optional[Path], typer.Option("--gt", help="The dataset (CoCA, CoSal2015, CoSOD3k, iCoseg, MSRC or images/+masks/ layout).")] = None,
    name: Annotated[Optional[list[str]], typer.Option("--name", help="A method name per --pred (default: the folder's name).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Predict with the model on this dataset, then evaluate.")] = None,
    weights: WeightsOpt = None,
    official: OfficialOpt = None,
    vgg16: Vgg16Opt = None,
    precision: PrecisionOpt = "fp32",
    device: DeviceOpt = "auto",
) -> None:
    """Co-SOD metrics (pysodmetrics): S, max/mean/adaptive F and E, MAE, wF, PR and F curves; overall and per group.

    Either --pred DIR [--pred DIR2 ...] --gt DIR, or --data DIR to predict with a model (--weights /
    --official; the embedded default otherwise) and evaluate.
    """
    from .evaluation import EvalBatchError, predict_and_evaluate, run_eval

    if (data is None) == (gt is None):
        err.print("[red]error:[/red] give either --pred DIR --gt DIR, or --data DIR (predict, then evaluate)")
        raise typer.Exit(2)
    try:
        if data is not None:
            engine = load_engine(weights, official, vgg16, precision, device)
            method = (name or [engine.name])[0]
            predict_and_evaluate(engine, data, out, name=method)
        else:
            run_eval(pred or [], gt, name, out)  # type: ignore[arg-type]
    except EvalBatchError as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from e
    except (ValueError, FileNotFoundError) as e:
        err.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from e
    typer.echo(f"reports in {out}")
