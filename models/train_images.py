#!/usr/bin/env python3
"""Trains the example surface-inspection model: a small CNN that scores a part's camera image for defects.

    pip install -r models/requirements.txt
    python3 models/train_images.py     # writes models/quality/surface.{onnx,toml}, surface.check/, SURFACE_CARD.md

The images are synthetic and deterministic by seed: 64×64 grayscale textures like machined metal (low-frequency
shading, fine grain, noise), and on half of them one defect: a scratch (a thin line, 15–45 px, bright or dark),
pits (1–3 small dark discs) or a stain (a soft blob, low contrast). The network is one 5×5 convolution with 8
filters and ReLU, global max and mean pooling (16 values), and a logistic output: small enough for a gateway,
and its max pooling finds a defect anywhere in the image. It is trained here with numpy (mini-batch Adam on the
cross-entropy; the gradients are written out below), because a deep-learning framework would be a gigabyte of
dependencies for a model of 217 weights. It is exported as ONNX (Conv, Relu, GlobalMaxPool, GlobalAveragePool,
Concat, Flatten, Gemm, Sigmoid) and checked against onnxruntime. A few held-out images are written as PNG files
with onnxruntime's outputs, so that a Rust test decodes them as the agent does and checks tract against them.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from sklearn.metrics import roc_auc_score

HERE = Path(__file__).resolve().parent
SIZE = 64
KERNEL = 5
FILTERS = 8
KINDS = ["good", "scratch", "pits", "stain"]


def texture(rng: np.random.Generator) -> np.ndarray:
    """A machined-metal-like background in 0..255."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    img = 120 + 40 * rng.uniform(-1, 1) * x + 30 * rng.uniform(-1, 1) * y
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 3), rng.uniform(0.5, 3), rng.uniform(0, 2 * np.pi)
        img += 8 * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
    grain = rng.normal(0, 1, (SIZE, SIZE))
    grain = (grain + np.roll(grain, 1, axis=1) + np.roll(grain, 2, axis=1)) / 3  # brushed along x
    return img + 10 * grain + rng.normal(0, 3, (SIZE, SIZE))


def defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    if kind == "scratch":
        length, angle = rng.uniform(15, 45), rng.uniform(0, np.pi)
        cx, cy = rng.uniform(12, SIZE - 12, size=2)
        dx, dy = np.cos(angle), np.sin(angle)
        along = (x - cx) * dx + (y - cy) * dy
        across = np.abs(-(x - cx) * dy + (y - cy) * dx)
        mask = (np.abs(along) < length / 2) & (across < rng.uniform(0.6, 1.2))
        img = img + mask * rng.choice([-1, 1]) * rng.uniform(35, 60)
    elif kind == "pits":
        for _ in range(rng.integers(1, 4)):
            cx, cy, r = rng.uniform(5, SIZE - 5), rng.uniform(5, SIZE - 5), rng.uniform(1.2, 2.8)
            img = img - ((x - cx) ** 2 + (y - cy) ** 2 < r * r) * rng.uniform(45, 70)
    elif kind == "stain":
        cx, cy, r = rng.uniform(15, SIZE - 15), rng.uniform(15, SIZE - 15), rng.uniform(7, 14)
        img = img + rng.choice([-1, 1]) * rng.uniform(25, 40) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
    return img


def dataset(n: int, rng: np.random.Generator):
    kinds = rng.choice(KINDS, size=n, p=[0.5, 0.5 / 3, 0.5 / 3, 0.5 / 3])
    images = np.stack([np.clip(defect(texture(rng), k, rng), 0, 255).round() for k in kinds]).astype(np.uint8)
    return images, (kinds != "good").astype(np.float64), kinds


def patches(x: np.ndarray) -> np.ndarray:
    """[N, H, W] → [N, positions, KERNEL²] (valid convolution)."""
    windows = np.lib.stride_tricks.sliding_window_view(x, (KERNEL, KERNEL), axis=(1, 2))
    return windows.reshape(x.shape[0], -1, KERNEL * KERNEL)


def forward(p, w, b, v, c):
    z = p @ w + b  # [N, P, F]
    a = np.maximum(z, 0)
    top = a.argmax(axis=1)  # [N, F]
    pooled = np.concatenate([a.max(axis=1), a.mean(axis=1)], axis=1)  # [N, 2F]
    logit = pooled @ v + c
    return z, a, top, pooled, 1 / (1 + np.exp(-logit))


def train(x, y, rng, epochs=30, batch=64, lr=0.01):
    w = rng.normal(0, 0.3, (KERNEL * KERNEL, FILTERS))
    b = np.zeros(FILTERS)
    v = rng.normal(0, 0.1, 2 * FILTERS)
    c = 0.0
    params = [w, b, v, np.array(c)]
    m = [np.zeros_like(q) for q in params]
    s = [np.zeros_like(q) for q in params]
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            idx = order[start : start + batch]
            p = patches(x[idx])
            z, a, top, pooled, prob = forward(p, params[0], params[1], params[2], params[3])
            n = len(idx)
            d_logit = (prob - y[idx]) / n  # cross-entropy through the sigmoid
            g_v = pooled.T @ d_logit
            g_c = d_logit.sum()
            d_pooled = np.outer(d_logit, params[2])  # [N, 2F]
            d_a = np.zeros_like(a)
            rows = np.arange(n)[:, None]
            d_a[rows, top, np.arange(FILTERS)[None, :]] += d_pooled[:, :FILTERS]
            d_a += d_pooled[:, None, FILTERS:] / a.shape[1]
            d_z = d_a * (z > 0)
            g_w = np.einsum("npk,npf->kf", p, d_z)
            g_b = d_z.sum(axis=(0, 1))
            step += 1
            for i, g in enumerate([g_w, g_b, g_v, np.array(g_c)]):
                m[i] = 0.9 * m[i] + 0.1 * g
                s[i] = 0.999 * s[i] + 0.001 * g * g
                update = lr * (m[i] / (1 - 0.9**step)) / (np.sqrt(s[i] / (1 - 0.999**step)) + 1e-8)
                params[i] = params[i] - update
    return params


