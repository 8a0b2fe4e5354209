#!/usr/bin/env bash
# Bring your own COCO-format data through every stage: a captions JSON + its image folder -> shards -> ... -> scores.
#
#   examples/bring_your_own_coco.sh [WORK]          # default WORK: build/byo-coco; SCALE=tiny|demo (examples/pipeline.sh)
#
# With real COCO, skip step 1 and point step 2 at your files; the image folder is found beside the JSON when it is
# named like it (annotations/captions_train2014.json -> train2014/), else give --images:
#
#   vltk shard data/coco/annotations/captions_train2014.json WORK/shards --images data/coco/train2014 --size 256
#
# Karpathy's dataset_coco.json (with its own train/val/test split) works the same way. Large sets: --workers N decodes
# in parallel, and `--part i/n` lets n machines shard one slice each into the same artifact.
set -euo pipefail

WORK=${1:-build/byo-coco}
SCALE=${SCALE:-tiny}
case $SCALE in  # the size of the stand-in data: 32 scenes of 16 px, or the demo's 4,000 of 32 px
  tiny) SYNTH=(--count 32 --size 16); SIZE=16 ;;
  demo) SYNTH=(--config "$(dirname "$0")/../stages/demo/synth.toml"); SIZE=32 ;;
  *) echo "SCALE must be tiny or demo, got '$SCALE'" >&2; exit 2 ;;
esac
COCO=$WORK/coco

# 1. A small COCO-format data set, made offline from the built-in shapes renders, laid out as COCO ships:
#    coco/annotations/captions_train2014.json  {"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}
#    coco/train2014/COCO_train2014_000000000000.png ...
if [ ! -f "$COCO/annotations/captions_train2014.json" ]; then  # made once: the shards' manifest fingerprints it
  vltk synth shapes "$WORK/raw" "${SYNTH[@]}"
  python3 - "$WORK/raw" "$COCO" <<'PY'
import json, shutil, sys
from pathlib import Path

raw, coco = Path(sys.argv[1]), Path(sys.argv[2])
(coco / "annotations").mkdir(parents=True, exist_ok=True)
(coco / "train2014").mkdir(exist_ok=True)
images, annotations = [], []
for n, line in enumerate((raw / "captions.jsonl").read_text().splitlines()):
    record = json.loads(line)
    name = f"COCO_train2014_{n:012d}.png"
    shutil.copy(raw / record["image"], coco / "train2014" / name)
    images.append({"id": n, "file_name": name})
    annotations += [{"id": len(annotations), "image_id": n, "caption": c} for c in record["captions"]]
(coco / "annotations" / "captions_train2014.json").write_text(json.dumps({"images": images, "annotations": annotations}))
PY
fi

# 2. Shard: validate, resize to SIZE px and split train/val (a COCO captions file has no split of its own, so a hash of
#    each image's key sends --val-fraction of them to val). PNG keeps the tiny renders lossless; photos want JPEG.
vltk shard "$COCO/annotations/captions_train2014.json" "$WORK/shards" --size "$SIZE" --image-format png \
  --val-fraction 0.2

# 3. Every other stage: tokenizers, encoding, the generator, samples and scores.
"$(dirname "$0")/pipeline.sh" "$WORK"
