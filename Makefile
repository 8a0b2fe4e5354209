# vltk: `make demo` runs the pipeline on the built-in data, `make test` runs the tests; both install what they need.
# Targets are artifacts' manifests, so editing a stage's TOML rebuilds that stage and everything downstream of it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
VLTK   := $(BIN)/vltk
RUN    ?= build/demo
CFG    ?= stages/demo
INSTALLED := $(VENV)/.installed

.PHONY: install demo demo-argvlt demo-vae test bench clean
# Every manifest is an artifact to keep, even when only a pattern rule names it (make would delete "intermediates").
.SECONDARY:

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

test: $(INSTALLED)
	# One thread per test worker: two workers with two threads each oversubscribe 2 cores and slow torch down badly.
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 tests

demo: $(RUN)/scores-t2i/manifest.json $(RUN)/scores-i2t/manifest.json
	$(VLTK) info $(RUN)/image-tok
	$(VLTK) info $(RUN)/gen
	$(VLTK) info $(RUN)/scores-t2i
	$(VLTK) info $(RUN)/scores-i2t
	@echo "reports: $(RUN)/scores-t2i/report.html $(RUN)/scores-i2t/report.html"

# The autoregressive baseline on the same encoded data.
demo-argvlt: $(RUN)/gen-argvlt/manifest.json
	$(VLTK) info $(RUN)/gen-argvlt

# The continuous-latent twin (GIVT's input): a beta-VAE and the data set encoded with it.
demo-vae: $(RUN)/encoded-vae/manifest.json
	$(VLTK) info $(RUN)/image-tok-vae
	$(VLTK) info $(RUN)/encoded-vae

$(RUN)/raw/manifest.json: $(CFG)/synth.toml | $(INSTALLED)
	$(VLTK) synth shapes $(@D) --config $< --force

$(RUN)/shards/manifest.json: $(CFG)/shard.toml $(RUN)/raw/manifest.json | $(INSTALLED)
	$(VLTK) shard $(RUN)/raw $(@D) --config $< --force

$(RUN)/text-tok/manifest.json: $(CFG)/tokenize_text.toml $(RUN)/shards/manifest.json | $(INSTALLED)
	$(VLTK) tokenize text $(RUN)/shards $(@D) --config $< --force

$(RUN)/image-tok/manifest.json: $(CFG)/tokenize_image.toml $(RUN)/shards/manifest.json | $(INSTALLED)
	$(VLTK) tokenize image $(RUN)/shards $(@D) --config $< --force

$(RUN)/image-tok-vae/manifest.json: $(CFG)/tokenize_image_vae.toml $(RUN)/shards/manifest.json | $(INSTALLED)
	$(VLTK) tokenize image $(RUN)/shards $(@D) --config $< --force

$(RUN)/encoded/manifest.json: $(CFG)/encode.toml $(RUN)/shards/manifest.json $(RUN)/image-tok/manifest.json $(RUN)/text-tok/manifest.json | $(INSTALLED)
	$(VLTK) encode $(RUN)/shards $(RUN)/image-tok $(RUN)/text-tok $(@D) --config $< --force

$(RUN)/encoded-vae/manifest.json: $(CFG)/encode.toml $(RUN)/shards/manifest.json $(RUN)/image-tok-vae/manifest.json $(RUN)/text-tok/manifest.json | $(INSTALLED)
	$(VLTK) encode $(RUN)/shards $(RUN)/image-tok-vae $(RUN)/text-tok $(@D) --config $< --force

$(RUN)/gen/manifest.json: $(CFG)/train_gen.toml $(RUN)/encoded/manifest.json | $(INSTALLED)
	$(VLTK) train-gen $(RUN)/encoded $(@D) --config $< --force

$(RUN)/gen-argvlt/manifest.json: $(CFG)/train_gen_argvlt.toml $(RUN)/encoded/manifest.json | $(INSTALLED)
	$(VLTK) train-gen $(RUN)/encoded $(@D) --config $< --force

$(RUN)/samples-%/manifest.json: $(CFG)/sample_%.toml $(RUN)/gen/manifest.json | $(INSTALLED)
	$(VLTK) sample $(RUN)/gen $(@D) --config $< --force

$(RUN)/scores-%/manifest.json: $(CFG)/score.toml $(RUN)/samples-%/manifest.json | $(INSTALLED)
	$(VLTK) score $(RUN)/samples-$* $(@D) --config $< --force

bench: $(INSTALLED)
	mkdir -p build/bench
	$(BIN)/python -m benchmarks.run --out build/bench/results.json

clean:
	rm -rf build
