#!/usr/bin/env bash
# The whole pipeline on the built-in sample data, on a 2-core CPU in 4 to 10 minutes, nothing to download but
# packages: set up .venv, render the sample zips, train from scratch at a reduced size, evaluate on the
# Eigen-format test zip beside a constant-depth baseline, and predict the depth of a picture; everything
# lands in runs/quickstart (checkpoints, training curves and log, example pictures, depth maps, a point cloud).
# With --long it trains five times as long (2000 steps, 15 to 20 minutes on a fast 2-core CPU), long enough
# for furniture to show, into runs/quickstart_long.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    "") RUN=runs/quickstart EPOCHS=4 ;;
    --long) RUN=runs/quickstart_long EPOCHS=20 ;;
    *) echo "scripts/quickstart.sh: unknown argument '$1' (the only option is --long)" >&2; exit 2 ;;
esac
# Each stage's heading says how long the script has run, so a slow stage shows where the minutes go.
stage() { echo "== [$((SECONDS / 60)) min $((SECONDS % 60)) s] $*"; }
stage "setting up .venv (PyTorch and friends, about 5 GB the first time)"
python3 -m venv .venv
.venv/bin/pip install --quiet -r requirements.txt
PY=.venv/bin/python

stage "rendering the sample data into data/sample"
# 320x240 pictures render four times faster than NYU's 640x480, and the network sees 128x96 anyway.
TRAIN_IMAGES=800 BATCH_SIZE=8
$PY sample_data.py --out data/sample --train_images $TRAIN_IMAGES --test_images 100 --width 320 --height 240

# Not the paper's recipe, which is train.py's default: from scratch, in a few hundred steps, a warmed-up
# rate ten times the paper's that decays to 0 learns far more (docs/training.md#the-quick-starts-recipe).
stage "training on the CPU: 96x128 input, half-width decoder, encoder from scratch," \
    "$((EPOCHS * TRAIN_IMAGES / BATCH_SIZE)) steps"
$PY train.py --data_dir data/sample/nyu_data.zip --batch_size $BATCH_SIZE --checkpoint_dir $RUN/checkpoints --epochs $EPOCHS \
    --input_size 96 128 --decoder_width 0.5 --decoder_padding replicate --no_pretrained --lr 7e-4 --lr_schedule cosine --warmup_steps 30 \
    --log_interval 25

stage "evaluating the last epoch on the Eigen-format test zip"
$PY evaluate.py --model $RUN/checkpoints/last.pth --data data/sample/nyu_test.zip --output_dir $RUN

stage "for comparison: predicting the training set's mean depth everywhere"
$PY -m scripts.constant_baseline --train_data data/sample/nyu_data.zip --data data/sample/nyu_test.zip --output_dir $RUN

stage "predicting the depth of a picture"
$PY evaluate.py --model $RUN/checkpoints/last.pth --img data/sample/example.png --output_dir $RUN \
    --colorbar --side_by_side --ply

stage "done. Outputs:"
echo "   checkpoints      $RUN/checkpoints/best.pth, last.pth"
echo "   training         $RUN/checkpoints/curves.png (curves), log.csv (per epoch), predictions/epoch_NNN.png"
echo "   metrics          $RUN/metrics.json (model), $RUN/baseline_metrics.json (constant depth)"
echo "   test examples    $RUN/examples/NNNN.png (input | ground truth | prediction | error)"
echo "   depth of picture $RUN/example_side_by_side.png (picture | depth), example_depth.png (colour),"
echo "                    example_depth_mm.png (16-bit, mm), example_depth_m.npy (metres), example.ply (3-D points)"
