"""``streamcosal train``: jigsaw training of the GICD decoder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    pass

from streamcosal.cli.app import app, fail


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="A training config (TOML), e.g. configs/lite0.toml.")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its last epoch checkpoint.")] = False,
    benchmark: Annotated[bool, typer.Option("--benchmark", help="Measure training images/s of the config for fp32 "
                                            "and bf16 (fp16 on GPUs) on this machine, say which one auto uses; train nothing.")] = False,
) -> None:
    """Jigsaw training of the GICD decoder (backbone frozen), validation each epoch, best checkpoint kept."""
    from rich.table import Table

    from streamcosal.io.imagefile import ImageReadError
    from streamcosal.model import WeightsError
    from streamcosal.training.config import ConfigError
    from streamcosal.training.loop import TrainingError
    from streamcosal.training.speed import benchmark as run_benchmark
    from streamcosal.training.loop import train as run_training

    try:
        if benchmark:
            rows, chosen = run_benchmark(config)
            table = Table("precision", "training images/s", "steps x images", title=f"training speed of {escape(str(config))}")
            for row in rows:
                table.add_row(row.precision + (" (auto)" if row.precision == chosen else ""),
                              f"{row.images_per_s:.2f}", f"{row.steps} x {row.group}")
            Console().print(table)
            typer.echo(f"precision = \"auto\" trains with {chosen} on this machine")
            return
        result = run_training(config, resume=resume)
    except (ConfigError, TrainingError, FileNotFoundError, WeightsError) as e:
        fail(str(e), 1)
    except ImageReadError as e:  # a damaged image met mid-epoch: the epochs finished before are in state.pt
        fail(f"{e}: training stopped; replace or remove that file, then run the same command with --resume (the "
             "epochs finished are kept; the one under way starts again)", 1)
    typer.echo(f"{result.name}: {result.epochs_done} epochs, {result.steps_done} steps; best epoch {result.best_epoch} "
               f"(validation score {result.best_score:.3f}) -> {result.best_checkpoint}; metrics in {result.metrics}")
