"""The vocabulary part of a GGUF: read an HF tokenizer.json and write llama.cpp's tokenizer keys."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

from edgeprof.models.architecture import Architecture
from edgeprof.errors import ModelSpecError
from edgeprof.models.source import read_json

# llama.cpp names pre-tokenizers by family; it uses the regex of the named one when tokenizing text.
_PRE_TOKENIZER_BY_FAMILY = {"qwen2": "qwen2", "qwen3": "qwen2", "qwen3_moe": "qwen2", "olmoe": "olmo",
                            "mistral": "default"}


@dataclass
class Vocabulary:
    """Tokens by id, their llama.cpp token types, merges (BPE) and scores (SentencePiece-style)."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece-style with byte fallback)
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    scores: list[float] | None
    bos_id: int | None
    eos_id: int | None
    # tokenizer.json splits text with GPT-2's own regex (a plain ByteLevel pre-tokenizer): llama.cpp's "gpt2"
    # pre-tokenizer "gpt-2" is that regex, where its "default" splits punctuation apart first (other tokens for code)
    gpt2_pre_tokenizer: bool = False


def read_vocabulary(folder: Path, arch: Architecture) -> Vocabulary:
    """Parse tokenizer.json (BPE models only) and pad it to the config's vocab_size."""
    path = folder / "tokenizer.json"
    data = read_json(path, "needed to write the GGUF vocabulary")
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise ModelSpecError(f"{path}: only BPE tokenizers are supported, found {model.get('type')!r}")
    byte_fallback = bool(model.get("byte_fallback"))
    ids = list(model["vocab"].values()) + [int(t["id"]) for t in data.get("added_tokens", [])]
    n_vocab = max([arch.vocab_size, *(i + 1 for i in ids)])
    tokens: list[str | None] = [None] * n_vocab
    types = [gguf.TokenType.NORMAL] * n_vocab
    for piece, token_id in model["vocab"].items():
        if token_id < n_vocab:
            tokens[token_id] = piece
            if byte_fallback and len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                types[token_id] = gguf.TokenType.BYTE
    for added in data.get("added_tokens", []):
        token_id = int(added["id"])
        if token_id < n_vocab:
            tokens[token_id] = added["content"]
            types[token_id] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    for token_id, piece in enumerate(tokens):
        if piece is None:  # configs often reserve more ids than the tokenizer defines
            tokens[token_id] = f"[PAD{token_id}]"
            types[token_id] = gguf.TokenType.UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    bos, eos = arch.config.get("bos_token_id"), arch.config.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    return Vocabulary(
        model="llama" if byte_fallback else "gpt2",
        tokens=tokens,  # type: ignore[arg-type]
        token_types=[int(t) for t in types],
        merges=merges,
        scores=[-float(i) for i in range(n_vocab)] if byte_fallback else None,
        bos_id=int(bos) if bos is not None else None,
        eos_id=int(eos) if eos is not None else None,
        gpt2_pre_tokenizer=(data.get("pre_tokenizer") or {}).get("type") == "ByteLevel"
        and (data.get("pre_tokenizer") or {}).get("use_regex", True),
    )


def write_vocabulary(writer: gguf.GGUFWriter, vocab: Vocabulary, arch: Architecture) -> None:
    """Add the tokenizer keys llama.cpp reads at load time."""
    writer.add_tokenizer_model(vocab.model)
    if vocab.model == "gpt2":
        pre = _PRE_TOKENIZER_BY_FAMILY.get(arch.model_type)
        if pre is None:
            pre = ("gpt-4o" if arch.model_type == "phi3" and arch.vocab_size >= 200000 else
                   "llama-bpe" if arch.vocab_size >= 128000 else "smollm" if arch.vocab_size == 49152 else
                   "gpt-2" if vocab.gpt2_pre_tokenizer else "default")
        writer.add_tokenizer_pre(pre)
        writer.add_token_merges(vocab.merges)
    else:
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(vocab.scores)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    if vocab.bos_id is not None:
        writer.add_bos_token_id(vocab.bos_id)
    if vocab.eos_id is not None:
        writer.add_eos_token_id(vocab.eos_id)
    writer.add_add_bos_token(False)
