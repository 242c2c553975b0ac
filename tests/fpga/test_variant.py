"""Registering variants: tags, the report in properties, and nothing registered on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import Case

from edgeship.errors import AccuracyBudgetError, CalibrationDataError
from edgeship.fpga.variant import REPORT_PROPERTY, VariantRequest, make_fpga_variant
from edgeship.registry import Model, ModelRef
from edgeship.workspace import Workspace


def _files(tmp_path: Path, case: Case) -> tuple[Path, Path, Path]:
    cal, ev, lab = tmp_path / "cal.npy", tmp_path / "eval.npz", tmp_path / "labels.npy"
    np.save(cal, case.calibration)
    np.savez(ev, **{case.input_name: case.eval_data})
    np.save(lab, case.labels)
    return cal, ev, lab


def test_variant_is_registered_with_tags_and_report(workspace: Workspace, tmp_path: Path, cnn_case: Case) -> None:
    parent = Model.register(workspace, cnn_case.path, "cnn")
    cal, ev, lab = _files(tmp_path, cnn_case)
    result = make_fpga_variant(workspace, VariantRequest(ModelRef("cnn", 1), cal, ev, lab, latency_runs=3))
    variant = Model.get(workspace, "cnn", 2)
    assert variant.tags["variant"] == "fpga-int8" and variant.tags["parent"] == "cnn:1"
    report = json.loads(variant.properties[REPORT_PROPERTY])
    assert report == json.loads(json.dumps(result.report, sort_keys=True))
    assert report["evaluation"]["accuracy_drop"] <= 0.01
    assert report["size"]["param_ratio"] > 3.0  # int32 biases and scales keep it under 4
    assert report["latency_ms"]["batch32"]["ratio"] is not None
    assert Path(variant.materialize()).name == Path(parent.materialize()).name  # same file name as the parent


def test_new_name_and_cntk_batch32_via_dynamic_batch(workspace: Workspace, tmp_path: Path, cntk_case: Case) -> None:
    Model.register(workspace, cntk_case.path, "mnist")
    cal, _, _ = _files(tmp_path, cntk_case)
    result = make_fpga_variant(
        workspace, VariantRequest(ModelRef("mnist"), cal, new_name="mnist-fpga", latency_runs=3, max_accuracy_drop=0.05)
    )
    assert (result.model.name, result.model.version) == ("mnist-fpga", 1)
    assert result.report["latency_ms"]["batch32"]["fp32"] is not None  # type: ignore[index]


def test_tight_budget_excludes_nodes_or_fails_and_failure_registers_nothing(
    workspace: Workspace, tmp_path: Path, cntk_case: Case
) -> None:
    Model.register(workspace, cntk_case.path, "mnist")
    cal, ev, lab = _files(tmp_path, cntk_case)
    with pytest.raises(AccuracyBudgetError) as info:
        make_fpga_variant(
            workspace,
            VariantRequest(ModelRef("mnist", 1), cal, ev, lab, max_accuracy_drop=-1.0, max_excluded=2, latency_runs=3),
        )
    trials = info.value.report["trials"]
    assert [t["method"] for t in trials[:3]] == ["minmax", "entropy", "percentile"]  # type: ignore[index]
    assert len(trials[-1]["excluded_nodes"]) == 2  # type: ignore[index]
    assert [m.version for m in Model.list(workspace, "mnist")] == [1]


def test_zero_budget_on_the_mlp_leaves_sensitive_nodes_in_float(
    workspace: Workspace, tmp_path: Path, mlp_case: Case
) -> None:
    Model.register(workspace, mlp_case.path, "digits")
    cal, ev, _ = _files(tmp_path, mlp_case)
    result = make_fpga_variant(
        workspace, VariantRequest(ModelRef("digits", 1), cal, ev, max_accuracy_drop=0.0, latency_runs=3)
    )
    ev_report = result.report["evaluation"]
    assert ev_report["top1_agreement"] == 1.0  # type: ignore[index]
    assert len(result.report["trials"]) >= 1  # type: ignore[arg-type]


def test_bad_calibration_registers_nothing(workspace: Workspace, tmp_path: Path, mlp_case: Case) -> None:
    Model.register(workspace, mlp_case.path, "digits")
    cal = tmp_path / "few.npy"
    np.save(cal, mlp_case.calibration[:3])
    with pytest.raises(CalibrationDataError, match="give at least 16"):
        make_fpga_variant(workspace, VariantRequest(ModelRef("digits", 1), cal))
    assert len(Model.list(workspace, "digits")) == 1
