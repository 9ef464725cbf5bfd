#!/usr/bin/env python3
"""Writes crates/tessera-lm/tests/fixtures/hf_tokenizers.json: token ids that Hugging Face
`tokenizers` and `transformers` give for the real tokenizer.json files that scripts/fetch-models.sh
puts in .cache/models/hf (SmolLM2 and Gemma 3 converted from their GGUF files by transformers,
and Meta Llama 3's own tokenizer.json).

    scripts/fetch-models.sh
    .cache/models/pyenv/bin/python scripts/gen-hf-tokenizer-fixtures.py

For each text: `ids` (no special tokens added, special tokens in the text parsed: tokenizers'
default), `ids_plain` (special tokens in the text left as text: `encode_special_tokens`) and
`ids_special` (transformers' `tokenizer(text)`, which adds BOS/EOS as the model does). Each model
also records its file's size and FNV-1a 64 hash, so a different conversion is reported as such.
"""

import json
import os
import sys

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.environ.get("TESSERA_MODELS", os.path.join(ROOT, ".cache", "models"))
OUT = os.path.join(ROOT, "crates", "tessera-lm", "tests", "fixtures", "hf_tokenizers.json")

# (directory under $TESSERA_MODELS/hf, the GGUF file it is compared with in the Rust test)
MODELS_LIST = [
    ("SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma-3-270m", "gemma-3-270m-q4_k_m.gguf"),
    ("llama-3", "vocab/ggml-vocab-llama-bpe.gguf"),
]

TEXTS = [
    "",
    " ",
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    " leading space and trailing space ",
    "  two leading spaces",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "    four spaces      six spaces\n        indented",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "fn main() { println!(\"{}\", 1 + 2); } // comment",
    "<html><body class=\"x\">&amp;</body></html>",
    "1 12 123 1234 12345 3.14159 1,000,000 0x1F 2024-01-31",
    "I'm you're he'll she'd IT'S we'VE don't",
    "naïve café résumé Ångström façade Øre",
    "Ελληνικά Русский текст עברית العربية हिन्दी",
    "日本語のテキスト 中文文本 한국어 텍스트",
    "emoji 🦙🔥👍🏽 👨‍👩‍👧 ❤️ flags 🇫🇷",
    "math ∑ ∫ √ ≤ ≥ ≠ ∞ ½ ² ⅔",
    "\u00a0nbsp\u3000ideographic space\u200bzero width",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<s>[INST] plain text with <unk> and </s> [/INST]",
    "<bos><eos><pad> specials spelled out <|endoftext|>",
    "a" * 40 + " " + "ab" * 20,
    "!!!???...,,,;;;:::---___***",
    "Mixed: hello世界123🦙abc\tdef\n",
]


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    out = {"texts": TEXTS, "models": []}
    for name, gguf in MODELS_LIST:
        d = os.path.join(MODELS, "hf", name)
        path = os.path.join(d, "tokenizer.json")
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run scripts/fetch-models.sh")
        data = open(path, "rb").read()
        raw = Tokenizer.from_file(path)
        plain = Tokenizer.from_file(path)
        plain.encode_special_tokens = True
        fast = PreTrainedTokenizerFast.from_pretrained(d)
        cases = []
        for text in TEXTS:
            cases.append(
                {
                    "ids": raw.encode(text, add_special_tokens=False).ids,
                    "ids_plain": plain.encode(text, add_special_tokens=False).ids,
                    "ids_special": fast(text)["input_ids"],
                }
            )
        out["models"].append(
            {
                "dir": f"hf/{name}",
                "gguf": gguf,
                "bytes": len(data),
                "fnv1a64": f"{fnv1a64(data):016x}",
                "vocab_size": raw.get_vocab_size(with_added_tokens=True),
                "bos_id": fast.bos_token_id,
                "eos_id": fast.eos_token_id,
                "cases": cases,
            }
        )
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
