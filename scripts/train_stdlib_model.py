"""Train the small Llama-shaped model edgeprof measures fidelity on (real weights, made here).

Random synth weights make perplexity meaningless and hide the outliers that make quantization hard, and
no model hub is reachable here, so this trains one: a byte-level BPE tokenizer (2048 tokens) and a
2.1M-parameter Llama (2 layers, hidden 256, 4 heads / 2 KV heads of 64, SwiGLU 768, tied embeddings) on
Python's own standard-library sources (PSF License Version 2, redistributable; see the README written
next to the model). Every row length is a multiple of 256, so llama.cpp's k-quants apply to every matrix
as they do in real models.

Deterministic: sorted files, a fixed seed, deterministic torch kernels, one thread count. The held-out
modules (HELD_OUT) are never trained on; their text is edgeprof's default fidelity text.

    nice -n 10 python scripts/train_stdlib_model.py            # writes edgeprof/_data/ (about 10 min on 2 idle cores, 30 on a busy host)
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
HELD_OUT = ("statistics.py", "fractions.py", "textwrap.py", "heapq.py")  # the fidelity text, never trained on
VOCAB = 2048
CONFIG = dict(vocab_size=VOCAB, hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=64, max_position_embeddings=1024, rms_norm_eps=1e-5,
              rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, hidden_act="silu")
SEQ, BATCH, STEPS, LR, WARMUP, SEED = 128, 16, 400, 5e-3, 30, 0
SPECIAL = "<|endoftext|>"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--out", type=Path, default=DATA)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    train_text, held_text, train_names = build_texts(args.stdlib)
    tokenizer = train_tokenizer(train_text)
    ids = np.asarray(tokenizer.encode(train_text).ids, dtype=np.int64)
    print(f"corpus: {len(train_names)} modules, {len(train_text)} chars, {len(ids)} tokens", flush=True)

    model = LlamaForCausalLM(LlamaConfig(**CONFIG))
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(SEED)
    started = time.time()
    losses = []
    for step in range(args.steps):
        lr = LR * min(1.0, (step + 1) / WARMUP) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        starts = rng.integers(0, len(ids) - SEQ - 1, size=BATCH)
        batch = torch.from_numpy(np.stack([ids[s:s + SEQ] for s in starts]))
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 20 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  lr {lr:.2e}  {time.time() - started:.0f} s", flush=True)

    out = args.out / "stdlib-llama"
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIAL, "eos_token": SPECIAL,
        "model_max_length": CONFIG["max_position_embeddings"]}, indent=2) + "\n")
    (out / "generation_config.json").unlink(missing_ok=True)
    text_dir = args.out / "fidelity"
    text_dir.mkdir(parents=True, exist_ok=True)
    (text_dir / "python-stdlib-heldout.txt").write_text(held_text, encoding="utf-8")
    facts = {"parameters": params, "steps": args.steps, "sequence": SEQ, "batch": BATCH, "lr": LR, "seed": SEED,
             "tokens_seen": args.steps * SEQ * BATCH, "corpus_tokens": int(len(ids)),
             "final_loss_mean_last_20": float(np.mean(losses[-20:])), "train_seconds": round(time.time() - started),
             "python_stdlib": str(args.stdlib), "held_out": list(HELD_OUT),
             "corpus_sha256": hashlib.sha256(train_text.encode()).hexdigest(),
             "torch": torch.__version__}
    (out / "training.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts, indent=2))


if __name__ == "__main__":
    main()
