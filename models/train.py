#!/usr/bin/env python3
"""Rebuilds millwright's default failure-probability model from simulated run-to-failure data.

    pip install -r models/requirements.txt
    cargo build -p millwright
    python3 models/train.py            # writes models/default.{onnx,toml}, MODEL_CARD.md, default.check.json

Steps: generate a fleet of simulated machines (healthy under varying load, bearing wear, thermal
overload, phase unbalance, cavitation) with random timings; run every asset through the agent's own
scorer in accelerated time (`millwright dataset`), which writes one row of model features per asset
and 10 minutes; train a small MLP (scikit-learn) on the training runs; evaluate on held-out runs
(every fourth run of each kind); export the network as plain ONNX ops tract loads (MatMul, Add, Relu,
Sigmoid; no ZipMap, no ai.onnx.ml ops); record held-out inputs with onnxruntime's outputs so a Rust
test can check tract against them.
"""

import argparse
import csv
import json
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.neural_network import MLPClassifier

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FEATURES = [
    ("vibration_severity", "ratio to the ISO 10816-3 C/D boundary"),
    ("vibration_trend", "C/D boundaries per hour"),
    ("bearing_temperature_ratio", "ratio to the bearing alarm limit"),
    ("bearing_temperature_trend", "K/h"),
    ("winding_temperature_ratio", "ratio to the insulation class limit"),
    ("current_unbalance", "fraction (NEMA MG 1)"),
    ("current_load", "ratio to rated current"),
    ("pressure_deviation", "fraction of the operating range"),
    ("pressure_fluctuation", "standard deviation / mean"),
]
# Features of an asset's acceleration waveform ([assets.waveform]); the simulated fleet has none, so
# a model takes them only when trained on a fleet's own table (`--data` with `--features`).
WAVEFORM_FEATURES = [
    ("acceleration_kurtosis", "fourth moment / variance squared (3 for Gaussian vibration)"),
    ("acceleration_crest_factor", "peak / RMS of the acceleration"),
    ("bearing_defect_db", "strongest bearing defect line, dB above the envelope noise floor"),
]
KINDS = ["healthy", "bearing_wear", "thermal_overload", "phase_unbalance", "cavitation"]
HORIZON_HOURS = 48


def fleet(runs_per_kind: int, seed: int):
    """Simulator and agent configurations for the fleet, and each run's kind."""
    rng = random.Random(seed)
    sim = [f"seed = {seed}\n"]
    agent = ['[scoring]\nassess_interval = "10m"\nwindow = 12\n']
    runs = []
    unit = 0
    for kind in KINDS:
        for r in range(runs_per_kind):
            unit += 1
            name = f"{kind}-{r:02d}"
            runs.append((name, kind))
            starts = rng.uniform(1.0, 6.0)
            fails = starts + rng.uniform(4.0, 10.0)
            gains = {p: (0.0, 0.0) for p in ["vibration", "bearing", "winding", "l1", "l2", "l3", "pressure"]}
            shape = rng.uniform(1.8, 3.2)
            if kind == "bearing_wear":
                gains["vibration"] = (rng.uniform(4.0, 8.0), 0.3)
                gains["bearing"] = (rng.uniform(20.0, 40.0), 0.0)
            elif kind == "thermal_overload":
                gains["winding"] = (rng.uniform(45.0, 75.0), 0.0)
                extra = rng.uniform(8.0, 16.0)
                for p in ["l1", "l2", "l3"]:
                    gains[p] = (extra, 0.0)
            elif kind == "phase_unbalance":
                gains["l2"] = (-rng.uniform(6.0, 12.0), 0.0)
                gains["winding"] = (rng.uniform(10.0, 25.0), 0.0)
            elif kind == "cavitation":
                gains["pressure"] = (-rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.8))
                gains["vibration"] = (rng.uniform(1.0, 2.0), 0.2)
            load_mean = rng.uniform(0.45, 0.8)
            sim.append(
                f'\n[[machines]]\nname = "{name}"\nkind = "pump"\nunit_id = {unit}\n'
                f'load = {{ mean = {load_mean:.3f}, spread = 0.25, change_every = "{rng.randint(1, 6)}h" }}\n'
            )
            if kind != "healthy":
                sim.append(
                    f'fault = {{ kind = "{kind}", starts = "{starts * 24:.2f}h", '
                    f'fails = "{fails * 24:.2f}h", shape = {shape:.2f} }}\n'
                )
            points = [
                ("vibration", 0, f"base = {rng.uniform(0.6, 1.0):.3f}, load_gain = 0.5, noise = 0.05"),
                ("bearing", 2, f"base = {rng.uniform(35, 45):.2f}, load_gain = 15, daily_swing = 2, noise = 0.2"),
                ("winding", 4, f"base = {rng.uniform(60, 75):.2f}, load_gain = 30, noise = 0.3"),
                ("l1", 6, "base = 18, load_gain = 20, noise = 0.1"),
                ("l2", 8, "base = 18, load_gain = 20, noise = 0.1"),
                ("l3", 10, "base = 18, load_gain = 20, noise = 0.1"),
                ("pressure", 12, "base = 4.0, load_gain = 0.8, noise = 0.02"),
            ]
            for point, address, signal in points:
                gain, noise = gains[point]
                sim.append(
                    f'[[machines.points]]\nname = "{point}"\ntable = "holding"\naddress = {address}\ntype = "f32"\n'
                    f"signal = {{ {signal}, fault_gain = {gain:.3f}, fault_noise = {noise:.3f} }}\n"
                )
            units = {
                "vibration": "mm/s",
                "bearing": "°C",
                "winding": "°C",
                "l1": "A",
                "l2": "A",
                "l3": "A",
                "pressure": "bar",
            }
            agent.append(
                f'\n[[devices]]\nname = "{name}"\nhost = "127.0.0.1"\nunit_id = {unit}\naddressing = "zero_based"\n'
            )
            for point, address, _ in points:
                agent.append(
                    f'[[devices.tags]]\nname = "{name}.{point}"\ntable = "holding"\naddress = {address}\n'
                    f'type = "f32"\nunit = "{units[point]}"\n'
                )
            agent.append(
                f'\n[[assets]]\nid = "{name}"\ntype = "pump"\n'
                f'signals = {{ vibration = "{name}.vibration", bearing_temperature = "{name}.bearing", '
                f'winding_temperature = "{name}.winding", currents = ["{name}.l1", "{name}.l2", "{name}.l3"], '
                f'pressure = "{name}.pressure" }}\n'
                f'nameplate = {{ iso_group = 2, foundation = "rigid", insulation_class = "F", '
                f"rated_current = 45.0, pressure_range = [3.0, 6.0] }}\n"
            )
    return "".join(sim), "".join(agent), runs