def export(params, path: Path):
    w, b, v, c = params
    kernel = w.T.reshape(FILTERS, 1, KERNEL, KERNEL).astype(np.float32)
    inits = [
        numpy_helper.from_array(kernel, "K"),
        numpy_helper.from_array(b.astype(np.float32), "KB"),
        numpy_helper.from_array(v.reshape(2 * FILTERS, 1).astype(np.float32), "V"),
        numpy_helper.from_array(np.array([float(c)], dtype=np.float32), "VB"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "K", "KB"], ["z"], kernel_shape=[KERNEL, KERNEL]),
        helper.make_node("Relu", ["z"], ["a"]),
        helper.make_node("GlobalMaxPool", ["a"], ["mx"]),
        helper.make_node("GlobalAveragePool", ["a"], ["av"]),
        helper.make_node("Concat", ["mx", "av"], ["pooled4"], axis=1),
        helper.make_node("Flatten", ["pooled4"], ["pooled"], axis=1),
        helper.make_node("Gemm", ["pooled", "V", "VB"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["defect_probability"]),
    ]
    graph = helper.make_graph(
        nodes,
        "millwright_surface",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("defect_probability", TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="millwright/models/train_images.py"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "quality"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    images, y, kinds = dataset(args.images, rng)
    test = np.arange(len(y)) % 5 == 4
    mean, std = 0.5, 0.25  # the agent feeds (pixel / 255 - mean) / std
    x = (images / 255.0 - mean) / std
    params = train(x[~test], y[~test], rng)

    onnx_path = out / "surface.onnx"
    export(params, onnx_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x_test = x[test][:, None, :, :].astype(np.float32)
    p_test = session.run(None, {"image": x_test})[0][:, 0]
    p_numpy = forward(patches(x[test]), *params)[-1]
    assert np.max(np.abs(p_test - p_numpy)) < 1e-4, "ONNX export differs from the numpy network"

    (out / "surface.toml").write_text(
        "# Manifest of surface.onnx, written by models/train_images.py. The agent decodes a PNG or JPEG, converts it\n"
        "# to `channels` (1: grayscale), resizes it to width × height and feeds (pixel / 255 - mean) / std, NCHW.\n"
        f'name = "surface-defects"\nversion = "seed-{args.seed}"\nkind = "image"\n\n'
        f"[input]\nwidth = {SIZE}\nheight = {SIZE}\nchannels = 1\nmean = [{mean}]\nstd = [{std}]\n\n"
        '[output]\nname = "defect_probability"\n'
    )
    check = out / "surface.check"
    check.mkdir(exist_ok=True)
    held = np.flatnonzero(test)
    expected = {}
    for k in KINDS:
        for i in held[kinds[held] == k][:3]:
            name = f"{k}-{i}.png"
            Image.fromarray(images[i], mode="L").save(check / name)
            expected[name] = float(p_test[np.searchsorted(held, i)])
    (check / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True))

    y_test, kind_test = y[test], kinds[test]
    rows = []
    for threshold, decision in [(0.5, "review or reject"), (0.8, "reject")]:
        flagged = p_test > threshold
        caught = " | ".join(f"{100 * flagged[kind_test == k].mean():.1f} %" for k in KINDS[1:])
        rows.append(f"| > {threshold} ({decision}) | {caught} | {100 * flagged[kind_test == 'good'].mean():.1f} % |")
    weights = KERNEL * KERNEL * FILTERS + FILTERS + 2 * FILTERS + 1
    card = (
        f"""# Model card: example surface-inspection model

Written by `models/train_images.py` (seed {args.seed}); rebuild with the commands at the top of that file.

- **Task.** Probability that a part's surface has a defect, from one camera image (any size; the agent resizes
  it to {SIZE}×{SIZE} grayscale). The agent folds it into the part's defect score (the higher score counts).
- **Architecture.** Conv 5×5 ×{FILTERS} + ReLU → global max and mean pooling → logistic output: {weights}
  weights, input `image` [N, 1, {SIZE}, {SIZE}], output `defect_probability` [N, 1]; normalisation
  `(pixel / 255 - 0.5) / 0.25` from `surface.toml`. Trained with numpy (Adam, cross-entropy, 30 epochs).
- **Data.** Synthetic only: {args.images:,} textures like machined metal, half of them with one defect (scratch,
  pits or stain, equally often). Every fifth image held out: {int(test.sum()):,} images.
- **Limits.** The defects are drawn by a script and the background is uniform in kind: the metrics below say how
  well the network separates these images and nothing about a real camera, lighting or part. A real line needs
  images of its own parts, labelled by the review station, and a retrained model; the manifest keeps the
  input contract (size, channels, normalisation) so that the agent needs no change.

## Held-out metrics (measured)

ROC AUC: {roc_auc_score(y_test, p_test):.4f}.

| threshold | scratches caught | pits caught | stains caught | good images flagged |
|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    (out / "SURFACE_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
