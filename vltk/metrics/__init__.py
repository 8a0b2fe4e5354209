"""Metrics: the shapes judge, caption metrics, FID/IS, CLIP, dense prediction (PQ, depth) and the HTML report."""
