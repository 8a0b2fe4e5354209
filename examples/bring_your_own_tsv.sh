#!/usr/bin/env bash
# Bring your own TSV of (image path, caption) rows through every stage: a table + images -> shards -> ... -> scores.
#
#   examples/bring_your_own_tsv.sh [WORK]           # default WORK: build/byo-tsv; SCALE=tiny|demo (examples/pipeline.sh)
#
# With your own table, skip step 1. It needs a header; the image column is found by name (image, image_path, filepath,
# file, path, filename) and the caption column too (caption, text, title, captions), or name them with --image-column /
# --caption-column. Image paths are relative to the table's folder, or to --images. Consecutive rows of one image
# (one caption a row, as Flickr30k ships) become one record with all its captions; a `split` column (train / val /
# test) is used as the split, else --val-fraction. A .csv works the same way:
#
#   vltk shard data/cc3m/train.tsv WORK/shards --image-column filepath --caption-column title --size 256 --workers 8
set -euo pipefail

WORK=${1:-build/byo-tsv}
SCALE=${SCALE:-tiny}
case $SCALE in  # the size of the stand-in data: 32 scenes of 16 px, or the demo's 4,000 of 32 px
  tiny) SYNTH=(--count 32 --size 16); SIZE=16 ;;
  demo) SYNTH=(--config "$(dirname "$0")/../stages/demo/synth.toml"); SIZE=32 ;;
  *) echo "SCALE must be tiny or demo, got '$SCALE'" >&2; exit 2 ;;
esac
TSV=$WORK/tsv

# 1. A small TSV data set, made offline from the built-in shapes renders: tsv/captions.tsv with the columns
#    image (tsv/images/...), caption (one per row) and split (the renders' own: its val holds held-out combinations).
if [ ! -f "$TSV/captions.tsv" ]; then  # made once: the shards' manifest fingerprints it
  vltk synth shapes "$WORK/raw" "${SYNTH[@]}"
  python3 - "$WORK/raw" "$TSV" <<'PY'
import csv, json, shutil, sys
from pathlib import Path

raw, tsv = Path(sys.argv[1]), Path(sys.argv[2])
(tsv / "images").mkdir(parents=True, exist_ok=True)
with open(tsv / "captions.tsv", "w", newline="") as f:
    table = csv.writer(f, delimiter="\t")
    table.writerow(["image", "caption", "split"])
    for line in (raw / "captions.jsonl").read_text().splitlines():
        record = json.loads(line)
        shutil.copy(raw / record["image"], tsv / record["image"])
        table.writerows([record["image"], caption, record["split"]] for caption in record["captions"])
PY
fi

# 2. Shard: validate, resize to SIZE px, keep the table's split. PNG keeps the tiny renders lossless.
vltk shard "$TSV/captions.tsv" "$WORK/shards" --size "$SIZE" --image-format png

# 3. Every other stage: tokenizers, encoding, the generator, samples and scores.
"$(dirname "$0")/pipeline.sh" "$WORK"
