"""Samplers: iterative parallel decoding for MAGVLT, KV-cache decoding for ARGVLT, and GIVT's causal / MaskGIT decoders
with DB-CFG. They know nothing of the CLI."""
