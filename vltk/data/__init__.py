"""Data: sources, image validation, the shards format and the built-in shapes data set."""
