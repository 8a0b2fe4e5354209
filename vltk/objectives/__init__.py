"""Training objectives of the generators: what one micro-batch's losses are. Models know nothing of these."""
