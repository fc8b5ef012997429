"""The training script's plain-torch Llama is transformers' LlamaForCausalLM: weights trained with it (on a
machine without transformers) load into the HF checkpoint edgeprof ships and give the same logits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _script():
    path = Path(__file__).resolve().parent.parent / "scripts" / "train_stdlib_model.py"
    spec = importlib.util.spec_from_file_location("train_stdlib_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_llama_equals_transformers_forward():
    script = _script()
    torch.manual_seed(0)
    tiny = script.tiny_llama(torch, script.CONFIG)
    with torch.no_grad():  # norms away from 1, so a missing or misplaced gain shows
        for name, param in tiny.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                param.uniform_(0.5, 1.5)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**script.CONFIG))
    missing, unexpected = hf.load_state_dict(tiny.state_dict(), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    hf.tie_weights()
    ids = torch.randint(0, script.VOCAB, (2, 96))
    with torch.no_grad():
        gap = (hf(input_ids=ids).logits - tiny(ids)).abs().max().item()
        # one weight changed must show: the comparison is not vacuous
        tiny.model.layers[1].self_attn.k_proj.weight.mul_(1.01)
        changed = (hf(input_ids=ids).logits - tiny(ids)).abs().max().item()
    assert gap < 1e-4 < changed  # fp32, same CPU: only summation order may differ
