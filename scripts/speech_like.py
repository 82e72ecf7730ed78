#!/usr/bin/env python3
"""Writes examples/flows/speech_like.wav: about 2 s of synthetic speech-like sound
(48 kHz mono 16-bit) for the flow `speech_like_recording.toml`.

Syllables of a voiced buzz (a pulse train at a gliding pitch through three
formant resonances) between pauses, after 0.3 s of silence: what an
envelope correlation needs (levels that rise and fall like speech), with
no recording of anyone in the repository. Deterministic: the same file
each run.

    python3 scripts/speech_like.py [OUT.wav]
"""

import sys
import wave

import numpy as np
from scipy.signal import lfilter

RATE = 48_000


def resonator(x, hz, bandwidth):
    r = np.exp(-np.pi * bandwidth / RATE)
    a = [1.0, -2.0 * r * np.cos(2 * np.pi * hz / RATE), r * r]
    return lfilter([1.0 - r], a, x)


def syllable(ms, pitch, formants):
    n = RATE * ms // 1000
    f0 = np.linspace(pitch, pitch * 0.85, n)
    phase = np.cumsum(f0 / RATE)
    buzz = (np.diff(np.floor(phase), prepend=0.0) > 0).astype(float)
    voiced = sum(resonator(buzz, hz, bw) for hz, bw in formants)
    return voiced * np.hanning(n) ** 0.5


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "examples/flows/speech_like.wav"
    vowels = [[(700, 80), (1200, 90), (2600, 120)], [(300, 60), (2300, 100), (3000, 120)],
              [(500, 70), (900, 80), (2500, 120)]]
    plan = [(180, 140, 0), (90, 0, 0), (240, 160, 1), (60, 0, 0), (150, 150, 2), (200, 0, 0),
            (300, 130, 0), (80, 0, 0), (120, 170, 1), (150, 0, 0), (220, 145, 2)]
    parts = [np.zeros(RATE * 300 // 1000)]
    for ms, pitch, vowel in plan:
        parts.append(syllable(ms, pitch, vowels[vowel]) if pitch else np.zeros(RATE * ms // 1000))
    signal = np.concatenate(parts)
    signal = np.concatenate([signal, np.zeros(max(0, 2 * RATE - len(signal)))])
    signal *= 0.5 / np.max(np.abs(signal))
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((signal * 32767).astype("<i2").tobytes())


if __name__ == "__main__":
    main()
