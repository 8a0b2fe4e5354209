"""Metrics: the shapes judge, caption metrics, FID/IS and the HTML report."""
