#!/usr/bin/env python3
"""tarjama f32, tarjama int8 and CTranslate2 int8 on the bench workload, interleaved: each
round runs the three once, in that order, so machine noise hits all of them alike. Prints every
round, then the median per engine and mode, tarjama int8 / CTranslate2 int8, and peak RSS.

usage: cargo build --release && pip install ctranslate2
       python3 bench/int8_rounds.py [--rounds 3] [--binary target/release/tarjama]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(cmd):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    rates, rss = {}, None
    for line in out.splitlines():
        m = re.match(r"(?:ct2-\S+ )?(\S+) ([\d.]+) tok/s", line)
        if m:
            rates[m.group(1)] = float(m.group(2))
        m = re.match(r"peak-rss (\d+) MiB", line)
        if m:
            rss = int(m.group(1))
    return rates, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "tarjama"))
    a = ap.parse_args()
    engines = {
        "tarjama-f32": [a.binary, "bench", "--compute-type", "f32"],
        "tarjama-int8": [a.binary, "bench", "--compute-type", "int8"],
        "ct2-int8": [sys.executable, os.path.join(HERE, "ct2_baseline.py"), "--compute-types", "int8"],
    }
    results = {e: [] for e in engines}
    rss = {e: [] for e in engines}
    for r in range(a.rounds):
        for name, cmd in engines.items():
            rates, peak = run(cmd)
            results[name].append(rates)
            rss[name].append(peak)
            print(f"round {r + 1} {name} " + " ".join(f"{m} {v:.1f}" for m, v in rates.items())
                  + f" peak-rss {peak} MiB", flush=True)
    modes = list(results["tarjama-int8"][0].keys())
    med = {e: {m: statistics.median(x[m] for x in results[e]) for m in modes} for e in engines}
    print("\nmedians (tok/s)")
    print("engine " + " ".join(modes) + " peak-rss-MiB")
    for e in engines:
        print(e + " " + " ".join(f"{med[e][m]:.1f}" for m in modes) + f" {max(x or 0 for x in rss[e])}")
    print("tarjama-int8 / ct2-int8 " + " ".join(f"{med['tarjama-int8'][m] / med['ct2-int8'][m]:.2f}" for m in modes))
    print("tarjama-int8 / tarjama-f32 " + " ".join(f"{med['tarjama-int8'][m] / med['tarjama-f32'][m]:.2f}" for m in modes))


if __name__ == "__main__":
    main()
