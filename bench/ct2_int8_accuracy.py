#!/usr/bin/env python3
"""How far CTranslate2's int8 is from its own float32 on one model: the yardstick for
tarjama's int8 (issue #14), which `cargo test --release --test int8_accuracy` measures the same
way on the same inputs.

Converts a Hugging Face Marian/BART folder with CTranslate2's transformers converter, then on
deterministic inputs (the same SplitMix64 draw as tests/int8_accuracy.rs) compares int8 with
float32: greedy outputs (identical, mean common-prefix share) and teacher-forced logits along
float32's greedy output (max |Δ logit|, top-1 agreement over all positions).

Marian models must have a zero pad embedding, as real opus-mt checkpoints do (random-weight
ones: copy them with bench/zero_marian_pad.py first; the script refuses otherwise).

usage: pip install ctranslate2 transformers torch sentencepiece
       python3 bench/ct2_int8_accuracy.py MODEL_DIR [--workload bench/workload.json] [--json OUT]
Without --workload: 240 inputs of 4..40 tokens, 30 new tokens each (the tiny fixtures); with it:
the workload's source lengths, each decoding up to its target length (the bench model made by
make_bench_model.py --std 0.05).
"""
import argparse
import json
import os
import tempfile

import numpy as np
import ctranslate2

MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & MASK

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)


def inputs(cfg, workload):
    """(source ids ending in EOS, new tokens) pairs; must match tests/int8_accuracy.rs."""
    v, eos = cfg["vocab_size"], cfg["eos_token_id"]
    lo = 5 if cfg["model_type"] == "bart" else 2
    hi = v - 1
    rng = SplitMix64(0x1A7)
    if workload:
        wl = json.load(open(workload))
        pairs = list(zip(wl["source_lengths"], wl["target_lengths"]))
    else:
        pairs = [(4 + (i * 7) % 37, 30) for i in range(240)]
    out = []
    for n, t in pairs:
        ids = [lo + rng.next() % (hi - lo) for _ in range(n)]
        out.append((ids + [eos], t))
    return out


def forced_bos(cfg):
    """The token transformers forces first (BART CNN checkpoints), as tarjama does."""
    if cfg.get("forced_bos_token_id") is not None:
        return cfg["forced_bos_token_id"]
    if cfg.get("force_bos_token_to_be_generated"):
        return cfg["bos_token_id"]
    return None


def check_pad_row(model, cfg):
    """CTranslate2 drops Marian's pad token and starts decoding from `</s>`, assuming the pad
    embedding is zero (as in real opus-mt checkpoints). If it is not, CTranslate2 decodes a
    different model from tarjama's and transformers', and the figures compare different
    trajectories."""
    if cfg["model_type"] != "marian":
        return
    from safetensors import safe_open
    with safe_open(os.path.join(model, "model.safetensors"), "np") as f:
        for name in f.keys():
            if name.endswith("shared.weight") or name.endswith("embed_tokens.weight"):
                row = f.get_slice(name)[cfg["pad_token_id"]]
                if np.abs(row).max() != 0:
                    raise SystemExit(f"{model}: {name} has a non-zero pad row; make a copy with "
                                     "bench/zero_marian_pad.py and measure that")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--workload")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    check_pad_row(a.model, cfg)
    work = tempfile.mkdtemp()
    out = os.path.join(work, "ct2")
    ctranslate2.converters.TransformersConverter(a.model).convert(out, force=True)
    vocab_file = os.path.join(out, "shared_vocabulary.json")
    if not os.path.exists(vocab_file):
        vocab_file = os.path.join(out, "target_vocabulary.json")
    vocab = json.load(open(vocab_file))
    engines = {ct: ctranslate2.Translator(out, compute_type=ct, intra_threads=a.threads)
               for ct in ("float32", "int8")}
    pairs = inputs(cfg, a.workload)
    srcs = [[vocab[i] for i in ids] for ids, _ in pairs]
    # tarjama's rules (tests/int8_accuracy.rs): end-of-sequence allowed from the first step
    # (CTranslate2's default min_decoding_length is 1), BART's forced BOS as a one-token prefix,
    # no forced EOS at the length limit (CTranslate2 has none), so both engines decode the same
    # trajectories in float32.
    bos = forced_bos(cfg)
    prefix = [[vocab[bos]]] if bos is not None else None
    greedy = {}
    for ct, tr in engines.items():
        greedy[ct] = [tr.translate_batch([s], beam_size=1, max_decoding_length=t,
                                         min_decoding_length=0,
                                         target_prefix=prefix)[0].hypotheses[0]
                      for s, (_, t) in zip(srcs, pairs)]
    same, shares = 0, []
    for f, q in zip(greedy["float32"], greedy["int8"]):
        same += f == q
        lcp = 0
        while lcp < min(len(f), len(q)) and f[lcp] == q[lcp]:
            lcp += 1
        shares.append(lcp / max(len(f), len(q), 1))
    max_delta, agree, positions = 0.0, 0, 0
    for s, f in zip(srcs, greedy["float32"]):
        if not f:
            continue
        logits = {}
        for ct, tr in engines.items():
            r = tr.translate_batch([s], target_prefix=[f], beam_size=1, min_decoding_length=0,
                                   max_decoding_length=len(f), return_logits_vocab=True)
            logits[ct] = np.stack([np.asarray(x, dtype=np.float32) for x in r[0].logits[0][:len(f)]])
        a32, a8 = logits["float32"], logits["int8"]
        max_delta = max(max_delta, float(np.abs(a32 - a8).max()))
        agree += int((a32.argmax(-1) == a8.argmax(-1)).sum())
        positions += a32.shape[0]
    result = {
        "engine": "ctranslate2-" + ctranslate2.__version__,
        "model": os.path.abspath(a.model),
        "inputs": len(pairs),
        "identical_greedy": same,
        "mean_common_prefix_share": float(np.mean(shares)),
        "max_abs_logit_delta": max_delta,
        "top1_agreement": agree / max(positions, 1),
        "positions": positions,
    }
    print(json.dumps(result, indent=1))
    if a.json:
        json.dump(result, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
