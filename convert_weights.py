"""Convert the DenseDepth authors' Keras model (nyu.h5, kitti.h5) into a checkpoint of this project.

    python convert_weights.py nyu.h5 nyu.pth
    python convert_weights.py kitti.h5 kitti.pth --dataset kitti

The file is read with h5py alone: nothing in it is run, and neither Keras nor TensorFlow is
needed. What it holds (decoder width, activations, the end of the trunk, upsampling, BatchNorm
epsilon) is read from its own model_config and weight shapes; see densedepth/weights.py. The checkpoint
holds the model's weights and settings, not a training run: evaluate.py --model takes it (or the
.h5 itself), and train.py --weights fine-tunes from it.
"""

import argparse
from pathlib import Path

from densedepth.weights import DATASETS, describe, keras_checkpoint
from model import count_parameters, model_from_checkpoint
from utils import UserError, run_main, save_checkpoint, writable_dir


def get_args_parser():
    parser = argparse.ArgumentParser(description="Convert the DenseDepth authors' Keras .h5 into a checkpoint")
    parser.add_argument("h5", help="the authors' Keras model: nyu.h5 or kitti.h5")
    parser.add_argument("output", help="checkpoint to write, e.g. nyu.pth")
    parser.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        help="what the model was trained on, which sets its depth range (nyu: 0.1 to 10 m, kitti: 1 to 80 m); "
        "default: kitti if the file's name holds 'kitti', else nyu",
    )
    return parser


def main(args):
    output = Path(args.output)
    if output.resolve() == Path(args.h5).resolve():
        raise UserError(f"the output {output} is the .h5 itself; name another file, such as {output.stem}.pth")
    writable_dir(output.parent, "the output's folder")
    checkpoint = keras_checkpoint(args.h5, args.dataset)
    print(describe(checkpoint))
    model = model_from_checkpoint(checkpoint, args.h5)  # checks every weight's name and shape
    checkpoint["model"] = model.state_dict()
    save_checkpoint(checkpoint, output)
    print(f"wrote {output}: {count_parameters(model) / 1e6:.2f} M parameters")


if __name__ == "__main__":
    run_main(main, get_args_parser().parse_args())
