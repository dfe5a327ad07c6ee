"""Logs and metrics: declared once, redacted always, bounded labels only."""
