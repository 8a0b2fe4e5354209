"""Samplers: iterative parallel decoding for MAGVLT, KV-cache decoding for ARGVLT. They know nothing of the CLI."""
