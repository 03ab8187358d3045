#!/usr/bin/env python3
"""Runs millwright's vibration diagnosis over a folder of recordings and prints a confusion matrix.

    cargo build --release -p millwright
    python3 models/vibration/make_synthetic.py --out /tmp/vib-set        # or your own recordings
    python3 models/vibration/evaluate.py /tmp/vib-set --millwright target/release/millwright

The folder holds WAV files (integer samples are read as a fraction of full scale, float samples as
they are; the first channel) or CSV files (one value per line), and `labels.csv` with the columns
`file`, `label` and, optionally, `rpm` (the shaft speed of that recording; otherwise the
configuration's `shaft_rpm`) and `sample_rate` (for CSV files; WAV files carry theirs).

Labels are the diagnosis names: healthy, outer_race, inner_race, rolling_element, cage, unbalance,
misalignment, looseness. Each recording is analysed by `millwright spectrum --file` with the asset
of `--config` (default: eval-asset.toml beside this script: a 6205 bearing, 20 g full scale); the
prediction is the worst diagnosis, or `healthy` when there is none.

For a public bearing data set (the Case Western Reserve University set, for example), convert its
recordings to WAV or CSV, write labels.csv with each file's label and rpm, and set the bearing,
the sample rate, the unit and the scale in a copy of eval-asset.toml.
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ORDER = [
    "healthy",
    "outer_race",
    "inner_race",
    "rolling_element",
    "cage",
    "unbalance",
    "misalignment",
    "looseness",
]


def config_for(base: Path, sample_rate: str | None) -> Path:
    """The configuration, with the waveform's sample rate replaced when a CSV recording gives one."""
    if not sample_rate:
        return base
    text = base.read_text()
    marker = "sample_rate = "
    start = text.index(marker) + len(marker)
    end = start + len(text[start:].split(",")[0].split("}")[0].split("\n")[0])
    changed = Path(tempfile.mkdtemp()) / base.name
    changed.write_text(text[:start] + sample_rate + text[end:])
    return changed


def diagnose(millwright: str, config: Path, asset: str, path: Path, rpm: str | None) -> str:
    command = [millwright, "spectrum", "-c", str(config), asset, "--file", str(path), "--json"]
    if rpm:
        command += ["--rpm", rpm]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"{path.name}: {done.stderr.strip()}")
    diagnoses = json.loads(done.stdout)["report"]["diagnoses"]
    return diagnoses[0]["fault"] if diagnoses else "healthy"


def print_matrix(pairs):
    labels = [name for name in ORDER if any(name in pair for pair in pairs)]
    labels += sorted({name for pair in pairs for name in pair} - set(labels))
    counts = Counter(pairs)
    width = max(len(name) for name in labels) + 2
    print("true \\ predicted".ljust(width) + "".join(name[:9].rjust(10) for name in labels) + "    recall")
    for truth in labels:
        row = [counts[(truth, predicted)] for predicted in labels]
        total = sum(row)
        recall = f"{row[labels.index(truth)] / total:.2f}" if total else "-"
        print(truth.ljust(width) + "".join(str(n).rjust(10) for n in row) + recall.rjust(10))
    precision = []
    for predicted in labels:
        column = sum(counts[(truth, predicted)] for truth in labels)
        precision.append(f"{counts[(predicted, predicted)] / column:.2f}" if column else "-")
    print("precision".ljust(width) + "".join(p.rjust(10) for p in precision))
    right = sum(n for (truth, predicted), n in counts.items() if truth == predicted)
    print(f"accuracy {right}/{len(pairs)} = {right / len(pairs):.3f}")
    healthy = [(t, p) for t, p in pairs if t == "healthy"]
    if healthy:
        alarms = sum(1 for _, p in healthy if p != "healthy")
        print(f"false alarms on healthy recordings: {alarms}/{len(healthy)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--config", default=str(HERE / "eval-asset.toml"))
    ap.add_argument("--asset", default="M")
    ap.add_argument("--millwright", default=str(ROOT / "target/release/millwright"))
    args = ap.parse_args()
    folder = Path(args.folder)
    with open(folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{folder / 'labels.csv'} lists no recordings")
    pairs = []
    for row in rows:
        config = config_for(Path(args.config), row.get("sample_rate"))
        predicted = diagnose(args.millwright, config, args.asset, folder / row["file"], row.get("rpm"))
        pairs.append((row["label"], predicted))
        if predicted != row["label"]:
            print(f"{row['file']}: {row['label']} diagnosed as {predicted}", file=sys.stderr)
    print_matrix(pairs)


if __name__ == "__main__":
    main()
