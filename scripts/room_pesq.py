#!/usr/bin/env python3
"""PESQ-WB of bob's voice as alice heard it in the PulseAudio room of the
`voice_pulse` test (issue 22): alone (11.5 s into the call) and while alice
speaks too (double talk, 18.5 s), through bob's voice processing, Opus, the
relay and alice's jitter buffer.

Needs: `pip install pesq numpy scipy`, and

    TERMPHONE_ROOM_KEEP=/tmp/room cargo test --test tests voice_pulse
    python3 scripts/room_pesq.py /tmp/room
"""

import os
import sys

import numpy as np

from noise_pesq import RATE, read, score


def find(heard, said, at):
    """Where `said` starts in `heard`, looked for from a second before `at`
    (seconds into the call) to two after."""
    a = max(0, int((at - 1.0) * RATE))
    seg = heard[a : int((at + 2.0) * RATE) + len(said)]
    return a + int(np.argmax(np.correlate(seg, said, "valid")))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: room_pesq.py DIR (where TERMPHONE_ROOM_KEEP kept the room's recordings)")
    d = sys.argv[1]
    heard = read(os.path.join(d, "heard.wav"))
    for name, file, at in [("bob alone", "bob1.wav", 11.5), ("double talk", "bob2.wav", 18.5)]:
        said = read(os.path.join(d, file))
        start = find(heard, said, at)
        pesq = score(said, heard[start : start + len(said)])
        print(f"{name}: PESQ-WB {pesq:.2f} (heard from {start / RATE:.2f} s)")


if __name__ == "__main__":
    main()
