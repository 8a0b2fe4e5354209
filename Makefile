# vltk: `make demo` runs the pipeline on the built-in data, `make test` runs the tests; both install what they need.
# Targets are artifacts' manifests, so editing a stage's TOML rebuilds that stage and everything downstream of it.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
VLTK   := $(BIN)/vltk
RUN    ?= build/demo
CFG    ?= stages/demo
INSTALLED := $(VENV)/.installed
# --force only where the artifact is finished and out of date: a run killed half-way (no manifest yet) is continued
# from its .partial/ by the next make, where --force would start it over.
FORCE = $(if $(wildcard $@),--force)

.PHONY: install demo demo-argvlt demo-compare demo-vae demo-givt demo-uvim uvim-sweep test bench clean
# Every manifest is an artifact to keep, even when only a pattern rule names it (make would delete "intermediates").
.SECONDARY:

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

test: $(INSTALLED)
	# One thread per test worker: two workers with two threads each oversubscribe 2 cores and slow torch down badly.
	# worksteal: xdist's default (load) hands the first worker the first chunk of the collection, which holds nearly
	# every slow test (tests/dist and tests/smoke sort first), and never takes them back: one worker ran alone for the
	# last 3.5 of 5.7 minutes. An idle worker steals half of the other's queue instead (3.5 minutes in all).
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist worksteal tests

demo: $(RUN)/scores-t2i/manifest.json $(RUN)/scores-i2t/manifest.json
	$(VLTK) info $(RUN)/image-tok
	$(VLTK) info $(RUN)/gen
	$(VLTK) info $(RUN)/scores-t2i
	$(VLTK) info $(RUN)/scores-i2t
	@echo "reports: $(RUN)/scores-t2i/report.html $(RUN)/scores-i2t/report.html"

# The autoregressive baseline on the same encoded data.
demo-argvlt: $(RUN)/gen-argvlt/manifest.json
	$(VLTK) info $(RUN)/gen-argvlt

# MAGVLT and ARGVLT at equal training steps, sampled and scored alike, side by side in one report; and both against
# the classifier-free guidance weight w in a second one.
demo-compare: $(RUN)/compare/manifest.json $(RUN)/compare-guidance/manifest.json
	$(VLTK) info $(RUN)/compare
	$(VLTK) info $(RUN)/compare-guidance
	@echo "reports: $(RUN)/compare/report.html $(RUN)/compare-guidance/report.html"

# The continuous-latent twin (GIVT's input): a beta-VAE and the data set encoded with it.
demo-vae: $(RUN)/encoded-vae/manifest.json
	$(VLTK) info $(RUN)/image-tok-vae
	$(VLTK) info $(RUN)/encoded-vae

# GIVT-Causal on the beta-VAE's latents, text-conditioned, beside MAGVLT (run by make demo) in one report, with a sweep
# of GIVT's variance scaling t (at w = 0) and DB-CFG weight w (at the config's t) on GIVT_SWEEP_COUNT val prompts.
demo-givt: $(RUN)/compare-givt/manifest.json
	$(VLTK) info $(RUN)/gen-givt
	$(VLTK) info $(RUN)/compare-givt
	@echo "report: $(RUN)/compare-givt/report.html"

GIVT_TEMPERATURES ?= 0.8 0.9 1.0
GIVT_CFG_WEIGHTS ?= 0 0.4 1 2 4
GIVT_SWEEP_COUNT ?= 128
GIVT_T := $(shell sed -n 's/^temperature *= *//p' $(CFG)/sample_givt_t2i.toml 2>/dev/null)
# One point of the sweep per name: t<temperature>-w<weight>, each sampled and scored as its own artifacts.
GIVT_SWEEP := $(foreach t,$(GIVT_TEMPERATURES),t$(t)-w0) $(foreach w,$(GIVT_CFG_WEIGHTS),t$(GIVT_T)-w$(w))
GIVT_SWEEP_SCORES := $(addprefix $(RUN)/givt-sweep/scores-,$(sort $(GIVT_SWEEP)))

