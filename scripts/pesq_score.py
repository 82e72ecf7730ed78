#!/usr/bin/env python3
"""Scores speech sent through termphone's media path with PESQ (wideband).

Two headless devices call each other through a relay that loses 0%, 5% and
10% of the media frames at random, and 5% in bursts of 3; alice speaks a
WAV file, bob records what he hears, and PESQ-WB compares the two (ITU-T
P.862.2, via the `pesq` package). Beside each score: the call's own
estimate, bob's MEDIA_STATS `mos` (the E-model of src/media/mos.rs).

Needs: `pip install pesq numpy scipy`, a release build (`cargo build
--release`), and speech at 48 kHz mono: by default the spoken words of
Debian's alsa-utils (/usr/share/sounds/alsa/*.wav), or --speech FILE.

    python3 scripts/pesq_score.py [--speech FILE] [--binary target/release/termphone] [--runs N]
    python3 scripts/pesq_score.py --real-clock   # also needs pulseaudio, pulseaudio-utils

With --real-clock (issue 13) the same speech also goes through a sound card
on a real clock: a private PulseAudio server (a temporary runtime directory,
never the user's) whose null sink's monitor is alice's default microphone;
the speech is played into the sink, alice captures it, and bob's recording
is scored beside the WAV file's, without loss.
"""

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave

import numpy as np
from pesq import pesq
from scipy.signal import resample_poly

WORDS = ["Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right"]


def read_wav(path):
    with wave.open(path) as w:
        assert w.getsampwidth() == 2, f"{path}: 16-bit PCM expected"
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels()).mean(axis=1)
        assert w.getframerate() == 48000, f"{path}: 48 kHz expected"
    return data / 32768.0


def write_wav(path, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())


def default_speech(path):
    gap = np.zeros(int(0.3 * 48000))
    parts = []
    for word in WORDS:
        parts += [read_wav(f"/usr/share/sounds/alsa/{word}.wav"), gap]
    write_wav(path, np.concatenate(parts))


