"""The run report: one self-contained HTML page, PNG figures and summary.json, from the tables."""

from harness.report.build import ReportOutputs, build_report
from harness.report.tables import RunTables, load_tables, summary_json

__all__ = ["ReportOutputs", "RunTables", "build_report", "load_tables", "summary_json"]
