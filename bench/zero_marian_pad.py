#!/usr/bin/env python3
"""Copies a Hugging Face Marian folder with the pad token's embedding row set to zero.

Real opus-mt checkpoints have a zero pad embedding, and CTranslate2's converter relies on it:
it drops the pad token and starts the decoder from `</s>` instead of transformers' `<pad>`
("the decoder always starts from a zero embedding"). Random-weight models (the tiny fixtures,
make_bench_model.py) have a random pad row, so there CTranslate2 decodes a different model
from transformers and tarjama, and int8-vs-float figures taken on it compare different
trajectories. After this copy all three agree in float32 (bench/ct2_int8_accuracy.py checks).

usage: python3 bench/zero_marian_pad.py SRC_DIR DST_DIR
"""
import json
import os
import shutil
import sys

from safetensors.numpy import load_file, save_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1:]
    cfg = json.load(open(os.path.join(src, "config.json")))
    if cfg.get("model_type") != "marian":
        sys.exit(f"{src}: not a Marian model")
    pad, vocab = cfg["pad_token_id"], cfg["vocab_size"]
    shutil.copytree(src, dst, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("pytorch_model.bin", "reference.json"))
    path = os.path.join(dst, "model.safetensors")
    tensors = load_file(path)
    for name, t in tensors.items():
        if name.endswith("weight") and t.ndim == 2 and t.shape[0] == vocab:
            t[pad] = 0
            print(f"{name}: row {pad} zeroed")
    save_file(tensors, path, metadata={"format": "pt"})


if __name__ == "__main__":
    main()
