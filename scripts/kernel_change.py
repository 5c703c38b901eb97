"""How much a run's kernel pictures changed: for each conv layer of a finished run, between its
initial kernels (``RUN_DIR/initial_kernels.npz``) and a checkpoint's (default: the last):

- ``relative_l2``: ``||W - W0|| / ||W0||`` over the whole layer;
- ``pixel_change``: the mean absolute change of the tile pixels of ``kernels/<conv>`` under
  ``logger.kernel_scaling=fixed`` (limit = margin x max |W0|), per RGB channel, out of 255:
  what a user sees change between step 0 and that epoch (the grid's frame and labels, which
  do not change, are left out);
- ``beyond_limit``: the fraction of weights drawn at full colour because |w| > the limit.

Usage::

    python scripts/kernel_change.py RUN_DIR [--checkpoint last|best] [--margin 1.0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from convtrain.training.checkpoint import load_checkpoint
from convtrain.visuals.grids import kernel_colours, rgb_colours
from convtrain.visuals.initial_kernels import FILE_NAME, fixed_limit


def layer_change(initial: np.ndarray, current: np.ndarray, margin: float) -> dict[str, float]:
    w0, w = np.asarray(initial, np.float64), np.asarray(current, np.float64)
    limit = fixed_limit(w0, margin)
    rgb = w.shape[1] == 3  # a first layer on RGB images: colour tiles, 127.5 * (1 + v)

    def pixels(x: np.ndarray) -> np.ndarray:
        if rgb:
            return rgb_colours(x.transpose(0, 2, 3, 1), limit).astype(np.float64)
        return kernel_colours(x, limit, "diverging").astype(np.float64)

    return {"relative_l2": float(np.linalg.norm(w - w0) / np.linalg.norm(w0)),
            "pixel_change": float(np.abs(pixels(w) - pixels(w0)).mean()),
            "beyond_limit": float((np.abs(w) > limit).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default="last", choices=("last", "best"))
    parser.add_argument("--margin", type=float, default=1.0)
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.run_dir / "checkpoints" / args.checkpoint)
    with np.load(args.run_dir / FILE_NAME) as stored:
        print(f"{args.run_dir}: epoch {int(stored['__epoch__'])} -> {args.checkpoint} "
              f"checkpoint (epoch {checkpoint.meta['epoch']}), fixed limit {args.margin} x max|W0|")
        for name in stored.files:
            if name == "__epoch__":
                continue
            change = layer_change(stored[name], checkpoint.model_state[f"{name}.weight"],
                                  args.margin)
            print(f"  {name}: relative L2 change {change['relative_l2']:.1%}, mean pixel "
                  f"change {change['pixel_change']:.1f}/255, beyond the limit "
                  f"{change['beyond_limit']:.1%}")


if __name__ == "__main__":
    main()
