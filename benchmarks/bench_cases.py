"""The benchmark's cases, shared by the driver (bench_speed.py) and its children (bench_worker.py).

Standard library only: the driver imports this and must load neither NumPy nor either measured
library (it only starts processes and collects their JSON).
"""
from __future__ import annotations

JSON_PREFIX = "BENCH_JSON "  # a child's result: this prefix, then one line of JSON on stdout

CONV_CASES = {
    # letter: (title, (in, out, H=W, kernel, stride, pad, batch))
    "a": ("1->6 28x28 k5 p2 b64", (1, 6, 28, 5, 1, 2, 64)),
    "b": ("6->16 14x14 k5 b64", (6, 16, 14, 5, 1, 0, 64)),
    "c": ("32->64 32x32 k3 p1 b64", (32, 64, 32, 3, 1, 1, 64)),
    "d": ("64->128 16x16 k3 p1 b64", (64, 128, 16, 3, 1, 1, 64)),
    "e": ("3->64 224x224 k7 s2 p3 b8", (3, 64, 224, 7, 2, 3, 8)),
}
CONV_DIRECTIONS = ("fwd", "fwd+bwd")

SGEMM_SIZE = 2048  # square float32 matmul whose speed is the machine's practical BLAS peak
POOL_SHAPE = (64, 64, 32, 32)  # max-pool 2x2 stride 2 input, (N, C, H, W)
STEP_BATCH = 128  # LeNet-5 and ResNet-20 training step and epoch batch size
EPOCH_IMAGES = 60000  # images per epoch, (1, 28, 28) each
MEMORY_CASE = (3, 64, 224, 7, 2, 3, 64)  # layer (e) at batch 64, for the workspace limits

#: convtrain's state_dict names and shapes of configs/model/lenet5.yaml, (F, C, kh, kw) for
#: convolutions and (out_features, in_features) for dense layers, as in torch.
LENET5_PARAMS = {
    "conv1": (6, 1, 5, 5),
    "conv2": (16, 6, 5, 5),
    "fc1": (120, 400),
    "fc2": (84, 120),
    "fc3": (10, 84),
}


#: ResNet-20 of configs/model/resnet20.yaml on 28x28x1 images: the stem's filters, then
#: (filters, stride of the first block) per stage of RESNET20_BLOCKS basic blocks; a stage that
#: changes the stride or the channel count projects its first block's shortcut (1x1 conv + BN).
RESNET20_STEM = 16
RESNET20_STAGES = ((16, 1), (32, 2), (64, 2))
RESNET20_BLOCKS = 3
RESNET20_CLASSES = 10


def resnet20_state_shapes(channels: int = 1) -> dict[str, tuple[int, ...]]:
    """convtrain's ``state_dict`` names and shapes of ResNet-20 (every entry: conv weights
    ``(F, C, kh, kw)`` without biases, batch-norm weight/bias/running_mean/running_var ``(F,)``,
    dense ``(out, in)`` and bias), in the model's order. The torch side maps them to its own
    module names; the convtrain side loads them strictly, so a tree whose resnet20 config
    differs from this network fails with the names that differ."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(conv: str, bn: str, filters: int, inputs: int, kernel: int) -> None:
        shapes[f"{conv}.weight"] = (filters, inputs, kernel, kernel)
        for key in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{bn}.{key}"] = (filters,)

    conv_bn("conv1", "bn1", RESNET20_STEM, channels, 3)
    inputs = RESNET20_STEM
    for stage, (filters, stride) in enumerate(RESNET20_STAGES, 1):
        for block in range(1, RESNET20_BLOCKS + 1):
            prefix = f"stage{stage}.block{block}."
            conv_bn(prefix + "conv1", prefix + "bn1", filters, inputs, 3)
            conv_bn(prefix + "conv2", prefix + "bn2", filters, filters, 3)
            if block == 1 and (stride != 1 or inputs != filters):
                conv_bn(prefix + "proj", prefix + "proj_bn", filters, inputs, 1)
            inputs = filters
    shapes["fc.weight"] = (RESNET20_CLASSES, inputs)
    shapes["fc.bias"] = (RESNET20_CLASSES,)
    return shapes


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def conv_case_id(letter: str, direction: str) -> str:
    return f"conv-{letter}-{direction}"


def conv_forward_flops(letter: str) -> float:
    """Multiply-adds x2 of one forward pass of conv case ``letter``."""
    cin, cout, hw, k, s, p, n = CONV_CASES[letter][1]
    out = conv_output_size(hw, k, s, p)
    return 2.0 * n * cout * out * out * cin * k * k


def timed_case_ids(parts: set[str], conv_letters: str) -> list[str]:
    """The cases that are timed as blocks of calls, in running order, for ``--only`` parts."""
    ids = []
    if "gemm" in parts or "conv" in parts:  # conv rows print their share of the sgemm peak
        ids.append("gemm")
    if "conv" in parts:
        ids += [conv_case_id(letter, d) for letter in CONV_CASES if letter in conv_letters
                for d in CONV_DIRECTIONS]
    if "pool" in parts:
        ids.append("pool")
    if "step" in parts:
        ids.append("step")
    if "resnet20" in parts:
        ids.append("resnet20")
    return ids


def case_title(case_id: str) -> str:
    if case_id == "gemm":
        return f"sgemm {SGEMM_SIZE}^3 float32"
    if case_id.startswith("conv-"):
        _, letter, direction = case_id.split("-", 2)
        return f"conv {letter} {CONV_CASES[letter][0]} {direction}"
    if case_id == "pool":
        return "maxpool 2x2 ({},{},{},{}) fwd+bwd".format(*POOL_SHAPE)
    if case_id == "step":
        return f"LeNet-5 train step b{STEP_BATCH}"
    if case_id == "resnet20":
        return f"ResNet-20 train step b{STEP_BATCH} 28x28x1"
    raise KeyError(case_id)


def case_images(case_id: str) -> int | None:
    """Images one call of a training-step case trains on (for images/s), else None."""
    return STEP_BATCH if case_id in ("step", "resnet20") else None


def case_flops(case_id: str) -> float | None:
    """FLOPs of one call (a fwd+bwd counts 3 forwards), or None where FLOPs mean nothing."""
    if case_id == "gemm":
        return 2.0 * SGEMM_SIZE**3
    if case_id.startswith("conv-"):
        _, letter, direction = case_id.split("-", 2)
        return conv_forward_flops(letter) * (1 if direction == "fwd" else 3)
    return None