$(RUN)/gen-givt/manifest.json: $(CFG)/train_gen_givt.toml $(RUN)/encoded-vae/manifest.json | $(INSTALLED)
	$(VLTK) train-gen $(RUN)/encoded-vae $(@D) --config $< $(FORCE)

$(RUN)/samples-givt-%/manifest.json: $(CFG)/sample_givt_%.toml $(RUN)/gen-givt/manifest.json | $(INSTALLED)
	$(VLTK) sample $(RUN)/gen-givt $(@D) --config $< $(FORCE)

# t0.95-w0.4 -> --set givt.temperature=0.95 --set givt.cfg_weight=0.4
$(RUN)/givt-sweep/samples-%/manifest.json: $(CFG)/sample_givt_t2i.toml $(RUN)/gen-givt/manifest.json | $(INSTALLED)
	$(VLTK) sample $(RUN)/gen-givt $(@D) --config $< --count $(GIVT_SWEEP_COUNT) \
		--set givt.temperature=$(patsubst t%,%,$(word 1,$(subst -, ,$*))) \
		--set givt.cfg_weight=$(patsubst w%,%,$(word 2,$(subst -, ,$*))) $(FORCE)

$(RUN)/givt-sweep/scores-%/manifest.json: $(CFG)/score.toml $(RUN)/givt-sweep/samples-%/manifest.json | $(INSTALLED)
	$(VLTK) score $(RUN)/givt-sweep/samples-$* $(@D) --config $< $(FORCE)

COMPARED_GIVT := $(RUN)/scores-t2i $(RUN)/scores-givt-t2i $(GIVT_SWEEP_SCORES)
$(RUN)/compare-givt/manifest.json: $(addsuffix /manifest.json,$(COMPARED_GIVT)) | $(INSTALLED)
	$(VLTK) compare $(COMPARED_GIVT) $(@D) --title "MAGVLT vs GIVT-Causal (text-to-image), and GIVT's variance scaling and DB-CFG sweep" $(FORCE)

# UViM (GIVT §4.2, §5.2): label tokenizers (stage I) for panoptic and depth with GIVT's VAE bottleneck and for
# panoptic with UViM's VQ one, an image-conditioned GIVT on each (stage II: the VQ one is UViM's baseline), dense
# samples of the val scenes and their scores (PQ / depth errors beside a trivial baseline and stage I's reconstruction).
UVIM := panoptic depth panoptic_vq
demo-uvim: $(foreach u,$(UVIM),$(RUN)/scores-uvim-$(u)/manifest.json)
	$(foreach u,$(UVIM),$(VLTK) info $(RUN)/scores-uvim-$(u);)
	@echo "reports: $(foreach u,$(UVIM),$(RUN)/scores-uvim-$(u)/report.html)"

$(RUN)/label-tok-%/manifest.json: $(CFG)/tokenize_label_%.toml $(RUN)/shards/manifest.json | $(INSTALLED)
	$(VLTK) tokenize label $(RUN)/shards $(@D) --config $< $(FORCE)

$(RUN)/gen-uvim-%/manifest.json: $(CFG)/train_gen_uvim.toml $(RUN)/label-tok-%/manifest.json | $(INSTALLED)
	$(VLTK) train-gen $(RUN)/label-tok-$* $(@D) --config $< $(FORCE)

$(RUN)/samples-uvim-%/manifest.json: $(CFG)/sample_dense.toml $(RUN)/gen-uvim-%/manifest.json | $(INSTALLED)
	$(VLTK) sample $(RUN)/gen-uvim-$* $(@D) --config $< $(FORCE)

$(RUN)/scores-uvim-%/manifest.json: $(CFG)/score.toml $(RUN)/samples-uvim-%/manifest.json | $(INSTALLED)
	$(VLTK) score $(RUN)/samples-uvim-$* $(@D) --config $< $(FORCE)

# The paper picks t on held-out data (GIVT §5.2): `make uvim-sweep UVIM_TASK=depth UVIM_SPLIT=val` samples and scores
# each of UVIM_TEMPERATURES (a held-out part of train, shard it as its own split and name it in UVIM_SPLIT).
UVIM_TASK ?= panoptic
UVIM_SPLIT ?= val
UVIM_TEMPERATURES ?= 0.7 0.85 1.0
uvim-sweep: $(foreach t,$(UVIM_TEMPERATURES),$(RUN)/uvim-sweep/scores-$(UVIM_TASK)-t$(t)/manifest.json)
	$(foreach t,$(UVIM_TEMPERATURES),$(VLTK) info $(RUN)/uvim-sweep/scores-$(UVIM_TASK)-t$(t);)

