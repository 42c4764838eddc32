"""The machinery behind the scripts at the top: the evaluation protocol, depth targets, the
training loop's parts, prediction, deployment, videos, pictures, the authors' weights, KITTI and
NYU's own files. docs/architecture.md draws how they fit."""
