#!/usr/bin/env python3
"""How far fp32 rounding alone moves a fixture's teacher-forced logits.

For each fixture folder, reruns transformers on reference.json's teacher-forced input in fp32
and in fp64 and prints the largest |difference| between the three: this machine's fp32, the
exact (fp64) logits, and the stored reference. On the main fixtures (random weights of std
0.8) fp32 vs fp64 is ~6e-3 and even the reference tool, rerun here, misses its own numbers by
more than 1e-4; tests/fixtures/conditioned/ is where 1e-4 is meaningful.

With --ours FILE (a JSON [positions][vocab] array of our logits) it also prints ours vs both.

usage: pip install torch transformers sentencepiece safetensors
       python3 bench/reference_noise.py tests/fixtures/tiny-marian-ar-en [DIR ...]
"""
import argparse
import json
import os

import numpy as np
import torch
from transformers import (BartForConditionalGeneration, BartTokenizer, MarianMTModel,
                          MarianTokenizer)


def load(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    if cfg["model_type"] == "marian":
        tok = MarianTokenizer(*(os.path.join(folder, f) for f in ("source.spm", "target.spm", "vocab.json")))
        return MarianMTModel.from_pretrained(folder).eval(), tok
    tok = BartTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    return BartForConditionalGeneration.from_pretrained(folder).eval(), tok


def teacher_forced(model, tok, tf):
    enc = tok(tf["text"], return_tensors="pt")
    dec = torch.tensor([tf["decoder_input_ids"]])
    with torch.no_grad():
        return model(**enc, decoder_input_ids=dec).logits[0].double().numpy()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--ours", help="our teacher-forced logits (JSON), for a single folder")
    args = ap.parse_args()
    for folder in args.folders:
        tf = json.load(open(os.path.join(folder, "reference.json")))["teacher_forced"]
        ref = np.array(tf["logits"])
        model, tok = load(folder)
        f32 = teacher_forced(model, tok, tf)
        f64 = teacher_forced(model.double(), tok, tf)
        gap = lambda a, b: float(np.abs(a - b).max())
        print(f"{folder}: fp32 here vs reference {gap(f32, ref):.2e}, fp64 vs reference "
              f"{gap(f64, ref):.2e}, fp32 vs fp64 {gap(f32, f64):.2e}")
        if args.ours:
            ours = np.array(json.load(open(args.ours)))
            print(f"  ours vs reference {gap(ours, ref):.2e}, ours vs fp64 {gap(ours, f64):.2e}")


if __name__ == "__main__":
    main()
