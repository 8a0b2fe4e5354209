"""Pipeline stages: each module holds a <Stage>Config and run(cfg, ...) -> artifact path."""
