"""Text: the byte-level BPE tokenizer (CLIP-compatible), its training and MAGVLT conventions."""
