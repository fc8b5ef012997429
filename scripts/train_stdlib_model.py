"""Train the small Llama-shaped model edgeprof measures fidelity on (real weights, made here).

Random synth weights make perplexity meaningless and hide the outliers that make quantization hard, and
no model hub is reachable here, so this trains one: a byte-level BPE tokenizer (2048 tokens) and a
2.1M-parameter Llama (2 layers, hidden 256, 4 heads / 2 KV heads of 64, SwiGLU 768, tied embeddings) on
Python's own standard-library sources (PSF License Version 2, redistributable; see the README written
next to the model). Every row length is a multiple of 256, so llama.cpp's k-quants apply to every matrix
as they do in real models.

Three phases, so the long one can run where a GPU is (the project's GPU machine has torch but neither
transformers nor tokenizers):

- `prepare`: the tokenizer, the training and held-out token ids and the held-out text, into --work;
- `train`: a plain-torch Llama (`TinyLlama` below, the same computation as transformers' LlamaForCausalLM
  and parameter names equal to its state dict) trained on --device; held-out loss every --eval-every
  steps; the weights with the lowest held-out loss into --work/weights.pt;
- `save`: the weights loaded into transformers' LlamaForCausalLM, its logits checked against TinyLlama's,
  saved as an fp16 HF checkpoint with the tokenizer and the held-out text (edgeprof's default fidelity
  text) into --out.

`all` (the default) runs the three in turn. Deterministic for a given device: sorted files, a fixed seed,
deterministic torch kernels. The held-out modules (HELD_OUT) are never trained on.

    python scripts/train_stdlib_model.py                                  # all phases on this CPU (hours)
    python scripts/train_stdlib_model.py prepare --work .gpu/train        # here, then on the GPU machine:
    python3 scripts/train_stdlib_model.py train --work .gpu/train --device cuda   # (about a minute on an H200)
    python scripts/train_stdlib_model.py save --work DIR_BACK_FROM_THE_GPU  # here again
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "edgeprof" / "_data"
WORK = ROOT / ".train-stdlib"
HELD_OUT = ("statistics.py", "fractions.py", "textwrap.py", "heapq.py")  # the fidelity text, never trained on
VOCAB = 2048
CONFIG = dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64, max_position_embeddings=1024, rms_norm_eps=1e-5,
              rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, hidden_act="silu")
SEQ, BATCH, STEPS, LR, WARMUP, SEED = 512, 16, 1000, 3e-3, 100, 0  # SEQ = the fidelity chunk: llama-perplexity scores positions up to 511
EVAL_EVERY = 100
SPECIAL = "<|endoftext|>"


# ---- prepare: texts, tokenizer, token ids (tokenizers, numpy) ----

def stdlib_files(stdlib: Path) -> list[Path]:
    """The top-level modules of the standard library, sorted (subpackages and tests left out)."""
    return sorted(p for p in stdlib.glob("*.py") if p.is_file())


def header(path: Path) -> str:
    return f"# ---- Lib/{path.name} (Python standard library, PSF License) ----\n"


def build_texts(stdlib: Path) -> tuple[str, str, list[str]]:
    files = stdlib_files(stdlib)
    train = [p for p in files if p.name not in HELD_OUT]
    held = [stdlib / name for name in HELD_OUT]
    train_text = "".join(header(p) + p.read_text(encoding="utf-8") for p in train)
    held_text = "".join(header(p) + p.read_text(encoding="utf-8") for p in held)
    return train_text, held_text, [p.name for p in train]


def train_tokenizer(text: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[SPECIAL], min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    chunks = [text[i:i + 4096] for i in range(0, len(text), 4096)]
    tokenizer.train_from_iterator(chunks, trainer=trainer)
    return tokenizer


def prepare(stdlib: Path, work: Path) -> None:
    """Write tokenizer.json, train_ids.npy, held_ids.npy (uint16), held.txt and corpus.json into work."""
    import numpy as np

    train_text, held_text, train_names = build_texts(stdlib)
    tokenizer = train_tokenizer(train_text)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(work / "tokenizer.json"))
    np.save(work / "train_ids.npy", np.asarray(tokenizer.encode(train_text).ids, dtype=np.uint16))
    np.save(work / "held_ids.npy", np.asarray(tokenizer.encode(held_text).ids, dtype=np.uint16))
    (work / "held.txt").write_text(held_text, encoding="utf-8")
    corpus = {"python_stdlib": str(stdlib), "modules": len(train_names), "chars": len(train_text),
              "held_out": list(HELD_OUT), "corpus_sha256": hashlib.sha256(train_text.encode()).hexdigest()}
    (work / "corpus.json").write_text(json.dumps(corpus, indent=2) + "\n")
    print(json.dumps(corpus), flush=True)


# ---- train: plain torch, so it runs where transformers is not installed ----

def tiny_llama(torch, config: dict):
    """A Llama decoder with transformers' parameter names and computation (RMSNorm in fp32, rotate-half
    RoPE, grouped-query attention, SwiGLU MLP, tied embeddings), built inside a function so importing this
    script needs no torch."""
    nn, F = torch.nn, torch.nn.functional
    hidden, heads, kv_heads = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    head_dim, eps = config["head_dim"], config["rms_norm_eps"]

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(hidden))

        def forward(self, x):
            h = x.float()
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
            return self.weight * h.to(x.dtype)

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
            self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
            self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
            self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)

        def forward(self, x, cos, sin):
            b, t, _ = x.shape
            q = self.q_proj(x).view(b, t, heads, head_dim).transpose(1, 2)
            k = self.k_proj(x).view(b, t, kv_heads, head_dim).transpose(1, 2)
            v = self.v_proj(x).view(b, t, kv_heads, head_dim).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            k = k.repeat_interleave(heads // kv_heads, dim=1)
            v = v.repeat_interleave(heads // kv_heads, dim=1)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.o_proj(out.transpose(1, 2).reshape(b, t, heads * head_dim))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            inner = config["intermediate_size"]
            self.gate_proj = nn.Linear(hidden, inner, bias=False)
            self.up_proj = nn.Linear(hidden, inner, bias=False)
            self.down_proj = nn.Linear(inner, hidden, bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn, self.mlp = Attention(), MLP()
            self.input_layernorm, self.post_attention_layernorm = RMSNorm(), RMSNorm()

        def forward(self, x, cos, sin):
            x = x + self.self_attn(self.input_layernorm(x), cos, sin)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Body(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(config["vocab_size"], hidden)
            self.layers = nn.ModuleList(Layer() for _ in range(config["num_hidden_layers"]))
            self.norm = RMSNorm()

    class TinyLlama(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Body()
            for module in self.modules():  # transformers' initialisation: N(0, 0.02), norms at 1
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, std=0.02)

        def forward(self, ids):
            t = ids.shape[1]
            inv = 1.0 / config["rope_theta"] ** (torch.arange(0, head_dim, 2, device=ids.device).float() / head_dim)
            angles = torch.outer(torch.arange(t, device=ids.device).float(), inv)
            angles = torch.cat([angles, angles], dim=-1)
            cos, sin = angles.cos(), angles.sin()
            x = self.model.embed_tokens(ids)
            for layer in self.model.layers:
                x = layer(x, cos, sin)
            return self.model.norm(x) @ self.model.embed_tokens.weight.T  # tied output head

    def rotate_half(x):
        half = x.shape[-1] // 2
        return torch.cat([-x[..., half:], x[..., :half]], dim=-1)

    return TinyLlama()


def held_out_loss(torch, model, held, device: str, seq: int) -> float:
    """Mean next-token loss over the held-out ids in non-overlapping windows of seq tokens."""
    windows = held[: (len(held) - 1) // seq * seq + 1]
    inputs = torch.from_numpy(windows[:-1].reshape(-1, seq)).to(device)
    targets = torch.from_numpy(windows[1:].reshape(-1, seq)).to(device)
    model.eval()
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(model(i[None]).flatten(0, 1), t, reduction="sum").item()
                  for i, t in zip(inputs, targets)]
    model.train()
    return sum(losses) / targets.numel()


def train(work: Path, device: str, steps: int, threads: int) -> None:
    """Train TinyLlama on work/train_ids.npy; write work/weights.pt and work/train.json."""
    import numpy as np
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=device != "cpu")
    ids = np.load(work / "train_ids.npy").astype(np.int64)
    held = np.load(work / "held_ids.npy").astype(np.int64)
    model = tiny_llama(torch, CONFIG).to(device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # norm gains are not pulled towards zero
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=LR, betas=(0.9, 0.95))
    rng = np.random.default_rng(SEED)
    started, losses, evals = time.time(), [], []
    best: dict = {"held_out_loss": math.inf}
    for step in range(steps):
        lr = LR * min(1.0, (step + 1) / WARMUP) * (0.05 + 0.475 * (1 + math.cos(math.pi * step / steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = rng.integers(0, len(ids) - SEQ - 1, size=BATCH)
        batch = torch.from_numpy(np.stack([ids[s:s + SEQ + 1] for s in starts])).to(device)
        logits = model(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % EVAL_EVERY == 0 or step == steps - 1:
            evals.append({"step": step, "train_loss": float(np.mean(losses[-50:])),
                          "held_out_loss": held_out_loss(torch, model, held, device, SEQ),
                          "seconds": round(time.time() - started, 1)})
            print(json.dumps(evals[-1]), flush=True)
            if evals[-1]["held_out_loss"] < best["held_out_loss"]:  # early stopping: a small model overfits
                best = {"step": step, "held_out_loss": evals[-1]["held_out_loss"],
                        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    torch.save(best["state"], work / "weights.pt")
    facts = {"parameters": params, "steps": steps, "sequence": SEQ, "batch": BATCH, "lr": LR, "warmup": WARMUP,
             "seed": SEED, "tokens_seen": steps * SEQ * BATCH, "corpus_tokens": int(len(ids)),
             "epochs": round(steps * SEQ * BATCH / len(ids), 2),
             "final_loss_mean_last_50": float(np.mean(losses[-50:])), "held_out_tokens": int(len(held)),
             "kept_step": best["step"], "held_out_loss": best["held_out_loss"], "evals": evals, "train_seconds": round(time.time() - started),
             "device": torch.cuda.get_device_name() if device.startswith("cuda") else device, "torch": torch.__version__}
    (work / "train.json").write_text(json.dumps(facts, indent=2) + "\n")


# ---- save: an HF checkpoint (transformers), checked against TinyLlama ----

def save(work: Path, out: Path) -> None:
    """Load work/weights.pt into LlamaForCausalLM, check its logits equal TinyLlama's, save fp16."""
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    state = torch.load(work / "weights.pt")
    model = LlamaForCausalLM(LlamaConfig(**CONFIG))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise SystemExit(f"weights do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    reference = tiny_llama(torch, CONFIG)
    reference.load_state_dict(state)
    ids = torch.from_numpy(np.load(work / "held_ids.npy")[:SEQ].astype(np.int64))[None]
    with torch.no_grad():
        gap = (model(input_ids=ids).logits - reference(ids)).abs().max().item()
    if gap > 1e-4:  # fp32 on one CPU: only summation order differs between the two forwards
        raise SystemExit(f"LlamaForCausalLM and TinyLlama disagree: max |logit gap| {gap:.2e}")
    print(f"LlamaForCausalLM equals TinyLlama: max |logit gap| {gap:.1e}", flush=True)

    target = out / "stdlib-llama"
    target.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(target, safe_serialization=True)
    (target / "tokenizer.json").write_bytes((work / "tokenizer.json").read_bytes())
    (target / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIAL, "eos_token": SPECIAL,
        "model_max_length": CONFIG["max_position_embeddings"]}, indent=2) + "\n")
    (target / "generation_config.json").unlink(missing_ok=True)
    text_dir = out / "fidelity"
    text_dir.mkdir(parents=True, exist_ok=True)
    (text_dir / "python-stdlib-heldout.txt").write_text((work / "held.txt").read_text(encoding="utf-8"),
                                                        encoding="utf-8")
    trained = json.loads((work / "train.json").read_text())
    facts = {**trained, **json.loads((work / "corpus.json").read_text()), "hf_logit_gap": gap}
    (target / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps({k: v for k, v in facts.items() if k != "evals"}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", nargs="?", default="all", choices=["all", "prepare", "train", "save"])
    parser.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--work", type=Path, default=WORK, help="where the phases hand over their files")
    parser.add_argument("--out", type=Path, default=DATA)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.phase in ("all", "prepare"):
        prepare(args.stdlib, args.work)
    if args.phase in ("all", "train"):
        train(args.work, args.device, args.steps, args.threads)
    if args.phase in ("all", "save"):
        save(args.work, args.out)


if __name__ == "__main__":
    main()
