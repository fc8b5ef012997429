import json

import numpy as np

from edgeprof.export.artifacts import sha256_of
from edgeprof.models.presets import get_preset
from edgeprof.models.safetensors_io import SafetensorsFile
from edgeprof.models.synth import ensure_synth, write_checkpoint


def test_synth_folder_has_config_weights_and_tokenizer(tiny_source):
    folder = tiny_source.hf_folder()
    config = json.loads((folder / "config.json").read_text())
    assert config["hidden_size"] == 256 and config["torch_dtype"] == "float32"
    st = SafetensorsFile(folder / "model.safetensors")
    arch = tiny_source.architecture
    assert {t.name: t.shape for t in arch.tensors()} == {n: st.shape(n) for n in st.names()}
    norm = st.read("model.norm.weight")
    assert 0.5 < norm.mean() < 1.5 and norm.std() > 0.01  # near one but not constant


def test_tokenizer_is_a_consistent_bpe_of_vocab_size(tiny_source):
    tokenizer = json.loads((tiny_source.hf_folder() / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    assert sorted(vocab.values()) == list(range(tiny_source.architecture.vocab_size))
    for merge in tokenizer["model"]["merges"]:
        left, right = merge.split(" ")
        assert left in vocab and right in vocab and left + right in vocab


def test_synth_is_deterministic_and_reused(tiny_source, tmp_path):
    folder = ensure_synth(tiny_source.preset)
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_synth(tiny_source.preset) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime  # reused, not rewritten
    write_checkpoint(tmp_path, tiny_source.preset, seed=0)
    assert sha256_of(tmp_path / "model.safetensors") == sha256_of(folder / "model.safetensors")


def test_other_seed_gives_other_weights(tmp_path):
    preset = get_preset("tiny")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_checkpoint(tmp_path / "a", preset, seed=0)
    write_checkpoint(tmp_path / "b", preset, seed=1)
    a = SafetensorsFile(tmp_path / "a" / "model.safetensors").read("model.embed_tokens.weight")
    b = SafetensorsFile(tmp_path / "b" / "model.safetensors").read("model.embed_tokens.weight")
    assert not np.allclose(a, b)
