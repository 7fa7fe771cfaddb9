"""The report: figures (one function per paper figure), claims, and the HTML page."""

from logitscope.report.claims import claim_from_check
from logitscope.report.html import render_report
from logitscope.report.model import Claim, Figure, Report, Section, Table

__all__ = ["Claim", "Figure", "Report", "Section", "Table", "claim_from_check", "render_report"]
