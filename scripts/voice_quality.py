#!/usr/bin/env python3
"""Scores termphone's voice over lossy networks with PESQ-WB, beside bare libopus.

For each speech source and network condition, `examples/voice_over_loss.rs`
runs one call's media on virtual time (alice's encoder with its FEC plan
and redundancy from bob's receiver reports, bob's jitter buffer and
decoder) over the relay's own loss model, and the same speech through bare
libopus at the same bitrate over the same lost frames. PESQ-WB (ITU-T
P.862.2, the `pesq` package) scores both against the source. Virtual time
makes the figures independent of the machine's load, and the same seed
loses the same frames in both.

Speech sources: the words of Debian's alsa-utils (recorded), sentences
spoken by espeak-ng in two voices (synthesized), and the speech-like fixture
of examples/flows (scripts/speech_like.py). Conditions: clean, 5%, 10% and
20% random loss, 5% in bursts of 3 frames on average, and a path capped at
64 or 32 kbit/s (the relay's `bandwidth_kbps`), clean or with 5% random
loss besides; there bare libopus goes through the same cap at its 48 kbit/s
(a sender that does not adapt).

Needs: `pip install pesq numpy scipy`, `apt-get install espeak-ng
alsa-utils`, and `cargo build --release --example voice_over_loss`.

    python3 scripts/voice_quality.py [--runs N] [--jitter MS] [--only LABEL ...]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import wave

import numpy as np
from pesq import pesq
from scipy.signal import correlate, resample_poly

from pesq_score import WORDS, write_wav

EXAMPLE = "target/release/examples/voice_over_loss"
# (label, loss percent, mean burst, bandwidth cap in kbit/s)
CONDITIONS = [("clean", 0, None, None), ("5%", 5, None, None), ("10%", 10, None, None),
              ("20%", 20, None, None), ("5% bursty", 5, 3, None),
              ("cap 64", 0, None, 64), ("cap 64, 5%", 5, None, 64),
              ("cap 32", 0, None, 32), ("cap 32, 5%", 5, None, 32)]
GOALS = {"clean": 4.2, "10%": 3.8, "20%": 3.4, "5% bursty": 3.5}
SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
]


def read_wav(path):
    with wave.open(path) as w:
        rate = w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels()).mean(axis=1)
    data /= 32768.0
    if rate != 48000:
        g = np.gcd(rate, 48000)
        data = resample_poly(data, 48000 // g, rate // g)
    return data


def sources(work):
    """Each speech source as a 48 kHz WAV file, by name."""
    gap = np.zeros(int(0.3 * 48000))
    found = {}
    words = [f"/usr/share/sounds/alsa/{w}.wav" for w in WORDS]
    if all(os.path.exists(w) for w in words):
        found["alsa words (recorded)"] = np.concatenate([x for w in words for x in (read_wav(w), gap)])
    for voice in ["en-us", "en-gb+f3"]:
        parts = []
        for i, sentence in enumerate(SENTENCES):
            path = f"{work}/espeak-{voice}-{i}.wav"
            try:
                subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", path, sentence], check=True)
            except (OSError, subprocess.CalledProcessError) as e:
                print(f"skipping espeak-ng ({e}); apt-get install espeak-ng", file=sys.stderr)
                break
            parts += [read_wav(path) * 0.7, gap]
        else:
            found[f"espeak-ng {voice} (synthesized)"] = np.concatenate(parts)
    fixture = "examples/flows/speech_like.wav"
    if os.path.exists(fixture):
        found["speech-like fixture"] = read_wav(fixture)
    paths = {}
    for name, samples in found.items():
        path = f"{work}/{len(paths)}.wav"
        write_wav(path, samples)
        paths[name] = path
    return paths


def score(reference, degraded):
    """PESQ-WB of `degraded` against `reference`, aligned by cross-correlation."""
    corr = correlate(degraded[: len(reference) + 48000], reference, mode="valid", method="fft")
    lag = int(np.argmax(corr))
    degraded = degraded[lag: lag + len(reference)]
    reference = reference[: len(degraded)]
    return pesq(16000, resample_poly(reference, 1, 3), resample_poly(degraded, 1, 3), "wb")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="seeds (loss patterns) per condition")
    parser.add_argument("--jitter", type=int, default=0, help="network jitter, ms (uniform)")
    parser.add_argument("--example", default=EXAMPLE)
    parser.add_argument("--only", nargs="+", metavar="LABEL",
                        help="only these conditions, e.g. 'cap 32' clean")
    args = parser.parse_args()
    if not os.path.exists(args.example):
        sys.exit(f"{args.example} is missing: cargo build --release --example voice_over_loss")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for name, path in sources(work).items():
            reference = read_wav(path)
            for label, loss, burst, cap in CONDITIONS:
                if args.only and label not in args.only:
                    continue
                ours, bare, kbps, settled, lost, timing = [], [], [], [], [], []
                for seed in range(1, args.runs + 1):
                    out = f"{work}/out"
                    cmd = [args.example, path, out, "--loss", str(loss), "--seed", str(seed),
                           "--jitter", str(args.jitter)] + (["--burst", str(burst)] if burst else []) \
                        + (["--cap-kbps", str(cap)] if cap else [])
                    figures = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                                        text=True).stdout)
                    ours.append(score(reference, read_wav(f"{out}/termphone.wav")))
                    bare.append(score(reference, read_wav(f"{out}/libopus.wav")))
                    kbps.append(figures["kbps"])
                    settled.append(figures["lastKbps"])
                    lost.append(figures["lost"] - figures["fecRecovered"])
                    timing.append((figures["underruns"], figures["droppedToShrink"],
                                   figures["acceleratedMs"], figures["heldInPauses"]))
                rows.append((name, label, np.mean(ours), min(ours), np.mean(bare), np.mean(kbps),
                             np.mean(settled), np.mean(lost)))
                goal = GOALS.get(label)
                verdict = "" if goal is None else ("  goal %.1f: %s" % (goal, "met" if min(ours) >= goal else "NOT met"))
                print(f"{name:<32} {label:<10} termphone {np.mean(ours):.2f} (worst {min(ours):.2f}) "
                      f"libopus {np.mean(bare):.2f}  {np.mean(kbps):.1f} kbps "
                      f"({np.mean(settled):.1f} in the last 5 s)  "
                      f"concealed {np.mean(lost):.1f}  (underruns, dropped, accelerated ms, held) {timing}{verdict}",
                      flush=True)
    print()
    print(f"| speech | network | termphone PESQ-WB, mean (worst) of {args.runs} | bare libopus "
          "| kbps sent | kbps, last 5 s | frames concealed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, label, mean, worst, bare, kbps, settled, lost in rows:
        print(f"| {name} | {label} | {mean:.2f} ({worst:.2f}) | {bare:.2f} | {kbps:.1f} | {settled:.1f} "
              f"| {lost:.1f} |")


if __name__ == "__main__":
    main()
