#!/usr/bin/env python3
"""CTranslate2 on the same bench as `tarjama bench`, for a same-run, same-machine ratio.

Builds a CTranslate2 model with the shapes of bench/SHAPE.config.json (--shape, as
`tarjama bench --shape`; default opus-mt-ar-en) and random weights directly through CTranslate2's model spec (no PyTorch or transformers needed), then
runs bench/workload.json the way `tarjama bench` does: batches in workload order, every
hypothesis forced to the longest target length of its batch, 2 threads. Prints
`ENGINE MODE TOKENS_PER_S tok/s` lines.

usage: pip install ctranslate2 && python3 bench/ct2_baseline.py [--shape opus-mt-tc-big-ar-en]
       [--compute-types float32,int8]
"""
import argparse
import json
import math
import os
import resource
import tempfile
import time

import numpy as np
import ctranslate2
from ctranslate2.specs import common_spec, transformer_spec

HERE = os.path.dirname(os.path.abspath(__file__))


def sinusoidal(positions, dim):
    """Marian's static position table: sin in the first half, cos in the second."""
    table = np.zeros((positions, dim), dtype=np.float32)
    pos = np.arange(positions)[:, None]
    freq = np.power(10000.0, -2.0 * (np.arange(dim // 2)) / dim)[None, :]
    table[:, : dim // 2] = np.sin(pos * freq)
    table[:, dim // 2:] = np.cos(pos * freq)
    return table


def build_spec(cfg, seed=0):
    rng = np.random.default_rng(seed)
    d, vocab, heads = cfg["d_model"], cfg["vocab_size"], cfg["encoder_attention_heads"]
    layers = (cfg["encoder_layers"], cfg["decoder_layers"])
    activation = {"swish": common_spec.Activation.SWISH, "silu": common_spec.Activation.SWISH,
                  "relu": common_spec.Activation.RELU}[cfg.get("activation_function", "swish")]
    spec = transformer_spec.TransformerSpec.from_config(
        layers, heads, pre_norm=False, activation=activation)

    def rand(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    def linear(s, out_dim, in_dim):
        s.weight, s.bias = rand(out_dim, in_dim), np.zeros(out_dim, np.float32)

    def norm(s):
        s.gamma, s.beta = np.ones(d, np.float32), np.zeros(d, np.float32)

    embedding = rand(vocab, d)
    positions = sinusoidal(cfg["max_position_embeddings"], d)
    for side, ffn in ((spec.encoder, cfg["encoder_ffn_dim"]), (spec.decoder, cfg["decoder_ffn_dim"])):
        side.scale_embeddings = math.sqrt(d) if cfg.get("scale_embedding") else 1.0
        side.position_encodings.encodings = positions
        (side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings).weight = embedding
        for layer in side.layer:
            linear(layer.self_attention.linear[0], 3 * d, d)
            linear(layer.self_attention.linear[1], d, d)
            norm(layer.self_attention.layer_norm)
            if hasattr(layer, "attention"):
                linear(layer.attention.linear[0], d, d)
                linear(layer.attention.linear[1], 2 * d, d)
                linear(layer.attention.linear[2], d, d)
                norm(layer.attention.layer_norm)
            linear(layer.ffn.linear_0, ffn, d)
            linear(layer.ffn.linear_1, d, ffn)
            norm(layer.ffn.layer_norm)
    spec.decoder.start_from_zero_embedding = True
    spec.decoder.projection.weight = embedding
    spec.decoder.projection.bias = np.zeros(vocab, np.float32)
    tokens = ["</s>", "<unk>"] + [f"t{i}" for i in range(2, vocab)]
    spec.register_source_vocabulary(tokens)
    spec.register_target_vocabulary(tokens)
    spec.config.eos_token, spec.config.unk_token = "</s>", "<unk>"
    spec.config.decoder_start_token = "</s>"
    return spec, tokens


def run(translator, tokens, workload):
    # As `tarjama bench`: n random source tokens plus </s>; the workload's target lengths.
    rng = np.random.default_rng(0)
    targets = workload["target_lengths"]
    sources = [[tokens[t] for t in rng.integers(2, len(tokens) - 2, size=n)] + ["</s>"]
               for n in workload["source_lengths"]]
    for mode in workload["modes"]:
        batch, beams = mode["batch"], mode["beam"]
        started, cpu, useful = time.perf_counter(), time.process_time(), 0
        for i in range(0, len(sources), batch):
            n = max(targets[i:i + batch])
            translator.translate_batch(sources[i:i + batch], beam_size=beams, max_batch_size=batch,
                                       max_decoding_length=n, min_decoding_length=n)
            useful += sum(targets[i:i + batch])
        yield mode["name"], useful / (time.perf_counter() - started), time.process_time() - cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="opus-mt-ar-en",
                    choices=["opus-mt-ar-en", "opus-mt-tc-big-ar-en"])
    ap.add_argument("--config", help="a config.json instead of --shape's")
    ap.add_argument("--workload", default=os.path.join(HERE, "workload.json"))
    ap.add_argument("--compute-types", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", help="only these modes (comma-separated), as `tarjama bench --modes`")
    a = ap.parse_args()
    cfg = json.load(open(a.config or os.path.join(HERE, f"{a.shape}.config.json")))
    workload = json.load(open(a.workload))
    if a.modes:
        workload["modes"] = [m for m in workload["modes"] if m["name"] in a.modes.split(",")]
    with tempfile.TemporaryDirectory() as out:
        spec, tokens = build_spec(cfg)
        spec.validate()
        spec.optimize(quantization=None)
        spec.save(out)
        for compute_type in a.compute_types.split(","):
            translator = ctranslate2.Translator(out, device="cpu", intra_threads=a.threads,
                                                inter_threads=1, compute_type=compute_type)
            for mode, rate, cpu in run(translator, tokens, workload):
                print(f"ct2-{compute_type} {mode} {rate:.1f} tok/s ({cpu:.2f} s CPU)", flush=True)
    # Peak resident set of this process (all compute types run), as `tarjama bench` prints it.
    print(f"peak-rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
