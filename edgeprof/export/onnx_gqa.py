"""Replace each layer's exported attention subgraph with ONNX Runtime's fused `GroupQueryAttention`.

Why: optimum's export spells attention out op by op. Every decode step then rebuilds a 4-D causal mask,
repeats the K/V heads for grouped-query attention (a copy of the whole cache), and concatenates the new
position onto the past (another copy plus an allocation). On the 135M model that was over half of each
CPU decode step. `GroupQueryAttention` (a com.microsoft contrib op, on the CPU and CUDA providers) does
rotary embedding, grouped heads and the causal softmax in one kernel, and it can write the new K/V into
the same buffer it reads the past from, so a decode loop preallocates the cache once and never copies it.

The model's interface stays the optimum one (input_ids, attention_mask, position_ids,
past_key_values.*, logits, present.*), so optimum can still drive the same file: with separate past and
present tensors GQA concatenates as before; bound to one buffer it updates in place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeprof.errors import ArtifactError

MAX_ROTARY_POSITIONS = 32768  # cos/sin table rows; contexts beyond this are refused by ORT at run time


def rotary_tables(hf_folder: Path, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [positions, head_dim/2] with the model's own rope scaling (llama3, linear, yarn, ...)."""
    import torch
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(str(hf_folder))
    rope_type = (getattr(config, "rope_scaling", None) or {}).get("rope_type", "default")
    inv_freq, attention_scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    angles = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq.float())
    return ((angles.cos() * attention_scaling).numpy().astype(np.float32),
            (angles.sin() * attention_scaling).numpy().astype(np.float32))


def fuse_group_query_attention(model, hf_config: dict, hf_folder: Path):
    """Rewrite `model` (an onnx ModelProto from optimum, weights loaded) in place and return it."""
    from onnx import TensorProto, helper

    graph = model.graph
    layers = int(hf_config["num_hidden_layers"])
    heads = int(hf_config["num_attention_heads"])
    kv_heads = int(hf_config.get("num_key_value_heads") or heads)
    head_dim = int(hf_config.get("head_dim") or hf_config["hidden_size"] // heads)
    positions = min(int(hf_config.get("max_position_embeddings", 4096)), MAX_ROTARY_POSITIONS)
    cos, sin = rotary_tables(hf_folder, positions)
    graph.initializer.extend([helper.make_tensor("edgeprof_rotary_cos", TensorProto.FLOAT, cos.shape, cos.ravel()),
                              helper.make_tensor("edgeprof_rotary_sin", TensorProto.FLOAT, sin.shape, sin.ravel())])
    _add_sequence_lengths(graph)

    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for layer in range(layers):
        prefix = f"/model/layers.{layer}/self_attn/"
        q, k, v = (_projection_output(graph, consumers, f"{prefix}{p}_proj/") for p in "qkv")
        o_proj = next((n for n in graph.node if n.name.startswith(f"{prefix}o_proj/")), None)
        if o_proj is None:
            raise ArtifactError(f"layer {layer}: no o_proj node to attach attention to")
        attention_out = f"{prefix}edgeprof_gqa_output"
        for name in (f"present.{layer}.key", f"present.{layer}.value"):
            old = producers.get(name)
            if old is None:
                raise ArtifactError(f"layer {layer}: nothing produces {name}")
            old.output[list(old.output).index(name)] = name + "_unused"
        gqa = helper.make_node(
            "GroupQueryAttention",
            [q, k, v, f"past_key_values.{layer}.key", f"past_key_values.{layer}.value", "edgeprof_seqlens_k",
             "edgeprof_total_sequence_length", "edgeprof_rotary_cos", "edgeprof_rotary_sin"],
            [attention_out, f"present.{layer}.key", f"present.{layer}.value"],
            name=f"{prefix}GroupQueryAttention", domain="com.microsoft",
            num_heads=heads, kv_num_heads=kv_heads, do_rotary=1, rotary_interleaved=0,
            scale=float(head_dim ** -0.5))
        o_proj.input[0] = attention_out
        graph.node.insert(list(graph.node).index(o_proj), gqa)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    _remove_dead_nodes(graph)
    return model


def _projection_output(graph, consumers: dict, prefix: str) -> str:
    """The tensor leaving a projection's subgraph (MatMul, or MatMul + bias Add for Qwen2)."""
    nodes = [n for n in graph.node if n.name.startswith(prefix)]
    for node in reversed(nodes):
        for out in node.output:
            if any(not c.name.startswith(prefix) for c in consumers.get(out, [])):
                return out
    raise ArtifactError(f"no projection subgraph named {prefix}* in the exported graph")


def _add_sequence_lengths(graph) -> None:
    """seqlens_k = (sum of the attention mask per row) - 1 and total_sequence_length = mask width, as int32."""
    from onnx import TensorProto, helper

    graph.initializer.extend([helper.make_tensor("edgeprof_one", TensorProto.INT64, [], [1]),
                              helper.make_tensor("edgeprof_axis1", TensorProto.INT64, [1], [1])])
    nodes = [
        helper.make_node("ReduceSum", ["attention_mask", "edgeprof_axis1"], ["edgeprof_mask_sum"], keepdims=0,
                         name="/edgeprof/mask_sum"),
        helper.make_node("Sub", ["edgeprof_mask_sum", "edgeprof_one"], ["edgeprof_seqlens_k64"], name="/edgeprof/sub"),
        helper.make_node("Cast", ["edgeprof_seqlens_k64"], ["edgeprof_seqlens_k"], to=TensorProto.INT32,
                         name="/edgeprof/seqlens_k"),
        helper.make_node("Shape", ["attention_mask"], ["edgeprof_mask_shape"], start=1, end=2,
                         name="/edgeprof/mask_width"),
        helper.make_node("Squeeze", ["edgeprof_mask_shape"], ["edgeprof_total64"], name="/edgeprof/squeeze"),
        helper.make_node("Cast", ["edgeprof_total64"], ["edgeprof_total_sequence_length"], to=TensorProto.INT32,
                         name="/edgeprof/total_sequence_length"),
    ]
    for offset, node in enumerate(nodes):
        graph.node.insert(offset, node)


def _remove_dead_nodes(graph) -> None:
    """Drop nodes whose outputs nobody reads (the old mask, rotary, repeat-KV and concat subgraphs)."""
    wanted = {o.name for o in graph.output}
    changed = True
    while changed:
        used = wanted | {name for node in graph.node for name in node.input}
        dead = [n for n in graph.node if not any(out in used for out in n.output)]
        changed = bool(dead)
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