class Device:
    def __init__(self, binary, env, args):
        self.proc = subprocess.Popen(
            [binary, "headless", *args], env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def send(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def expect(self, name, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                event = self.events.get(timeout=deadline - time.time())
            except queue.Empty:
                break
            if event["event"] == name:
                return event
        sys.exit(f"no {name} within {timeout} s")

    def quit(self):
        self.send(cmd="quit")
        self.proc.wait(timeout=10)


class Pulse:
    """A private PulseAudio server with a null sink `a` (48 kHz) whose
    monitor is the default source; stopped by its own pid."""

    def __init__(self, work):
        self.dir = tempfile.mkdtemp(prefix="termphone-pulse", dir=work)
        os.chmod(self.dir, 0o700)
        os.makedirs(f"{self.dir}/home")
        socket_path = f"{self.dir}/runtime/native"
        self.env = dict(os.environ, XDG_RUNTIME_DIR=self.dir, PULSE_RUNTIME_PATH=f"{self.dir}/runtime",
                        PULSE_STATE_PATH=f"{self.dir}/state", PULSE_SERVER=f"unix:{socket_path}",
                        PULSE_COOKIE=f"{self.dir}/cookie")
        tools_env = dict(self.env, HOME=f"{self.dir}/home")
        subprocess.run(["pulseaudio", "--daemonize=yes", "--exit-idle-time=-1", "--use-pid-file=yes",
                        "--disable-shm=yes", "-n",
                        f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket_path}",
                        "--load=module-null-sink sink_name=a rate=48000 channels=2",
                        f"--log-target=file:{self.dir}/pulse.log"], env=tools_env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while not os.path.exists(f"{self.dir}/runtime/pid") and time.time() < deadline:
            time.sleep(0.05)
        with open(f"{self.dir}/runtime/pid") as f:
            self.pid = int(f.read().strip())
        self.tools_env = tools_env
        for args in (["set-default-sink", "a"], ["set-default-source", "a.monitor"]):
            subprocess.run(["pactl", *args], env=tools_env, check=True)

    def play(self, sink, wav):
        return subprocess.Popen(["paplay", "-d", sink, "--latency-msec=20", wav], env=self.tools_env)

    def stop(self):
        os.kill(self.pid, signal.SIGTERM)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call_through(binary, speech, loss, work, pulse=None, burst=None, run=0):
    """Bob's recording of alice's speech, and bob's MEDIA_STATS of the call."""
    base = pulse.env if pulse else os.environ
    tag = f"{loss}-{burst}-{run}rc" if pulse else f"{loss}-{burst}-{run}"
    env = dict(base, XDG_DATA_HOME=f"{work}/data{tag}", XDG_CONFIG_HOME=f"{work}/config",
               HOME=work, TERMPHONE_LOG="warn")
    port = free_port()
    relay = subprocess.Popen(
        [binary, "relay", "--listen", f"127.0.0.1:{port}", "--db", f"{work}/relay{tag}.db",
         "--media-loss", str(loss), *(["--media-loss-burst", str(burst)] if burst else [])], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    heard = f"{work}/heard{tag}.wav"
    url = f"ws://127.0.0.1:{port}"
    source = "default" if pulse else f"wav:{speech}"
    alice = Device(binary, env, ["--relay", url, "--user", "alice", "--audio-in", source,
                                 "--audio-out", "null"])
    bob = Device(binary, env, ["--relay", url, "--user", "bob", "--audio-in", "null",
                               "--audio-out", f"wav:{heard}"])
    alice.expect("SDK_READY")
    bob.expect("SDK_READY")
    alice.send(cmd="call", userID="bob")
    bob.expect("ON_CALL_RECEIVED")
    bob.send(cmd="accept")
    alice.expect("ON_CALL_BEGIN")
    with wave.open(speech) as w:
        seconds = w.getnframes() / w.getframerate()
    if pulse:
        # Past the sound card's start (an ALSA stream on PulseAudio can take
        # 2 s to flow), then the speech into the sink alice listens to.
        time.sleep(3.0)
        pulse.play("a", speech).wait()
        time.sleep(1.0)
    else:
        time.sleep(seconds + 1.0)
    alice.send(cmd="hangup")
    bob.expect("CALLING_END")
    stats = bob.expect("MEDIA_STATS")
    alice.quit()
    bob.quit()
    relay.terminate()
    relay.wait()
    return read_wav(heard), stats


def score(reference, degraded):
    # Align: the recording starts when bob's call began, not alice's.
    corr = np.correlate(degraded[: len(reference) + 6 * 48000], reference, mode="valid")
    lag = int(np.argmax(corr))
    degraded = degraded[lag : lag + len(reference)]
    reference = reference[: len(degraded)]
    ref16 = resample_poly(reference, 1, 3)
    deg16 = resample_poly(degraded, 1, 3)
    return pesq(16000, ref16, deg16, "wb"), lag / 48.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speech", help="48 kHz mono 16-bit speech WAV")
    parser.add_argument("--binary", default="target/release/termphone")
    parser.add_argument("--real-clock", action="store_true",
                        help="also through a sound card on a real clock (a private PulseAudio server)")
    parser.add_argument("--runs", type=int, default=1,
                        help="calls per network condition (loss patterns vary from call to call)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        speech = args.speech or f"{work}/speech.wav"
        if not args.speech:
            default_speech(speech)
        reference = read_wav(speech)
        print(f"speech: {len(reference) / 48000:.1f} s; termphone's default media settings, through {args.binary}")
        # Beside each PESQ score, the call's own estimate (MEDIA_STATS mos,
        # the E-model of src/media/mos.rs) from what bob's device measured.
        for loss, burst in [(0, None), (5, None), (10, None), (5, 3)]:
            for run in range(args.runs):
                heard, stats = call_through(args.binary, speech, loss, work, burst=burst, run=run)
                mos, lag = score(reference, heard)
                kind = f"bursts of {burst}" if burst else "random"
                print(f"loss {loss:>2}% {kind:<11}: PESQ-WB {mos:.2f} (aligned at {lag:.0f} ms); "
                      f"mos {stats['mos']:.2f}, lossPercent {stats['lossPercent']:.1f}, "
                      f"fecRecovered {stats['fecRecovered']}, framesLost {stats['framesLost']}, "
                      f"jitterUnderruns {stats['jitterUnderruns']}")
        if args.real_clock:
            if not shutil.which("pulseaudio"):
                sys.exit("--real-clock needs pulseaudio and pulseaudio-utils")
            pulse = Pulse(work)
            try:
                heard, stats = call_through(args.binary, speech, 0, work, pulse)
            finally:
                pulse.stop()
            mos, lag = score(reference, heard)
            print(f"real-clock microphone (PulseAudio null sink), loss 0%: PESQ-WB {mos:.2f} (aligned at {lag:.0f} ms); "
                  f"jitterMs {stats['jitterMs']}, jitterUnderruns {stats['jitterUnderruns']}, "
                  f"acceleratedMs {stats['acceleratedMs']}")


if __name__ == "__main__":
    main()