$(RUN)/uvim-sweep/samples-%/manifest.json: $(CFG)/sample_dense.toml $(RUN)/gen-uvim-$(UVIM_TASK)/manifest.json | $(INSTALLED)
	$(VLTK) sample $(RUN)/gen-uvim-$(UVIM_TASK) $(@D) --config $< --split $(UVIM_SPLIT) \
		--set givt.temperature=$(patsubst t%,%,$(lastword $(subst -, ,$*))) $(FORCE)

$(RUN)/uvim-sweep/scores-%/manifest.json: $(CFG)/score.toml $(RUN)/uvim-sweep/samples-%/manifest.json | $(INSTALLED)
	$(VLTK) score $(RUN)/uvim-sweep/samples-$* $(@D) --config $< $(FORCE)

$(RUN)/raw/manifest.json: $(CFG)/synth.toml | $(INSTALLED)
	$(VLTK) synth shapes $(@D) --config $< $(FORCE)

$(RUN)/shards/manifest.json: $(CFG)/shard.toml $(RUN)/raw/manifest.json | $(INSTALLED)
	$(VLTK) shard $(RUN)/raw $(@D) --config $< $(FORCE)

$(RUN)/text-tok/manifest.json: $(CFG)/tokenize_text.toml $(RUN)/shards/manifest.json | $(INSTALLED)
	$(VLTK) tokenize text $(RUN)/shards $(@D) --config $< $(FORCE)

$(RUN)/image-tok/manifest.json: $(CFG)/tokenize_image.toml $(RUN)/shards/manifest.json | $(INSTALLED)
	$(VLTK) tokenize image $(RUN)/shards $(@D) --config $< $(FORCE)

$(RUN)/image-tok-vae/manifest.json: $(CFG)/tokenize_image_vae.toml $(RUN)/shards/manifest.json | $(INSTALLED)
	$(VLTK) tokenize image $(RUN)/shards $(@D) --config $< $(FORCE)

$(RUN)/encoded/manifest.json: $(CFG)/encode.toml $(RUN)/shards/manifest.json $(RUN)/image-tok/manifest.json $(RUN)/text-tok/manifest.json | $(INSTALLED)
	$(VLTK) encode $(RUN)/shards $(RUN)/image-tok $(RUN)/text-tok $(@D) --config $< $(FORCE)

$(RUN)/encoded-vae/manifest.json: $(CFG)/encode.toml $(RUN)/shards/manifest.json $(RUN)/image-tok-vae/manifest.json $(RUN)/text-tok/manifest.json | $(INSTALLED)
	$(VLTK) encode $(RUN)/shards $(RUN)/image-tok-vae $(RUN)/text-tok $(@D) --config $< $(FORCE)

$(RUN)/gen/manifest.json: $(CFG)/train_gen.toml $(RUN)/encoded/manifest.json | $(INSTALLED)
	$(VLTK) train-gen $(RUN)/encoded $(@D) --config $< $(FORCE)

$(RUN)/gen-argvlt/manifest.json: $(CFG)/train_gen_argvlt.toml $(RUN)/encoded/manifest.json | $(INSTALLED)
	$(VLTK) train-gen $(RUN)/encoded $(@D) --config $< $(FORCE)

$(RUN)/samples-%/manifest.json: $(CFG)/sample_%.toml $(RUN)/gen/manifest.json | $(INSTALLED)
	$(VLTK) sample $(RUN)/gen $(@D) --config $< $(FORCE)

# ARGVLT's samples (samples-argvlt-t2i, ...) use the same sampling configs; make picks this rule by its shorter stem.
$(RUN)/samples-argvlt-%/manifest.json: $(CFG)/sample_%.toml $(RUN)/gen-argvlt/manifest.json | $(INSTALLED)
	$(VLTK) sample $(RUN)/gen-argvlt $(@D) --config $< $(FORCE)

