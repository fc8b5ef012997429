"""Random-weight HF checkpoints of real architectures (`synth:<preset>`).

Speed does not depend on weight values, so a seeded random model of the right shape measures what the
real one would, with no download. The folder holds config.json, model.safetensors and a byte-level BPE
tokenizer.json, so every exporter treats it exactly like a user's local checkpoint.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgeprof.models.architecture import Architecture, TensorSpec
from edgeprof.paths import cache_root, ensure_writable_dir
from edgeprof.models.presets import Preset
from edgeprof.models.safetensors_io import write_streaming

SYNTH_FORMAT_VERSION = 2  # bump when the weights or files written here change
_COMPLETE_MARKER = ".complete"


def synth_folder(preset: Preset, seed: int = 0) -> Path:
    """The cache folder of this preset's synth checkpoint (it may not exist yet)."""
    key = json.dumps([preset.hf_config, preset.synth_dtype, seed, SYNTH_FORMAT_VERSION], sort_keys=True)
    digest = zlib.crc32(key.encode()) & 0xFFFFFFFF
    return cache_root() / "synth" / f"{preset.name}-s{seed}-{digest:08x}"


def ensure_synth(preset: Preset, seed: int = 0) -> Path:
    """Write the synth checkpoint unless a complete one is cached; return its folder."""
    folder = synth_folder(preset, seed)
    if (folder / _COMPLETE_MARKER).exists():
        return folder
    ensure_writable_dir(folder.parent, "model cache")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    write_checkpoint(partial, preset, seed)
    (partial / _COMPLETE_MARKER).write_text("")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def write_checkpoint(folder: Path, preset: Preset, seed: int) -> None:
    """config.json, model.safetensors (streamed tensor by tensor) and the tokenizer files."""
    arch = preset.architecture
    dtype = np.dtype(preset.synth_dtype)
    config = dict(preset.hf_config, torch_dtype=preset.synth_dtype)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tensors = arch.tensors()
    specs = [(t.name, t.shape, dtype) for t in tensors]
    write_streaming(folder / "model.safetensors", specs,
                    (_random_tensor(t, seed, dtype, arch.is_gemma) for t in tensors))
    write_tokenizer(folder, arch)


def _random_tensor(spec: TensorSpec, seed: int, dtype: np.dtype, norm_offset: bool = False) -> np.ndarray:
    """Seeded per tensor name, so each tensor is reproducible on its own. Norm gains are near one but not
    exactly, so a missed norm shows in parity (Gemma stores w of a (1 + w) gain: near zero). Routers get
    larger weights than projections: their logits then spread by about 1, far beyond the rounding that
    could otherwise flip a near-tie top-k choice between two implementations."""
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
    values = rng.standard_normal(spec.shape, dtype=np.float32)
    if spec.role in ("norm", "qk_norm"):
        values = 0.1 * values + (0.0 if norm_offset else 1.0)
    elif spec.role == "router":
        values *= 0.1
    else:
        values *= 0.02
    return values.astype(dtype, copy=False)


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte-level alphabet: each byte maps to one printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _merge_pieces(alphabet: list[str]) -> Iterator[tuple[str, str]]:
    """Endless (left, right) merges: every existing token extended by every byte, shortest first."""
    queue = list(alphabet)
    index = 0
    while True:
        left = queue[index]
        index += 1
        for right in alphabet:
            queue.append(left + right)
            yield left, right


def bos_eos_ids(arch: Architecture) -> tuple[int, int]:
    """BOS and EOS token ids from the config (the first EOS where it lists several)."""
    eos = arch.config.get("eos_token_id", 2)
    eos = int(eos[0] if isinstance(eos, list) else eos)
    bos = arch.config.get("bos_token_id", 1)
    return (eos if bos is None else int(bos)), eos  # OLMoE names no BOS: its documents start with EOS


def special_tokens(arch: Architecture) -> dict[int, str]:
    """BOS/EOS ids from the config with generic names (the same string when they coincide).

    Phi-3: llama.cpp looks up <unk>, <s>, </s> and <|endoftext|> by name in any GGUF whose name says "phi3"
    and fails to load one that lacks them, so a Phi-3 synth has all four (the spare ones from id 3 up)."""
    bos, eos = bos_eos_ids(arch)
    if arch.model_type == "phi3":
        specials = {bos: "<|endoftext|>"} if bos == eos else {bos: "<s>", eos: "</s>"}
        spare = (i for i in range(3, arch.vocab_size) if i not in specials)
        for name in ("<unk>", "<s>", "</s>", "<|endoftext|>"):
            if name not in specials.values():
                specials[next(spare)] = name
        return specials
    if bos == eos:
        return {bos: "<|endoftext|>"}
    return {bos: "<|begin_of_text|>", eos: "<|end_of_text|>"}


def write_tokenizer(folder: Path, arch: Architecture) -> None:
    """A valid byte-level BPE tokenizer.json of exactly `vocab_size` tokens."""
    specials = special_tokens(arch)
    alphabet = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    merges: list[str] = []
    pieces = iter(alphabet)
    merge_source = _merge_pieces(alphabet)
    for token_id in range(arch.vocab_size):
        if token_id in specials:
            vocab[specials[token_id]] = token_id
            continue
        piece = next(pieces, None)
        if piece is None:
            left, right = next(merge_source)
            piece = left + right
            merges.append(f"{left} {right}")
        vocab[piece] = token_id
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in sorted(specials.items())]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": byte_level, "post_processor": None, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": vocab, "merges": merges},
    }
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    bos_id, eos_id = bos_eos_ids(arch)
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": specials.get(bos_id),
        "eos_token": specials.get(eos_id), "model_max_length": arch.max_position_embeddings}, indent=2))
