"""The HTML report of a run (:func:`write_report`) and its matplotlib figures (:mod:`plots`)."""

from tailscope.report.html import render_report, write_report

__all__ = ["render_report", "write_report"]
