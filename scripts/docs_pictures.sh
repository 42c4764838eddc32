#!/usr/bin/env bash
# Regenerate docs/sample/, the README's qualitative pictures: the quick start's model (built-in sample
# data, not NYU) on three test pictures, its training curves and the depth of the example picture.
# Runs the quick start first if its model is not there. With --long: the same for `quickstart.sh --long`'s
# model, into docs/sample_long/ (docs/training.md shows them).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    "") RUN=runs/quickstart OUT=docs/sample ;;
    --long) RUN=runs/quickstart_long OUT=docs/sample_long ;;
    *) echo "scripts/docs_pictures.sh: unknown argument '$1' (the only option is --long)" >&2; exit 2 ;;
esac
[ -f $RUN/checkpoints/last.pth ] || bash scripts/quickstart.sh "$@"
PY=.venv/bin/python
rm -rf $OUT
$PY evaluate.py --model $RUN/checkpoints/last.pth --data data/sample/nyu_test.zip --num_examples 3 \
    --output_dir $OUT --markdown
$PY evaluate.py --model $RUN/checkpoints/last.pth --img data/sample/example.png --output_dir $OUT --colorbar --side_by_side
rm $OUT/examples/????.png $OUT/example_depth*.png $OUT/example_depth_m.npy  # the README shows the tiles
cp $RUN/checkpoints/curves.png $OUT/curves.png
[ "$OUT" = docs/sample ] && $PY -m pip install --quiet -r requirements-video.txt && \
    $PY -m scripts.video_example --model $RUN/checkpoints/last.pth --out $OUT/video.gif
echo "== docs pictures in $OUT"
