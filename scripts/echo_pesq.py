#!/usr/bin/env python3
"""Echo cancellation in a simulated room (issue 22): how far below the far
voice its echo is, how the near voice fares alone, and its PESQ-WB during
double talk.

The room is that of the unit tests in src/media/processing.rs: what the
speaker plays reaches the microphone 40 ms later with no attenuation, plus
a reflection 5 ms after at 0.3. The far end speaks alone for 10 s (the
spoken words of Debian's alsa-utils), the near end alone for 6 s (other
words, same voice), then both for 10 s. What the speaker played and what
the microphone captured go through termphone's own chain
(`examples/echo_room.rs`: echo cancellation, and unless --echo-only noise
suppression and gain control), and the result is scored against the near
voice alone with PESQ-WB (ITU-T P.862.2, via the `pesq` package). Beside
it, what double talk would score with the echo simply turned down by 20 to
40 dB and the near voice untouched: the bar a canceller has to clear.

Needs: `pip install pesq numpy scipy`, and

    cargo build --release --example echo_room
    python3 scripts/echo_pesq.py [--binary target/release/examples/echo_room] [--echo-only]
"""

import argparse
import os
import subprocess
import tempfile

import numpy as np

from noise_pesq import RATE, db, read, score, speech, write

FAR = ["Front_Center", "Front_Left", "Front_Right"]
NEAR = ["Rear_Center", "Rear_Left", "Rear_Right"]


def sec(t):
    return int(t * RATE)


def room(far):
    """40 ms and a sample to the microphone, no attenuation, and a
    reflection 5 ms and a sample on: delays that are not whole samples of
    the 16 kHz bands, as a room's are not."""
    d = sec(0.040) + 1
    tail = d + 241
    echo = np.zeros(len(far))
    echo[d:] = far[:-d]
    echo[tail:] += 0.3 * far[:-tail]
    return echo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/examples/echo_room")
    ap.add_argument("--echo-only", action="store_true")
    args = ap.parse_args()
    n = sec(26)
    far, near = np.zeros(n), np.zeros(n)
    far[: sec(10)] = speech(FAR, 10, 200)[: sec(10)]
    far[sec(16) :] = speech(FAR, 10, 100)[: sec(10)]
    near[sec(10) : sec(16)] = speech(NEAR, 6, 150)[: sec(6)]
    near[sec(16) :] = speech(NEAR, 10, 150)[: sec(10)]
    echo = room(far)
    with tempfile.TemporaryDirectory() as d:
        played, captured, out = (os.path.join(d, f) for f in ["far.wav", "mic.wav", "out.wav"])
        write(played, far)
        write(captured, echo + near)
        flags = ["--echo-only"] if args.echo_only else []
        subprocess.run([args.binary, played, captured, out, *flags], check=True)
        out = read(out)
    alone, both = slice(sec(10), sec(16)), slice(sec(16), n)
    print(f"far voice {db(far[both]):.1f} dB, near voice {db(near[both]):.1f} dB, echo unattenuated")
    for t0, t1 in [(0, 2), (2, 10)]:
        s = slice(sec(t0), sec(t1))
        print(f"echo below the far voice, {t0}-{t1} s: {db(far[s]) - db(out[s]):.1f} dB")
    print(
        f"near voice alone: {db(out[alone]) - db(near[alone]):+.1f} dB, "
        f"PESQ-WB {score(near[alone], out[alone]):.2f}"
    )
    print(
        f"double talk, PESQ-WB of the near voice: microphone {score(near[both], echo[both] + near[both]):.2f}, "
        f"processed {score(near[both], out[both]):.2f}"
    )
    bar = ", ".join(
        f"{att} dB: {score(near[both], near[both] + echo[both] * 10 ** (-att / 20)):.2f}"
        for att in [20, 25, 30, 40]
    )
    print(f"double talk with only the echo turned down by {bar}")


if __name__ == "__main__":
    main()
