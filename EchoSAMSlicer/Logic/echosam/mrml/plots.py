"""The LV area / volume curve as table + plot series + chart, the EF table, and the plot view
embedded in the module panel. Node references on the anchor (the input sequence) make a second
call update the same nodes."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support as vnp

from ..errors import EchoSAMError

REF_CURVE_TABLE, REF_CURVE_CHART, REF_EF_TABLE = "EchoSAM.LVCurveTable", "EchoSAM.LVCurveChart", "EchoSAM.EFTable"


def _node_by_reference(scene, anchor, role: str, cls: str, name: str):
    node = anchor.GetNodeReference(role) if anchor is not None else None
    if node is None:
        node = scene.AddNewNodeByClass(cls, name)
        if anchor is not None:
            anchor.SetNodeReferenceID(role, node.GetID())
    return node


def _set_columns(table_node, columns: list) -> None:
    table = table_node.GetTable()
    table.Initialize()
    for name, values in columns:
        if values and isinstance(values[0], str):
            arr = vtk.vtkStringArray()
            for v in values:
                arr.InsertNextValue(v)
        else:
            arr = vnp.numpy_to_vtk(np.asarray(values, dtype=float), deep=True)
        arr.SetName(name)
        table.AddColumn(arr)
    table_node.Modified()


def write_lv_curve(scene, frame_times, values, quantity: str = "LV area", unit: str = "mm2",
                   ed_frames: Sequence[int] = (), es_frames: Sequence[int] = (), ef: Optional[float] = None,
                   anchor=None, name: str = "EchoSAM LV", calibrated: bool = True) -> dict:
    """The LV area (mm^2) or volume (ml) curve as table + plot series + chart, and an EF table.

    ``calibrated`` False (the pixel spacing is Slicer's 1 mm default) marks the unit *uncalibrated*
    in the column titles, and the EF table gets a "Pixel spacing" row saying so.

    ``anchor`` (the input sequence) keeps node references so a second call updates the same nodes.
    Returns ``{"table", "series", "chart", "ef_table"}``.
    """
    t = np.asarray(frame_times, float)
    v = np.asarray(values, float)
    if t.shape != v.shape or t.ndim != 1:
        raise EchoSAMError(f"{len(t)} frame times for {len(v)} curve values.")
    table = _node_by_reference(scene, anchor, REF_CURVE_TABLE, "vtkMRMLTableNode", f"{name} curve")
    phase = ["ED" if i in set(ed_frames) else "ES" if i in set(es_frames) else "" for i in range(len(v))]
    unit = unit if calibrated else f"{unit}, uncalibrated"
    ycol = f"{quantity} ({unit})"
    _set_columns(table, [("Frame", list(range(len(v)))), ("Time (s)", list(t)), (ycol, list(v)), ("Phase", phase)])
    chart = _node_by_reference(scene, anchor, REF_CURVE_CHART, "vtkMRMLPlotChartNode", f"{name} chart")
    series = chart.GetNthPlotSeriesNode(0) if chart.GetNumberOfPlotSeriesNodes() else None
    if series is None:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {quantity}")
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetXColumnName("Time (s)")
    series.SetYColumnName(ycol)
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
    series.SetColor(0.85, 0.2, 0.2)
    chart.SetTitle(f"{quantity} over the loop")
    chart.SetXAxisTitle("Time (s)")
    chart.SetYAxisTitle(ycol)
    ef_table = _node_by_reference(scene, anchor, REF_EF_TABLE, "vtkMRMLTableNode", f"{name} EF")
    rows = [("ED frames", " ".join(map(str, ed_frames)) or "-"), ("ES frames", " ".join(map(str, es_frames)) or "-")]
    if ed_frames:
        rows.append((f"ED {quantity} ({unit})", f"{np.mean(v[list(ed_frames)]):.2f}"))
    if es_frames:
        rows.append((f"ES {quantity} ({unit})", f"{np.mean(v[list(es_frames)]):.2f}"))
    rows.append(("EF (%)", "-" if ef is None or not np.isfinite(ef) else f"{ef:.1f}"))
    rows.append(("Pixel spacing", "calibrated" if calibrated else "UNCALIBRATED (1 mm default): volumes are not in ml"))
    _set_columns(ef_table, [("Quantity", [r[0] for r in rows]), ("Value", [r[1] for r in rows])])
    return {"table": table, "series": series, "chart": chart, "ef_table": ef_table}


def panel_plot_view(scene, chart, tag: str = "EchoSAMPanel"):
    """A plot view node (one per scene, singleton ``tag``) showing ``chart``, for a plot widget embedded
    in the module panel. It has its own layout name, so it never replaces a plot view of the layout."""
    view = scene.GetSingletonNode(tag, "vtkMRMLPlotViewNode")
    if view is None:
        view = slicer.vtkMRMLPlotViewNode()
        view.SetSingletonTag(tag)
        view.SetName(f"{tag} plot view")
        view.SetLayoutName(tag)
        view = scene.AddNode(view)
    view.SetPlotChartNodeID(chart.GetID() if chart is not None else None)
    return view
