"""vltk: masked generative vision-language transformers (MAGVLT, ARGVLT, GIVT), end to end."""

__version__ = "0.1.0"
