#!/usr/bin/env python3
"""Tessera vs PyTorch on the GPT-2 training step, measured side by side.

For each configuration (batch x seq, precision) runs Tessera's bench_train_step and PyTorch's
torch_gpt2_step.py one after the other, alternating for several rounds (the order flips every
round, so slow drift of the machine favours neither), waits for the CPUs to be idle before each
run (other users' jobs on a shared box would skew one side), and prints the median tokens/s of
each, the ratio Tessera / PyTorch, and every round's figures.

    bench/peers/setup_torch.sh                  # once: PyTorch into bench/peers/.venv
    python3 bench/peers/compare.py --rounds 3   # all four configurations
    python3 bench/peers/compare.py --configs 4x64:bf16 --rounds 5

Raw logs go to --logs (default /tmp/tessera-compare).
"""
import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def cpu_busy(interval=1.0):
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return v[3] + v[4], sum(v)  # idle + iowait, total
    i0, t0 = read()
    time.sleep(interval)
    i1, t1 = read()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(max_busy, seconds, max_wait):
    start, quiet, b = time.time(), 0, 0.0
    while quiet < seconds:
        b = cpu_busy()
        quiet = quiet + 1 if b < max_busy else 0
        if time.time() - start > max_wait:
            print(f"  (CPUs still {b:.0%} busy after {max_wait}s: measuring anyway)", flush=True)
            return False
    return True


def cpu_jiffies():
    """(busy, total) jiffies of all CPUs so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4], sum(v)


def run(cmd, log):
    """Runs cmd, appends its output to log. Returns the fields of its RESULT line and the share of
    the machine's CPU time that other processes used meanwhile (busy time not spent by cmd)."""
    hz = os.sysconf("SC_CLK_TCK")
    b0, t0 = cpu_jiffies()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    b1, t1 = cpu_jiffies()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) * hz
    others = max(0.0, (b1 - b0) - own) / max(1, t1 - t0)
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + f"\n{p.stdout}(other processes: {others:.1%} of CPU)\n\n")
    m = re.search(r"^RESULT (.*)$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        sys.exit(f"compare: {' '.join(cmd)} failed (exit {p.returncode}); see {log}")
    return dict(kv.split("=", 1) for kv in m.group(1).split()), others


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+",
                    default=["4x64:f32", "4x64:bf16", "8x256:f32", "8x256:bf16"],
                    help="BATCHxSEQ:PRECISION ... (default: all four)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tessera", default=str(ROOT / "build-perf" / "bench_train_step"),
                    help="Tessera's bench_train_step binary")
    ap.add_argument("--python", default=str(HERE / ".venv" / "bin" / "python"),
                    help="a Python with torch (bench/peers/setup_torch.sh makes it)")
    ap.add_argument("--logs", default="/tmp/tessera-compare")
    ap.add_argument("--quiet-busy", type=float, default=0.10,
                    help="wait before each run until the CPUs are below this busy fraction")
    ap.add_argument("--quiet-max-wait", type=float, default=600)
    ap.add_argument("--max-others", type=float, default=0.05,
                    help="rerun a measurement when other processes used more than this share "
                         "of the CPUs during it")
    ap.add_argument("--retries", type=int, default=3)
    a = ap.parse_args()

    for path, what in ((a.tessera, "Tessera's bench_train_step"), (a.python, "the torch venv")):
        if not os.access(path, os.X_OK):
            sys.exit(f"compare: {what} not found at {path} (build it / run setup_torch.sh)")
    Path(a.logs).mkdir(parents=True, exist_ok=True)
    log = Path(a.logs) / time.strftime("compare-%Y%m%d-%H%M%S.log")
    print(f"compare: {a.rounds} rounds, {a.threads} threads; logs in {log}", flush=True)

    rows = []
    for spec in a.configs:
        m = re.fullmatch(r"(\d+)x(\d+):(f32|bf16)", spec)
        if not m:
            sys.exit(f"compare: bad config '{spec}', expected e.g. 4x64:bf16")
        batch, seq, prec = m.group(1), m.group(2), m.group(3)
        # Same warm-up and timed steps on both sides; fewer for the long 8 x 256 steps.
        small = int(batch) * int(seq) <= 512
        warmup, steps = ("2", "5") if small else ("1", "3")
        common = ["--batch", batch, "--seq", seq, "--precision", prec, "--threads",
                  str(a.threads), "--warmup", warmup, "--steps", steps]
        cmds = {"tessera": [a.tessera] + common,
                "torch": [a.python, str(HERE / "torch_gpt2_step.py")] + common}
        got = {"tessera": [], "torch": []}
        for r in range(a.rounds):
            order = ["tessera", "torch"] if r % 2 == 0 else ["torch", "tessera"]
            for impl in order:
                # A run during which other processes took a noticeable share of the CPUs is
                # repeated (up to --retries times; the last attempt counts whatever happens).
                for attempt in range(a.retries + 1):
                    wait_quiet(a.quiet_busy, 3, a.quiet_max_wait)
                    res, others = run(cmds[impl], log)
                    note = f"  (others used {others:.0%} of the CPUs"
                    if others <= a.max_others or attempt == a.retries:
                        break
                    print(f"  {spec:11s} round {r + 1}: {impl:8s} {float(res['tokens_per_s']):8.1f}"
                          f" tokens/s{note}: discarded, rerun)", flush=True)
                got[impl].append(float(res["tokens_per_s"]))
                print(f"  {spec:11s} round {r + 1}: {impl:8s} {got[impl][-1]:8.1f} tokens/s"
                      f"{note})", flush=True)
        t, p = statistics.median(got["tessera"]), statistics.median(got["torch"])
        rows.append((spec, t, p, got))

    print(f"\nmedians over {a.rounds} alternated rounds ({a.threads} threads, tokens/s):")
    print(f"  {'config':11s} {'tessera':>9s} {'pytorch':>9s} {'ratio':>6s}   rounds "
          "(tessera | pytorch)")
    for spec, t, p, got in rows:
        runs = " ".join(f"{x:.0f}" for x in got["tessera"]) + " | " + \
               " ".join(f"{x:.0f}" for x in got["torch"])
        print(f"  {spec:11s} {t:9.1f} {p:9.1f} {t / p:6.2f}x   {runs}")
    by = {spec: t for spec, t, _, _ in rows}
    for shape in sorted({s.split(":")[0] for s in by}):
        if f"{shape}:f32" in by and f"{shape}:bf16" in by:
            print(f"  Tessera bf16 / f32 at {shape}: {by[shape + ':bf16'] / by[shape + ':f32']:.2f}x")


if __name__ == "__main__":
    main()