$(RUN)/scores-%/manifest.json: $(CFG)/score.toml $(RUN)/samples-%/manifest.json | $(INSTALLED)
	$(VLTK) score $(RUN)/samples-$* $(@D) --config $< $(FORCE)

COMPARED := scores-t2i scores-argvlt-t2i scores-i2t scores-argvlt-i2t
$(RUN)/compare/manifest.json: $(foreach s,$(COMPARED),$(RUN)/$(s)/manifest.json) | $(INSTALLED)
	$(VLTK) compare $(addprefix $(RUN)/,$(COMPARED)) $(@D) --title "MAGVLT vs ARGVLT at equal training steps" $(FORCE)

# The classifier-free guidance sweep of demo-compare: MAGVLT and ARGVLT (equal steps, both trained with condition
# dropout) sampled at each w in GUIDANCE_WEIGHTS, one sample per prompt (no re-ranking: guidance alone), on
# SWEEP_COUNT val prompts (T2I) and images (I2T), each point its own samples and scores artifacts.
GUIDANCE_WEIGHTS ?= 0 1 2 3 5
SWEEP_COUNT ?= 256
GUIDANCE_SWEEP := $(foreach g,magvlt argvlt,$(foreach t,t2i i2t,$(foreach w,$(GUIDANCE_WEIGHTS),$(g)-$(t)-w$(w))))
GUIDANCE_SCORES := $(foreach p,$(GUIDANCE_SWEEP),$(RUN)/guidance-sweep/scores-$(p))
GEN_magvlt := gen
GEN_argvlt := gen-argvlt

# magvlt-t2i-w3 -> vltk sample build/demo/gen ... --config sample_t2i.toml --set magvlt.guidance=3 --set candidates=1
$(RUN)/guidance-sweep/samples-%/manifest.json: $(CFG)/sample_t2i.toml $(CFG)/sample_i2t.toml $(RUN)/gen/manifest.json $(RUN)/gen-argvlt/manifest.json | $(INSTALLED)
	$(VLTK) sample $(RUN)/$(GEN_$(word 1,$(subst -, ,$*))) $(@D) --config $(CFG)/sample_$(word 2,$(subst -, ,$*)).toml \
		--count $(SWEEP_COUNT) --set candidates=1 \
		--set $(word 1,$(subst -, ,$*)).guidance=$(patsubst w%,%,$(word 3,$(subst -, ,$*))) $(FORCE)

$(RUN)/guidance-sweep/scores-%/manifest.json: $(CFG)/score.toml $(RUN)/guidance-sweep/samples-%/manifest.json | $(INSTALLED)
	$(VLTK) score $(RUN)/guidance-sweep/samples-$* $(@D) --config $< $(FORCE)

$(RUN)/compare-guidance/manifest.json: $(addsuffix /manifest.json,$(GUIDANCE_SCORES)) | $(INSTALLED)
	$(VLTK) compare $(GUIDANCE_SCORES) $(@D) --title "Classifier-free guidance: MAGVLT vs ARGVLT at equal training steps, one sample per prompt, against w" $(FORCE)

