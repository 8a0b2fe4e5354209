#!/usr/bin/env bash
# Every stage after `vltk shard`, on any shards artifact: from here on nothing depends on where the data came from.
#
#   examples/pipeline.sh WORK     # reads WORK/shards; writes WORK/text-tok, image-tok, encoded, gen, samples-*, scores-*
#
# SCALE=tiny (the default) runs toy sizes in about a minute on a CPU: it shows that the stages connect, not what a
# trained model does. SCALE=demo runs the CPU demo's recipes (stages/demo/*.toml; 15-20 minutes on 4,000 images of
# 32 px). On real data, write a config per stage; at the paper's scale that is, for example:
#
#   vltk tokenize text clip WORK/text-tok              # CLIP's vocabulary (or train a BPE: --vocab-size 16384)
#   vltk tokenize image WORK/shards WORK/image-tok --kind vqgan        # taming's f16 VQ-GAN (the defaults)
#   vltk encode WORK/shards WORK/image-tok WORK/text-tok WORK/encoded
#   accelerate launch --num_processes 8 -m vltk train-gen WORK/encoded WORK/gen --config stages/paper/train_gen_magvlt.toml
#   vltk sample WORK/gen WORK/samples-i2t --task i2t --count 5000
#   vltk score WORK/samples-i2t WORK/scores-i2t
#
# Re-running does only what is missing: a finished stage with the same config and inputs is a no-op.
set -euo pipefail

WORK=${1:?usage: examples/pipeline.sh WORK (a folder holding WORK/shards)}
SCALE=${SCALE:-tiny}
DEMO=$(cd "$(dirname "$0")/../stages/demo" && pwd)

case $SCALE in
  tiny)
    TEXT_TOK=(--vocab-size 600 --context-length 24)
    # A two-level CNN (16 px -> an 8x8 grid) with 64 codes, trained for 30 steps.
    IMAGE_TOK=(--steps 30 --set model.encoder.channels=8 --set "model.encoder.channel_mult=[1, 2]"
               --set model.encoder.num_res_blocks=1 --set "model.encoder.attn_resolutions=[]"
               --set model.encoder.z_channels=8 --set model.quantizer.codebook_size=64
               --set model.quantizer.code_dim=4 --set loss.disc_weight=0 --set train.batch_size=8
               --set train.log_every=5 --set optim.warmup_steps=5 --set recon_images=4)
    ENCODE=(--batch-size 8)
    TRAIN=(--size tiny --steps 20 --batch-size 8 --set model.width=32 --set model.depth=2 --set model.heads=2
           --set train.log_every=5 --set optim.warmup_steps=5 --set data.bpe_dropout=0.0)
    SAMPLE=(--count 4 --set magvlt.image_steps=4 --set magvlt.text_steps=4)
    SCORE=(--no-meteor)  # METEOR starts a Java process (~8 s); the PTB tokenizer of the caption metrics needs Java too
    ;;
  demo)
    TEXT_TOK=(--config "$DEMO/tokenize_text.toml")
    IMAGE_TOK=(--config "$DEMO/tokenize_image.toml")
    ENCODE=(--config "$DEMO/encode.toml")
    TRAIN=(--config "$DEMO/train_gen.toml")
    SAMPLE=(--count 256 --set batch_size=64)
    SCORE=(--config "$DEMO/score.toml")
    ;;
  *)
    echo "SCALE must be tiny or demo, got '$SCALE'" >&2
    exit 2
    ;;
esac

vltk tokenize text "$WORK/shards" "$WORK/text-tok" "${TEXT_TOK[@]}"
vltk tokenize image "$WORK/shards" "$WORK/image-tok" --kind vqgan "${IMAGE_TOK[@]}"
vltk encode "$WORK/shards" "$WORK/image-tok" "$WORK/text-tok" "$WORK/encoded" "${ENCODE[@]}"
vltk train-gen "$WORK/encoded" "$WORK/gen" --model magvlt "${TRAIN[@]}"
for task in t2i i2t; do  # prompts and images: the first --count records of the val split
  vltk sample "$WORK/gen" "$WORK/samples-$task" --task "$task" "${SAMPLE[@]}"
  vltk score "$WORK/samples-$task" "$WORK/scores-$task" "${SCORE[@]}"
done
echo "reports: $WORK/scores-t2i/report.html $WORK/scores-i2t/report.html"
