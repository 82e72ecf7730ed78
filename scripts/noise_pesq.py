#!/usr/bin/env python3
"""Noise suppression on noisy speech (issue 22): PESQ-WB and the level in
speech pauses, before and after.

Speech (the spoken words of Debian's alsa-utils, 300 ms apart, 12 s) is
mixed at 10 dB SNR with generated pink noise (a fan) and with babble (six
other talkers: the same words, shuffled, each from its own offset), as a
microphone would pick them up. Each mix goes through the noise suppressor
a sound card's capture gets (`examples/denoise.rs`: termphone's own chain,
high-pass filter and noise suppression) and both the mix and the result
are scored against the clean speech with PESQ-WB (ITU-T P.862.2, via the
`pesq` package). The level in the pauses (10 ms windows where the clean
speech is silent, from 2 s on) is compared the same way.

Needs: `pip install pesq numpy scipy`, and

    cargo build --release --example denoise
    python3 scripts/noise_pesq.py [--binary target/release/examples/denoise]
"""

import argparse
import os
import subprocess
import tempfile
import wave

import numpy as np
from pesq import pesq
from scipy.signal import resample_poly

WORDS = "/usr/share/sounds/alsa"
RATE = 48_000


def read(path):
    with wave.open(path) as w:
        frames = w.readframes(w.getnframes())
        data = np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0
        data = data.reshape(-1, w.getnchannels()).mean(axis=1)
        if w.getframerate() != RATE:
            data = resample_poly(data, RATE, w.getframerate())
        return data


def write(path, x):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def speech(words, secs, gap_ms, rng=None):
    out = []
    n = int(secs * RATE)
    while sum(len(x) for x in out) < n:
        order = list(words) if rng is None else list(rng.permutation(words))
        for w in order:
            out.append(read(os.path.join(WORDS, w + ".wav")))
            out.append(np.zeros(gap_ms * RATE // 1000))
    return np.concatenate(out)[:n]


def pink(n, rng):
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    return np.fft.irfft(spectrum / np.sqrt(f), n)


def db(x):
    return 10 * np.log10(np.mean(x**2) + 1e-12)


def pauses(clean, x):
    w = RATE // 100
    out = []
    for k in range(2 * RATE // w, len(clean) // w):
        if not np.any(clean[k * w : (k + 1) * w]):
            out.append(x[k * w : (k + 1) * w])
    return np.concatenate(out)


def delay(mix, out, max_lag=RATE // 20):
    """The delay the suppressor added, in samples (up to 50 ms): where its
    output best matches what went in."""
    n = len(mix) + max_lag
    xc = np.fft.irfft(np.fft.rfft(out, 2 * n) * np.conj(np.fft.rfft(mix, 2 * n)), 2 * n)
    return int(np.argmax(xc[:max_lag]))


def score(clean, x):
    return pesq(16_000, resample_poly(clean, 1, 3), resample_poly(x, 1, 3), "wb")


def mixes():
    """The clean speech and its two mixes, 10 dB SNR: (name, clean, mix)."""
    rng = np.random.default_rng(22)
    words = ["Front_Center", "Front_Left", "Front_Right", "Side_Left", "Rear_Center", "Rear_Left"]
    clean = speech(words, 12.0, 300)
    n = len(clean)
    babble = sum(np.roll(speech(words, 12.0, 0, rng), rng.integers(n)) for _ in range(6))
    for name, noise in [("pink", pink(n, rng)), ("babble", babble)]:
        noise = noise * 10 ** ((db(clean) - 10 - db(noise)) / 20)
        yield name, clean, clean + noise


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/examples/denoise")
    args = ap.parse_args()
    runs = list(mixes())
    print(f"speech at {db(runs[0][1]):.1f} dB; noise mixed 10 dB below it")
    print(
        "noise  | PESQ-WB mix -> suppressed | level in pauses, dB: mix -> suppressed | delay"
    )
    with tempfile.TemporaryDirectory() as d:
        for name, clean, mix in runs:
            n = len(mix)
            src, dst = os.path.join(d, "mix.wav"), os.path.join(d, "out.wav")
            write(src, mix)
            subprocess.run([args.binary, src, dst], check=True)
            # Compared as heard, less the suppressor's own delay: else the
            # ends of words slide into the pauses measured.
            lag = delay(mix, read(dst))
            out = np.concatenate([read(dst)[lag:], np.zeros(lag)])[:n]
            before, after = score(clean, mix), score(clean, out)
            p_in, p_out = db(pauses(clean, mix)), db(pauses(clean, out))
            print(
                f"{name:6} | {before:.2f} -> {after:.2f} ({after - before:+.2f}) | "
                f"{p_in:.1f} -> {p_out:.1f} ({p_out - p_in:+.1f}) | {lag / RATE * 1e3:.1f} ms"
            )


if __name__ == "__main__":
    main()
