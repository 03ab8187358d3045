#!/usr/bin/env python3
"""Builds the example defect model of a quality station (the gauge of agent/tests/fixtures/quality-gauge.toml).

    pip install -r models/requirements.txt
    python3 models/train_quality.py    # writes models/quality/gauge.{onnx,toml}, gauge.check.json, MODEL_CARD.md

What it models: a turned and filled part measured for its bore (mm, spec 24.95..25.05) and its weight (g,
at least 118). A void in the casting makes the part lighter and lets the bore open up a little, each still
inside its spec: the per-characteristic limits pass such a part, the combination gives it away. The data
are simulated (deterministic by seed): good parts with the gauge's usual spread and tool wear, parts with
a void, and parts plainly out of spec. A small MLP (scikit-learn) learns the defect probability from the
two normalised values; it is exported as plain ONNX ops tract loads (MatMul, Add, Relu, Sigmoid). Every
fourth part is held out for the metrics; held-out inputs with onnxruntime's outputs are recorded so a
Rust test checks tract against them.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from sklearn.metrics import roc_auc_score
from sklearn.neural_network import MLPClassifier

from train import export_onnx

HERE = Path(__file__).resolve().parent
CHARACTERISTICS = [("bore", "mm"), ("weight", "g")]
SPEC = {"bore": (24.95, 25.05), "weight": (118.0, None)}


def parts(n: int, rng: np.random.Generator):
    """(values [n, 2], defective [n]): good parts, voids (in spec, jointly off), plain rejects."""
    kind = rng.choice(["good", "void", "out_of_spec"], size=n, p=[0.86, 0.10, 0.04])
    wear = rng.uniform(0.0, 0.02, size=n)  # where the tool is in its life
    bore = 25.0 - 0.01 + wear + rng.normal(0.0, 0.004, size=n)
    weight = rng.normal(120.0, 0.45, size=n)
    void = kind == "void"
    bore[void] += rng.uniform(0.008, 0.02, size=void.sum())
    weight[void] -= rng.uniform(0.9, 1.6, size=void.sum())
    out = kind == "out_of_spec"
    high = rng.random(size=n) < 0.5
    bore[out & high] = rng.uniform(25.052, 25.07, size=(out & high).sum())
    weight[out & ~high] = rng.uniform(116.0, 117.9, size=(out & ~high).sum())
    return np.column_stack([bore, weight]), (kind != "good").astype(int), kind


def rule_scores(x: np.ndarray, at_spec: float = 0.8) -> np.ndarray:
    """The agent's spec-limit score (0 on target, `at_spec` at a limit), the higher of the two."""
    bore_t, weight_t = 25.0, 120.0
    bore = np.where(x[:, 0] >= bore_t, (x[:, 0] - bore_t) / (25.05 - bore_t), (bore_t - x[:, 0]) / (bore_t - 24.95))
    weight = np.where(x[:, 1] >= weight_t, 0.0, (weight_t - x[:, 1]) / (weight_t - 118.0))
    return np.clip(np.maximum(bore, weight) * at_spec, 0.0, 1.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default=str(HERE / "quality"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    x, y, kind = parts(args.parts, rng)
    test = np.arange(len(y)) % 4 == 3
    mean = x[~test].mean(axis=0)
    scale = x[~test].std(axis=0)
    clf = MLPClassifier(hidden_layer_sizes=(8,), activation="relu", alpha=1e-4, max_iter=1000, random_state=args.seed)
    clf.fit((x[~test] - mean) / scale, y[~test])

    onnx_path = out / "gauge.onnx"
    export_onnx(
        clf,
        onnx_path,
        inputs=2,
        output="defect_probability",
        graph_name="millwright_gauge_defects",
        producer="millwright/models/train_quality.py",
    )
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x_test = ((x[test] - mean) / scale).astype(np.float32)
    p_test = session.run(None, {"features": x_test})[0][:, 0]
    assert np.max(np.abs(p_test - clf.predict_proba(x_test)[:, 1])) < 1e-4, "ONNX export differs from scikit-learn"

    manifest = ['name = "gauge-defects"', f'version = "seed-{args.seed}"', ""]
    for (name, unit), m, s in zip(CHARACTERISTICS, mean, scale):
        manifest += [
            "[[inputs]]",
            f'characteristic = "{name}"',
            f'unit = "{unit}"',
            f"mean = {m:.9g}",
            f"scale = {s:.9g}",
            "",
        ]
    manifest += ["[output]", 'name = "defect_probability"', ""]
    (out / "gauge.toml").write_text(
        "# Manifest of gauge.onnx, written by models/train_quality.py. Inputs in the model's order, each a\n"
        "# characteristic of the station; the agent feeds (x - mean) / scale.\n" + "\n".join(manifest)
    )
    pick = np.linspace(0, len(x_test) - 1, 40).astype(int)
    (out / "gauge.check.json").write_text(
        json.dumps({"inputs": x_test[pick].tolist(), "outputs": p_test[pick].astype(float).tolist()}, indent=1)
    )

    y_test, kind_test, rules = y[test], kind[test], rule_scores(x[test])
    combined = np.maximum(rules, p_test)
    rows = []
    for label, score in [
        ("spec limits only", rules),
        ("model only", p_test),
        ("both (the agent: the higher)", combined),
    ]:
        for threshold, decision in [(0.5, "review or reject"), (0.8, "reject")]:
            flagged = score > threshold
            caught = {k: flagged[kind_test == k].mean() for k in ("void", "out_of_spec")}
            rows.append(
                f"| {label} | {decision} (> {threshold}) | {100 * caught['void']:.1f} % | {100 * caught['out_of_spec']:.1f} % | "
                f"{100 * flagged[kind_test == 'good'].mean():.2f} % |"
            )
    card = (
        f"""# Model card: example gauge defect model

Written by `models/train_quality.py` (seed {args.seed}); rebuild with the commands at the top of that file.

- **Task.** Probability that a part is defective, from its bore (mm) and weight (g) as the gauge station of
  `agent/tests/fixtures/quality-gauge.toml` measures them. The agent takes the higher of this and the spec-limit
  score as the part's defect score.
- **Architecture.** MLP, 2 inputs → 8 ReLU → 1 sigmoid (scikit-learn `MLPClassifier`), exported as plain ONNX
  (MatMul, Add, Relu, Sigmoid; opset 13), input `features` [N, 2], output `defect_probability` [N, 1].
  Normalisation `(x - mean) / scale` is applied by the agent from `gauge.toml`.
- **Data.** Simulated only, {args.parts:,} parts: 86 % good (bore 24.99–25.01 + tool wear up to 20 µm, ±4 µm; weight
  120 g ± 0.45), 10 % with a casting void (bore 8–20 µm larger and 0.9–1.6 g lighter: each value inside its
  spec), 4 % plainly out of spec. Every fourth part held out: {int(test.sum()):,} parts.
- **Limits.** The void pattern is made up to show what a model adds beside per-characteristic limits; the
  metrics say how well it separates *these* simulated parts, nothing about a real process. Train on your own
  inspected parts (labelled by the review station) before trusting a model with rejects.

## Held-out metrics (measured)

ROC AUC of the model: {roc_auc_score(y_test, p_test):.4f}.

| scorer | decision | voids caught | out-of-spec parts caught | good parts flagged |
|---|---|---|---|---|
"""
        + "\n".join(rows)
        + "\n"
    )
    (out / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