# ---- make paper: MAGVLT-base on COCO-format data on GPUs, evaluated as the paper does (MAGVLT §4.1-4.3) -------------
#   make paper DATA=coco/dataset_coco.json [IMAGES=coco/images] [VQGAN=vqgan_imagenet_f16_16384/checkpoints/last.ckpt]
#              [CLIP=open_clip_model.safetensors] [INCEPTION=weights-inception-2015-12-05-6726825d.pth]
#              [LAUNCH="$(BIN)/accelerate launch --num_processes 8 -m vltk"] [PAPER_RUN=build/paper] [PAPER_CFG=stages/paper]
# shard (256 px) -> CLIP's BPE -> the released VQ-GAN (VQGAN=) or one trained here -> encode -> MAGVLT-base ->
# T2I on the val split's first captions + I2T on the Karpathy test split -> scores. LAUNCH runs the GPU stages
# (tokenize image, encode, train-gen, sample, score: each process takes its share, one artifact comes out).
# PAPER_<STAGE>_FLAGS append flags to one stage's command after its config (e.g. PAPER_GEN_FLAGS="--set
# train.grad_accum=4"); editing them does not rebuild anything by itself.
PAPER_RUN ?= build/paper
PAPER_CFG ?= stages/paper
# CLIP's bpe_simple_vocab_16e6.txt.gz, or clip: the copy inside the installed open_clip. PAPER_WORKERS: the shard
# stage's image decoding processes.
PAPER_BPE ?= clip
PAPER_WORKERS ?= 8
LAUNCH ?= $(VLTK)
# Per task: with CLIP (open_clip weights of OpenAI's ViT-B/32, the default clip_arch ViT-B-32-quickgelu; another
# arch goes in PAPER_SAMPLE_FLAGS and PAPER_SCORE_FLAGS as --set clip_arch=...), CLIP re-ranking of 32 (T2I) /
# 64 (I2T) candidates (MAGVLT §4.1) and the CLIP score; with INCEPTION, FID / IS of the T2I samples against their real
# images.
PAPER_SAMPLE_t2i = $(if $(CLIP),--set candidates=32 --set rerank=clip --set clip_weights=$(CLIP))
PAPER_SAMPLE_i2t = $(if $(CLIP),--set candidates=64 --set rerank=clip --set clip_weights=$(CLIP))
PAPER_SCORE_t2i = $(if $(INCEPTION),--set inception_weights=$(INCEPTION)) $(PAPER_SCORE_i2t)
PAPER_SCORE_i2t = $(if $(CLIP),--set clip_weights=$(CLIP))

.PHONY: paper paper-argvlt paper-eval

