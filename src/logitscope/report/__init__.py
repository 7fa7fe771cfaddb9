"""The report: figures (one function per paper figure), claims, and the HTML page."""

from logitscope.report.claims import REGISTRY, check_claims
from logitscope.report.html import render_report
from logitscope.report.model import Claim, Figure, Report, Section, Table

__all__ = ["REGISTRY", "Claim", "Figure", "Report", "Section", "Table", "check_claims", "render_report"]
