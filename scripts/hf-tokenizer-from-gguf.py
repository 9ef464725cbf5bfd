#!/usr/bin/env python3
"""Writes a Hugging Face tokenizer directory (tokenizer.json, tokenizer_config.json and, when the
file has one, chat_template.jinja) from a GGUF file's vocabulary, with transformers' own
GGUF-to-fast-tokenizer conversion.

    python hf-tokenizer-from-gguf.py model.gguf out_dir

Run by scripts/fetch-models.sh in its own virtual environment (pinned transformers, tokenizers,
gguf). transformers' GGUF metadata reader imports torch at module level only for a dtype table,
so a stand-in module is installed when torch is absent: no tensor is read here.
"""

import importlib.machinery
import sys
import types

import transformers  # noqa: F401  (imported before the stand-in, so it sees no torch)
from transformers import PreTrainedTokenizerFast


def _stand_in_torch():
    try:
        import torch  # noqa: F401

        return
    except ImportError:
        pass

    class _Any:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, *args, **kwargs):
            return _Any()

        def __getattr__(self, name):
            return _Any()

    class _Torch(types.ModuleType):
        def __getattr__(self, name):
            return _Any

    stub = _Torch("torch")
    stub.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    sys.modules["torch"] = stub


def main():
    gguf_path, out_dir = sys.argv[1], sys.argv[2]
    _stand_in_torch()
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        convert_gguf_tokenizer,
        get_gguf_tokenizer,
    )

    architecture, tokenizer_dict, tokenizer_config = get_gguf_tokenizer(gguf_path)
    fast, extra = convert_gguf_tokenizer(architecture, tokenizer_dict)
    tok = PreTrainedTokenizerFast(tokenizer_object=fast, **tokenizer_config, **extra)
    tok.save_pretrained(out_dir)


if __name__ == "__main__":
    main()