def select_features(names, have_data: bool):
    """Narrows or extends FEATURES (in place: every step below reads it) to the names asked for."""
    if not names:
        return
    known = dict(FEATURES + WAVEFORM_FEATURES)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown feature(s) {', '.join(unknown)}; known: {', '.join(known)}")
    waveform = [n for n in wanted if n in dict(WAVEFORM_FEATURES)]
    if waveform and not have_data:
        raise SystemExit(f"{', '.join(waveform)} need --data: the simulated fleet has no waveforms")
    FEATURES[:] = [(n, known[n]) for n in wanted]


def read_rows(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def matrix(rows, fill):
    x = np.array(
        [[float(r[name]) if r[name] != "" else fill[name] for name, _ in FEATURES] for r in rows],
        dtype=np.float64,
    )
    y = np.array([int(r["label"]) for r in rows])
    return x, y


def export_onnx(
    clf: MLPClassifier,
    path: Path,
    inputs: int = len(FEATURES),
    output: str = "failure_probability",
    graph_name: str = "millwright_default",
    producer: str = "millwright/models/train.py",
):
    """The MLP as plain ONNX ops tract loads: features [N, inputs] → `output` [N, 1]."""
    inits, nodes = [], []
    current = "features"
    layers = len(clf.coefs_)
    for i, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"W{i}"),
            numpy_helper.from_array(b.astype(np.float32), f"B{i}"),
        ]
        nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}"]))
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"h{i}"]))
            current = f"h{i}"
        else:
            nodes.append(helper.make_node("Sigmoid", [f"a{i}"], [output]))
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", inputs])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name=producer)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def lead_times(rows, probabilities, threshold):
    """Per faulty run: hours before failure when the probability first crossed `threshold`."""
    out = {}
    for r, p in zip(rows, probabilities):
        if r["fault"] == "healthy" or r["run"] in out:
            continue
        if p > threshold:
            out[r["run"]] = float(r["hours_to_failure"])
    return out


def simulated(args):
    """Rows of the simulated fleet, run through the agent's scorer (`millwright dataset`), and its runs."""
    sim, agent, runs = fleet(args.runs_per_kind, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "fleet.toml").write_text(sim)
        (tmp / "agent.toml").write_text(agent)
        data = tmp / "data.csv"
        subprocess.run(
            [
                args.millwright,
                "dataset",
                "-c",
                tmp / "agent.toml",
                "--sim",
                tmp / "fleet.toml",
                "--duration",
                "16d",
                "--step",
                "10m",
                "--horizon",
                f"{HORIZON_HOURS}h",
                "--out",
                data,
            ],
            check=True,
        )
        rows = read_rows(data)
    return rows, runs


