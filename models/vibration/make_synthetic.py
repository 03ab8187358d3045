#!/usr/bin/env python3
"""Writes a labelled set of synthetic acceleration recordings for `evaluate.py`.

    python3 models/vibration/make_synthetic.py --out /tmp/vib-set --per-class 20

Each recording is a motor with a 6205 bearing at a random speed (900–3000 rpm, 1–2 % slip), a
random structural resonance (2–6 kHz) and noise level, a tone from something else in the plant,
and one condition: healthy, outer_race, inner_race, rolling_element, unbalance, misalignment or
looseness. Fault sizes are drawn from a range that includes faint ones, so a perfect score is not
expected. Written independently of the agent's own test signals (agent/src/vibration/synth.rs).

Output: 16-bit mono WAV files at 25.6 kHz (full scale 20 g, as `eval-asset.toml` says) and
`labels.csv` (file, label, rpm).
"""

import argparse
import csv
import wave
from pathlib import Path

import numpy as np

G = 9.80665
FULL_SCALE = 20 * G
RATE = 25_600
SAMPLES = 65_536
# SKF 6205: 9 balls of 7.94 mm on a 39.04 mm pitch, contact angle 0.
N_BALLS, BALL, PITCH = 9, 7.94, 39.04
R = BALL / PITCH
FACTORS = {
    "outer_race": N_BALLS / 2 * (1 - R),
    "inner_race": N_BALLS / 2 * (1 + R),
    "rolling_element": PITCH / (2 * BALL) * (1 - R * R),
}
FTF = 0.5 * (1 - R)
CLASSES = ["healthy", "outer_race", "inner_race", "rolling_element", "unbalance", "misalignment", "looseness"]


def tone(t, hz, velocity_mm_s, phase):
    """Acceleration (m/s²) of a tone whose velocity is `velocity_mm_s` RMS."""
    w = 2 * np.pi * hz
    return velocity_mm_s / 1000 * np.sqrt(2) * w * np.sin(w * t + phase)


def impacts(rng, t, rate, fr, label, amplitude):
    """Impacts at `rate` Hz (1 % jitter) ringing a random resonance, modulated by the load zone."""
    resonance = rng.uniform(2000, 6000)
    damping = rng.uniform(0.03, 0.08)
    decay = 2 * np.pi * resonance * damping
    ring = np.arange(int(6 / decay * RATE)) / RATE
    kernel = np.exp(-decay * ring) * np.sin(2 * np.pi * resonance * ring)
    pulses = np.zeros_like(t)
    at = rng.uniform(0, 1 / rate)
    while at < t[-1]:
        if label == "inner_race":
            gain = 0.5 * (1 + np.cos(2 * np.pi * fr * at))
        elif label == "rolling_element":
            gain = 0.5 * (1 + np.cos(2 * np.pi * FTF * fr * at))
        else:
            gain = 1.0
        pulses[int(at * RATE)] += amplitude * gain * rng.uniform(0.7, 1.3)
        at += (1 / rate) * (1 + rng.uniform(-0.01, 0.01))
    return np.convolve(pulses, kernel)[: len(t)]


def recording(rng, label):
    rpm = rng.uniform(900, 3000)
    fr = rpm / 60 * (1 - rng.uniform(0.01, 0.02))
    t = np.arange(SAMPLES) / RATE
    phase = rng.uniform(0, 2 * np.pi)
    x = rng.normal(0, rng.uniform(0.4, 1.5), SAMPLES)
    x += tone(t, fr, rng.uniform(0.3, 0.8), phase) + tone(t, 2 * fr, rng.uniform(0.05, 0.25), 2 * phase)
    # Something else in the plant: a neighbour's running speed or a gear mesh, not synchronous.
    x += tone(t, rng.uniform(30, 900), rng.uniform(0.1, 0.5), rng.uniform(0, 6.3))
    if label in FACTORS:
        x += impacts(rng, t, FACTORS[label] * fr, fr, label, rng.uniform(1.0, 10.0))
    elif label == "unbalance":
        x += tone(t, fr, rng.uniform(2.5, 8.0), phase)
    elif label == "misalignment":
        size = rng.uniform(2.0, 6.0)
        x += tone(t, fr, size * rng.uniform(0.4, 0.8), phase) + tone(t, 2 * fr, size, 2 * phase + 1)
    elif label == "looseness":
        size = rng.uniform(2.0, 6.0)
        for order in range(1, 8):
            x += tone(t, order * fr, size * 0.8**order, rng.uniform(0, 6.3))
        x += tone(t, 1.5 * fr, size * 0.2, rng.uniform(0, 6.3))
    return x, rpm


def write_wav(path, x):
    pcm = np.clip(np.round(x / FULL_SCALE * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    with open(out / "labels.csv", "w", newline="") as f:
        labels = csv.writer(f)
        labels.writerow(["file", "label", "rpm"])
        for label in CLASSES:
            for i in range(args.per_class):
                x, rpm = recording(rng, label)
                name = f"{label}-{i:03d}.wav"
                write_wav(out / name, x)
                labels.writerow([name, label, f"{rpm:.1f}"])
    print(f"{len(CLASSES) * args.per_class} recordings in {out}")


if __name__ == "__main__":
    main()
