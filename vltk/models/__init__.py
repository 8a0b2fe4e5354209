"""Generators: MAGVLT (masked, bidirectional) and ARGVLT (causal), on shared pre-LN transformer layers."""