def data_source(args, runs) -> str:
    """The card's sentence on where the rows came from."""
    if args.data:
        faults = sorted({fault for _, fault in runs})
        return (
            f"A fleet's own history, `{args.data}`: {len(runs)} runs ({', '.join(faults)}), cut at the maintenance "
            "history's failures by `fleet analyze`."
        )
    return (
        f"Simulated only: {len(runs)} runs ({args.runs_per_kind} per kind: {', '.join(KINDS)}), 16 simulated days "
        "each, one row per asset and 10 minutes, computed by the agent's own scorer (`millwright dataset`). Faults "
        "start on day 1–6 and end in failure 4–10 days later with random severity and shape; healthy runs vary "
        "load. Rows after a failure are dropped."
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--millwright", default=str(ROOT / "target/debug/millwright"))
    ap.add_argument("--runs-per-kind", type=int, default=12)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument(
        "--data",
        help="train on this table (CSV: run, fault, label, hours_to_failure, rule_probability and the features; "
        "`fleet training` writes it from a fleet's own history) instead of the simulated fleet",
    )
    ap.add_argument(
        "--features",
        help="comma-separated model inputs, from the nine defaults and "
        + ", ".join(n for n, _ in WAVEFORM_FEATURES)
        + " (these need --data with those columns)",
    )
    args = ap.parse_args()
    select_features(args.features, bool(args.data))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.data:
        rows = read_rows(Path(args.data))
        runs = list(dict.fromkeys((r["run"], r["fault"]) for r in rows))
    else:
        rows, runs = simulated(args)

    held_out = {name for i, (name, _) in enumerate(runs) if i % 4 == 3}
    train = [r for r in rows if r["run"] not in held_out]
    test = [r for r in rows if r["run"] in held_out]

    # Healthy medians stand in for features an asset cannot measure.
    healthy = [r for r in train if r["fault"] == "healthy"]
    fill = {}
    for name, _ in FEATURES:
        values = [float(r[name]) for r in healthy if r[name] != ""]
        fill[name] = float(np.median(values)) if values else 0.0
    x_train, y_train = matrix(train, fill)
    x_test, y_test = matrix(test, fill)
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale[scale < 1e-9] = 1.0
    clf = MLPClassifier(hidden_layer_sizes=(16,), activation="relu", alpha=1e-3, max_iter=800, random_state=args.seed)
    clf.fit((x_train - mean) / scale, y_train)

    export_onnx(clf, out / "default.onnx")
    session = ort.InferenceSession(str(out / "default.onnx"), providers=["CPUExecutionProvider"])
    normalized_test = ((x_test - mean) / scale).astype(np.float32)
    p_test = session.run(None, {"features": normalized_test})[0][:, 0]
    p_sklearn = clf.predict_proba((x_test - mean) / scale)[:, 1]
    assert np.max(np.abs(p_test - p_sklearn)) < 1e-4, "ONNX export differs from scikit-learn"

    manifest = [
        'name = "default"',
        f'version = "seed-{args.seed}"',
        f'horizon = "{HORIZON_HOURS}h"',
        "",
    ]
    for (name, unit), m, s in zip(FEATURES, mean, scale):
        manifest += [
            "[[inputs]]",
            f'feature = "{name}"',
            f'unit = "{unit}"',
            f"mean = {m:.9g}",
            f"scale = {s:.9g}",
            f"missing = {fill[name]:.9g}",
            "",
        ]
    manifest += ["[output]", 'name = "failure_probability"', ""]
    (out / "default.toml").write_text(
        "# Manifest of default.onnx, written by models/train.py. Inputs in the model's order; the agent\n"
        "# feeds (x - mean) / scale, and `missing` where an asset has no signal for the feature.\n"
        + "\n".join(manifest)
    )

    # Recorded inputs and onnxruntime outputs for the tract comparison test.
    pick = np.linspace(0, len(normalized_test) - 1, 40).astype(int)
    (out / "default.check.json").write_text(
        json.dumps(
            {
                "inputs": normalized_test[pick].tolist(),
                "outputs": p_test[pick].astype(float).tolist(),
            },
            indent=1,
        )
    )

    # Held-out metrics.
    rule_test = np.array(
        [float(r["rule_probability"]) if r["rule_probability"] not in ("", "NaN", "nan") else 0.0 for r in test]
    )
    brier = float(np.mean((p_test - y_test) ** 2))
    base_rate = float(y_test.mean())
    bins = []
    for lo in np.arange(0.0, 1.0, 0.2):
        sel = (p_test >= lo) & (p_test < lo + 0.2 + (1e-9 if lo >= 0.8 else 0))
        if sel.sum():
            bins.append((lo, lo + 0.2, int(sel.sum()), float(p_test[sel].mean()), float(y_test[sel].mean())))
    lines = []
    for label, probs in [("model", p_test), ("rules only", rule_test)]:
        for threshold, action in [(0.5, "scheduled_maintenance"), (0.7, "immediate_maintenance")]:
            leads = lead_times(test, probs, threshold)
            faulty_runs = sorted({r["run"] for r in test if r["fault"] != "healthy"})
            detected = [leads[r] for r in faulty_runs if r in leads]
            healthy_runs = sorted({r["run"] for r in test if r["fault"] == "healthy"})
            false_runs = sorted({r["run"] for r, p in zip(test, probs) if r["fault"] == "healthy" and p > threshold})
            healthy_rows = sum(1 for r in test if r["fault"] == "healthy")
            false_rows = sum(1 for r, p in zip(test, probs) if r["fault"] == "healthy" and p > threshold)
            median = f"{np.median(detected):.1f} h" if detected else "-"
            minimum = f"{min(detected):.1f} h" if detected else "-"
            lines.append(
                f"| {label} | {action} (p > {threshold}) | {len(detected)}/{len(faulty_runs)} | {median} | {minimum} | "
                f"{len(false_runs)}/{len(healthy_runs)} runs, {100.0 * false_rows / max(healthy_rows, 1):.2f} % of healthy rows |"
            )
    by_kind = []
    for kind in KINDS[1:]:
        leads = lead_times(
            [r for r in test if r["fault"] == kind], [p for r, p in zip(test, p_test) if r["fault"] == kind], 0.5
        )
        runs_k = sorted({r["run"] for r in test if r["fault"] == kind})
        by_kind.append(
            f"| {kind} | {len(leads)}/{len(runs_k)} | "
            + (f"{np.median(list(leads.values())):.1f} h" if leads else "-")
            + " |"
        )

    card = (
        f"""# Model card: default failure-probability model

Written by `models/train.py` (seed {args.seed}); rebuild with the commands at the top of that file.

- **Task.** Probability that the machine fails within {HORIZON_HOURS} h, from one assessment round's features.
- **Architecture.** MLP, {len(FEATURES)} inputs → 16 ReLU → 1 sigmoid (scikit-learn `MLPClassifier`), exported as
  plain ONNX (MatMul, Add, Relu, Sigmoid; opset 13), input `features` [N, {len(FEATURES)}], output
  `failure_probability` [N, 1]. Normalisation `(x - mean) / scale` is applied by the agent from `default.toml`.
- **Inputs.** {", ".join(n for n, _ in FEATURES)} (units in `default.toml`). Missing signals take the healthy
  median recorded as `missing`.
- **Data.** {data_source(args, runs)} Train: {len(train)} rows; held out (every 4th run): {len(test)} rows,
  positive rate {base_rate:.3f}.
- **Limits.** Trained on the simulator's fault models, not on field data: treat it as a baseline that shows the
  plumbing works and gives smooth early warnings; the ISO/NEMA rules stay in charge of damaging conditions (a
  rule in zone D is never overruled). Retrain on your own run-to-failure history when you have it, keeping
  the manifest's feature names.
- **Retraining on a fleet's own history.** Every assessment the agents publish carries these features; the
  fleet side joins them with the maintenance history's failures (`fleet analyze --history …` writes
  `training.parquet`, see `fleet/README.md`). Convert it to CSV and run
  `python3 models/train.py --data training.csv --out DIR`; ship DIR's model only if its held-out figures
  below beat this card's.

## Held-out metrics (measured)

Calibration: Brier score {brier:.4f} (a constant base-rate forecast scores {base_rate * (1 - base_rate):.4f}).

| predicted | rows | mean predicted | observed failure rate |
|---|---|---|---|
"""
        + "\n".join(f"| {lo:.1f}–{hi:.1f} | {n} | {mp:.3f} | {obs:.3f} |" for lo, hi, n, mp, obs in bins)
        + """

Detection before failure and false alarms on held-out runs (first crossing of the threshold; hours before the
simulated failure):

| scorer | action | faulty runs detected | median lead time | shortest lead time | false alarms on healthy runs |
|---|---|---|---|---|---|
"""
        + "\n".join(lines)
        + """

Model detections by fault kind (p > 0.5):

| fault | detected | median lead time |
|---|---|---|
"""
        + "\n".join(by_kind)
        + "\n"
    )
    (out / "MODEL_CARD.md").write_text(card)
    print(card)


if __name__ == "__main__":
    main()
