"""``edgeship fpga quantize``: a registered fp32 ONNX model → a registered int8 FPGA variant.

A thin transport over :func:`edgeship.fpga.variant.make_fpga_variant`: options in,
a rich progress line while it works, the report as a table (or JSON) out. When no
setting fits the budget, the trials are printed before the one-sentence error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeship.cli._common import WorkspaceOpt, console, err_console, print_json, workspace_from
from edgeship.errors import AccuracyBudgetError, InputError
from edgeship.registry import parse_model_ref

__all__ = ["app"]

app = typer.Typer(help="FPGA variants: int8 models within an accuracy budget.", no_args_is_help=True)


@app.command("quantize")
def quantize_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Registered fp32 ONNX model, NAME[:VERSION].")],
    calibration: Annotated[Path, typer.Option("--calibration", help="Calibration samples (.npy/.npz), ≥ 16 rows.")],
    eval_data: Annotated[Path | None, typer.Option("--eval", help="Evaluation samples (.npy/.npz).")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="Integer labels for --eval (.npy/.npz).")] = None,
    max_accuracy_drop: Annotated[
        float, typer.Option("--max-accuracy-drop", help="Budget as a fraction: 0.01 is one point.")
    ] = 0.01,
    method: Annotated[str, typer.Option("--method", help="First calibration method: minmax|entropy|percentile.")] = (
        "minmax"
    ),
    scales: Annotated[
        str, typer.Option("--scales", help="pow2 (FPGA: symmetric int8) or float (CPU: uint8 activations).")
    ] = "pow2",
    per_channel: Annotated[bool, typer.Option("--per-channel", help="One weight scale per output channel.")] = False,
    new_name: Annotated[str | None, typer.Option("--new-name", "-n", help="Register under this name.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Quantize MODEL to int8 QDQ, check the accuracy budget, and register the variant."""
    from edgeship.fpga.report import report_table
    from edgeship.fpga.variant import VariantRequest, make_fpga_variant  # onnx/onnxruntime only when used

    if not 0.0 <= max_accuracy_drop <= 1.0:
        raise InputError(f"--max-accuracy-drop {max_accuracy_drop} is not a fraction between 0 and 1 (0.01 = 1 point).")
    ws = workspace_from(workspace)
    request = VariantRequest(
        model=parse_model_ref(model),
        calibration=calibration,
        eval_data=eval_data,
        labels=labels,
        max_accuracy_drop=max_accuracy_drop,
        method=method,
        scales=scales,
        per_channel=per_channel,
        new_name=new_name,
    )
    try:
        with err_console.status("Quantizing") as status:
            result = make_fpga_variant(ws, request, progress=lambda msg: status.update(msg))
    except AccuracyBudgetError as exc:
        if as_json:
            print_json(exc.report)
        else:
            trials = exc.report.get("trials", [])
            for t in trials if isinstance(trials, list) else []:
                err_console.print(f"  tried {t}", highlight=False)
        raise
    if as_json:
        print_json({"model": f"{result.model.name}:{result.model.version}", "report": result.report})
        return
    console.print(report_table(result.report))
    console.print(
        f"Registered [bold]{result.model.name}[/] version [bold]{result.model.version}[/] "
        f"(variant=fpga-int8, parent={result.model.tags.get('parent')})",
        highlight=False,
    )