ifneq ($(filter paper paper-argvlt paper-eval,$(MAKECMDGOALS)),)
ifeq ($(strip $(DATA)),)
$(error make paper needs DATA=path/to/captions.json (Karpathy's dataset_coco.json, or a COCO captions JSON whose images carry a split); add IMAGES=folder when the images are not beside it)
endif
endif

paper: $(PAPER_RUN)/scores-t2i/manifest.json $(PAPER_RUN)/scores-i2t/manifest.json
	$(VLTK) info $(PAPER_RUN)/image-tok
	$(VLTK) info $(PAPER_RUN)/gen
	$(VLTK) info $(PAPER_RUN)/scores-t2i
	$(VLTK) info $(PAPER_RUN)/scores-i2t
	@echo "reports: $(PAPER_RUN)/scores-t2i/report.html $(PAPER_RUN)/scores-i2t/report.html"

# ARGVLT-base, the autoregressive baseline, on the same encoded data.
paper-argvlt: $(PAPER_RUN)/gen-argvlt/manifest.json
	$(VLTK) info $(PAPER_RUN)/gen-argvlt

# DATA is a prerequisite only when it exists, so that `make -n paper DATA=...` prints the chain for any path.
$(PAPER_RUN)/shards/manifest.json: $(PAPER_CFG)/shard.toml $(wildcard $(DATA)) | $(INSTALLED)
	$(VLTK) shard $(DATA) $(@D) --config $< $(if $(IMAGES),--images $(IMAGES)) --workers $(PAPER_WORKERS) $(PAPER_SHARD_FLAGS) $(FORCE)

$(PAPER_RUN)/text-tok/manifest.json: $(PAPER_CFG)/tokenize_text.toml | $(INSTALLED)
	$(VLTK) tokenize text $(PAPER_BPE) $(@D) --config $< $(PAPER_TEXT_FLAGS) $(FORCE)

ifdef VQGAN
$(PAPER_RUN)/image-tok/manifest.json: $(PAPER_RUN)/shards/manifest.json $(wildcard $(VQGAN)) | $(INSTALLED)
	$(VLTK) tokenize image $(PAPER_RUN)/shards $(@D) --from-taming $(VQGAN) $(PAPER_IMAGE_FLAGS) $(FORCE)
else
$(PAPER_RUN)/image-tok/manifest.json: $(PAPER_CFG)/tokenize_image.toml $(PAPER_RUN)/shards/manifest.json | $(INSTALLED)
	$(LAUNCH) tokenize image $(PAPER_RUN)/shards $(@D) --config $< $(PAPER_IMAGE_FLAGS) $(FORCE)
endif

$(PAPER_RUN)/encoded/manifest.json: $(PAPER_CFG)/encode.toml $(PAPER_RUN)/shards/manifest.json $(PAPER_RUN)/image-tok/manifest.json $(PAPER_RUN)/text-tok/manifest.json | $(INSTALLED)
	$(LAUNCH) encode $(PAPER_RUN)/shards $(PAPER_RUN)/image-tok $(PAPER_RUN)/text-tok $(@D) --config $< $(PAPER_ENCODE_FLAGS) $(FORCE)

$(PAPER_RUN)/gen/manifest.json: $(PAPER_CFG)/train_gen_magvlt.toml $(PAPER_RUN)/encoded/manifest.json | $(INSTALLED)
	$(LAUNCH) train-gen $(PAPER_RUN)/encoded $(@D) --config $< $(PAPER_GEN_FLAGS) $(FORCE)

$(PAPER_RUN)/gen-argvlt/manifest.json: $(PAPER_CFG)/train_gen_argvlt.toml $(PAPER_RUN)/encoded/manifest.json | $(INSTALLED)
	$(LAUNCH) train-gen $(PAPER_RUN)/encoded $(@D) --config $< $(PAPER_GEN_FLAGS) $(FORCE)

$(PAPER_RUN)/samples-%/manifest.json: $(PAPER_CFG)/sample_%.toml $(PAPER_RUN)/gen/manifest.json | $(INSTALLED)
	$(LAUNCH) sample $(PAPER_RUN)/gen $(@D) --config $< $(PAPER_SAMPLE_$*) $(PAPER_SAMPLE_FLAGS) $(FORCE)

$(PAPER_RUN)/scores-%/manifest.json: $(PAPER_CFG)/score.toml $(PAPER_RUN)/samples-%/manifest.json | $(INSTALLED)
	$(LAUNCH) score $(PAPER_RUN)/samples-$* $(@D) --config $< $(PAPER_SCORE_$*) $(PAPER_SCORE_FLAGS) $(FORCE)

# ---- make paper-eval: the released MAGVLT evaluated as make paper evaluates its own, without training -------------
#   make paper-eval DATA=coco/dataset_coco.json MAGVLT_CKPT=magvlt-it2it-base.ckpt
#                   VQGAN=vqgan_imagenet_f16_16384/checkpoints/last.ckpt [IMAGES=...] [CLIP=...] [INCEPTION=...] [LAUNCH=...]
# make paper's shard -> CLIP's BPE -> the released VQ-GAN -> encode (the same artifacts, shared with it) -> vltk import
# magvlt (kakaobrain/magvlt's magvlt-it2it-base.ckpt or -large.ckpt) -> gen-released -> T2I and I2T with the same
# sample configs and flags -> scores-released-t2i, scores-released-i2t.
ifneq ($(filter paper-eval,$(MAKECMDGOALS)),)
ifeq ($(strip $(MAGVLT_CKPT)),)
$(error make paper-eval needs MAGVLT_CKPT=path/to/magvlt-it2it-base.ckpt (or -large.ckpt, or the state dict re-saved from it))
endif
ifeq ($(strip $(VQGAN)),)
$(error make paper-eval needs VQGAN=path/to/vqgan_imagenet_f16_16384/checkpoints/last.ckpt: the released MAGVLT reads its codes)
endif
endif

paper-eval: $(PAPER_RUN)/scores-released-t2i/manifest.json $(PAPER_RUN)/scores-released-i2t/manifest.json
	$(VLTK) info $(PAPER_RUN)/gen-released
	$(VLTK) info $(PAPER_RUN)/scores-released-t2i
	$(VLTK) info $(PAPER_RUN)/scores-released-i2t
	@echo "reports: $(PAPER_RUN)/scores-released-t2i/report.html $(PAPER_RUN)/scores-released-i2t/report.html"

# One process: a key map and a file write.
$(PAPER_RUN)/gen-released/manifest.json: $(PAPER_RUN)/encoded/manifest.json $(wildcard $(MAGVLT_CKPT)) | $(INSTALLED)
	$(VLTK) import magvlt $(MAGVLT_CKPT) $(PAPER_RUN)/encoded $(@D) $(FORCE)

# These rules win over make paper's samples-% and scores-% by their shorter stem (t2i, i2t).
$(PAPER_RUN)/samples-released-%/manifest.json: $(PAPER_CFG)/sample_%.toml $(PAPER_RUN)/gen-released/manifest.json | $(INSTALLED)
	$(LAUNCH) sample $(PAPER_RUN)/gen-released $(@D) --config $< $(PAPER_SAMPLE_$*) $(PAPER_SAMPLE_FLAGS) $(FORCE)

$(PAPER_RUN)/scores-released-%/manifest.json: $(PAPER_CFG)/score.toml $(PAPER_RUN)/samples-released-%/manifest.json | $(INSTALLED)
	$(LAUNCH) score $(PAPER_RUN)/samples-released-$* $(@D) --config $< $(PAPER_SCORE_$*) $(PAPER_SCORE_FLAGS) $(FORCE)

# ---- make paper-givt: GIVT Default, class-conditional, on ImageNet-style data (GIVT §4.1, App. B) ----------------
#   make paper-givt DATA=imagenet.jsonl [IMAGES=...] [GIVT=causal|maskgit] [GIVT_RUN=build/givt] [LAUNCH=...]
# Every record needs its class in a "label" column / field (an id 0..999) and a caption (e.g. the class name: vltk's
# sources skip records without one). shard (256 px) -> the beta-VAE (f16, d = 16) -> encode (no MixSel) -> GIVT-Causal
# or GIVT-MaskGIT Default -> 50,000 class-conditional samples at the paper's t and w.
GIVT ?= causal
GIVT_RUN ?= build/givt
GIVT_SAMPLE_maskgit = --set givt.cfg_weight=0.1
.PHONY: paper-givt

ifneq ($(filter paper-givt,$(MAKECMDGOALS)),)
ifeq ($(strip $(DATA)),)
$(error make paper-givt needs DATA=path/to/records (a JSONL / TSV / folder whose records carry a label and a caption))
endif
endif

paper-givt: $(GIVT_RUN)/samples-$(GIVT)/manifest.json
	$(VLTK) info $(GIVT_RUN)/gen-$(GIVT)
	$(VLTK) info $(GIVT_RUN)/samples-$(GIVT)

$(GIVT_RUN)/shards/manifest.json: $(PAPER_CFG)/shard.toml $(wildcard $(DATA)) | $(INSTALLED)
	$(VLTK) shard $(DATA) $(@D) --config $< $(if $(IMAGES),--images $(IMAGES)) --workers $(PAPER_WORKERS) $(FORCE)

$(GIVT_RUN)/text-tok/manifest.json: $(PAPER_CFG)/tokenize_text.toml | $(INSTALLED)
	$(VLTK) tokenize text $(PAPER_BPE) $(@D) --config $< $(FORCE)

$(GIVT_RUN)/image-tok/manifest.json: $(PAPER_CFG)/tokenize_image_vae.toml $(GIVT_RUN)/shards/manifest.json | $(INSTALLED)
	$(LAUNCH) tokenize image $(GIVT_RUN)/shards $(@D) --config $< $(FORCE)

$(GIVT_RUN)/encoded/manifest.json: $(PAPER_CFG)/encode.toml $(GIVT_RUN)/image-tok/manifest.json $(GIVT_RUN)/text-tok/manifest.json | $(INSTALLED)
	$(LAUNCH) encode $(GIVT_RUN)/shards $(GIVT_RUN)/image-tok $(GIVT_RUN)/text-tok $(@D) --config $< --set mixsel_pairs=0 $(FORCE)

$(GIVT_RUN)/gen-%/manifest.json: $(PAPER_CFG)/train_gen_givt_%.toml $(GIVT_RUN)/encoded/manifest.json | $(INSTALLED)
	$(LAUNCH) train-gen $(GIVT_RUN)/encoded $(@D) --config $< $(FORCE)

$(GIVT_RUN)/samples-%/manifest.json: $(PAPER_CFG)/sample_givt_class.toml $(GIVT_RUN)/gen-%/manifest.json | $(INSTALLED)
	$(LAUNCH) sample $(GIVT_RUN)/gen-$* $(@D) --config $< $(GIVT_SAMPLE_$*) $(FORCE)

# ---- make paper-uvim: GIVT's UViM panoptic segmentation and depth estimation (GIVT §4.2, §5.2, Tab. 3) ----------
#   make paper-uvim DATA=coco/annotations/panoptic_train2017.json [IMAGES=coco/train2017] [DEPTH_DATA=nyu/pairs.jsonl]
#                   [UVIM_TASKS="panoptic depth"] [UVIM_RUN=build/uvim] [LAUNCH=...] [UVIM_<STAGE>_FLAGS=...]
# Per task: shard at 512 px (COCO panoptic 2017 through `vltk shard` of its panoptic JSON; NYU depth pairs) -> the
# label VAE (stages/paper/tokenize_label_<task>.toml) -> GIVT-Causal with a ViT-L/16 encoder
# (train_gen_givt_uvim_<task>.toml) -> beam-search samples of the val split (sample_dense_<task>.toml) -> PQ or depth
# errors. UVIM_<STAGE>_FLAGS (SHARD, LABEL, GEN, SAMPLE) append flags to a stage's command.
UVIM_RUN ?= build/uvim
UVIM_TASKS ?= panoptic
DATA_panoptic = $(DATA)
DATA_depth = $(or $(DEPTH_DATA),$(DATA))
.PHONY: paper-uvim

ifneq ($(filter paper-uvim,$(MAKECMDGOALS)),)
ifeq ($(strip $(DATA)),)
$(error make paper-uvim needs DATA=path/to/panoptic_train2017.json (COCO panoptic) or NYU depth pairs (with UVIM_TASKS=depth))
endif
endif

paper-uvim: $(foreach t,$(UVIM_TASKS),$(UVIM_RUN)/scores-$(t)/manifest.json)
	$(foreach t,$(UVIM_TASKS),$(VLTK) info $(UVIM_RUN)/scores-$(t);)

$(UVIM_RUN)/shards-%/manifest.json: $(PAPER_CFG)/shard.toml $(wildcard $(DATA)) $(wildcard $(DEPTH_DATA)) | $(INSTALLED)
	$(VLTK) shard $(DATA_$*) $(@D) --config $< --size 512 $(if $(IMAGES),--images $(IMAGES)) --workers $(PAPER_WORKERS) $(UVIM_SHARD_FLAGS) $(FORCE)

$(UVIM_RUN)/label-tok-%/manifest.json: $(PAPER_CFG)/tokenize_label_%.toml $(UVIM_RUN)/shards-%/manifest.json | $(INSTALLED)
	$(LAUNCH) tokenize label $(UVIM_RUN)/shards-$* $(@D) --config $< $(UVIM_LABEL_FLAGS) $(FORCE)

$(UVIM_RUN)/gen-%/manifest.json: $(PAPER_CFG)/train_gen_givt_uvim_%.toml $(UVIM_RUN)/label-tok-%/manifest.json | $(INSTALLED)
	$(LAUNCH) train-gen $(UVIM_RUN)/label-tok-$* $(@D) --config $< $(UVIM_GEN_FLAGS) $(FORCE)

$(UVIM_RUN)/samples-%/manifest.json: $(PAPER_CFG)/sample_dense_%.toml $(UVIM_RUN)/gen-%/manifest.json | $(INSTALLED)
	$(LAUNCH) sample $(UVIM_RUN)/gen-$* $(@D) --config $< $(UVIM_SAMPLE_FLAGS) $(FORCE)

$(UVIM_RUN)/scores-%/manifest.json: $(PAPER_CFG)/score.toml $(UVIM_RUN)/samples-%/manifest.json | $(INSTALLED)
	$(VLTK) score $(UVIM_RUN)/samples-$* $(@D) --config $< $(FORCE)

bench: $(INSTALLED)
	mkdir -p build/bench
	$(BIN)/python -m benchmarks.run --out build/bench/results.json

clean:
	rm -rf build
