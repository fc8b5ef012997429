"""Hugging Face Hub ids as model specs, against a pre-populated offline cache laid out exactly as
huggingface_hub lays it out (refs/, blobs/, snapshots/<commit>/ with links into blobs)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from edgeprof.errors import ModelSpecError
from edgeprof.models.hub import HubRef, hub_errors, parse_hub_spec
from test_cli import edgeprof

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache_repo(cache: Path, repo: str, files: dict[str, Path]) -> None:
    """Put `files` (name in the repo -> local file) into the cache as revision main at COMMIT."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    (folder / "blobs").mkdir(exist_ok=True)
    for name, source in files.items():
        blob = folder / "blobs" / hashlib.sha256(source.read_bytes()).hexdigest()
        shutil.copyfile(source, blob)
        (snapshot / name).symlink_to(Path("../..") / "blobs" / blob.name)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch, tiny_gguf_f32, tiny_source):
    cache = tmp_path / "hub"
    _cache_repo(cache, "edge-org/tiny-GGUF", {"tiny.F32.gguf": Path(tiny_gguf_f32.path), "README.md": Path(__file__)})
    folder = tiny_source.hf_folder()
    _cache_repo(cache, "edge-org/tiny", {name: folder / name for name in
                                         ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_specs_are_told_apart_from_paths_and_presets():
    assert parse_hub_spec("Qwen/Qwen2.5-0.5B") == HubRef("Qwen/Qwen2.5-0.5B", None, None)
    assert parse_hub_spec("org/repo-GGUF@v1.0:Q4_K_M") == HubRef("org/repo-GGUF", "v1.0", "Q4_K_M")
    assert parse_hub_spec("org/repo:model.q8_0.gguf").selector == "model.q8_0.gguf"
    assert parse_hub_spec("./models/x") is None and parse_hub_spec("synth:tiny") is None
    assert parse_hub_spec("a/b/c") is None and parse_hub_spec("models/missing.gguf") is None


def test_a_cached_gguf_runs_offline_and_the_record_names_repo_and_commit(offline_hub, tmp_path):
    result = edgeprof("run", "-m", "edge-org/tiny-GGUF:F32", "-p", "8", "-n", "4", "-r", "1", "--warmup", "0",
                      "--no-fidelity", "--sample-hz", "0", "-o", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    (run_dir,) = list((tmp_path / "runs").iterdir())
    record = json.loads((run_dir / "records.jsonl").read_text().splitlines()[0])
    assert record["status"] == "ok"
    assert record["model"]["hub"] == {"repo": "edge-org/tiny-GGUF", "revision": "main", "commit": COMMIT,
                                      "file": "tiny.F32.gguf"}
    shown = edgeprof("models", "show", "edge-org/tiny-GGUF:F32")
    assert shown.returncode == 0 and "llama" in shown.stdout


def test_a_cached_checkpoint_resolves_like_a_local_folder(offline_hub):
    result = edgeprof("models", "compare", "edge-org/tiny", "tiny", "-f", "json")
    assert result.returncode == 0, result.stderr
    hub_row, preset_row = json.loads(result.stdout)
    assert hub_row["model"] == f"hub:edge-org/tiny@{COMMIT[:12]}"
    assert {k: v for k, v in hub_row.items() if k != "model"} == {k: v for k, v in preset_row.items() if k != "model"}


def test_what_is_missing_offline_or_ambiguous_is_one_line(offline_hub):
    missing = edgeprof("run", "-m", "edge-org/other-GGUF:Q4_K_M")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "not in the local Hugging Face cache" in missing.stderr and "HF_HUB_OFFLINE" in missing.stderr
    unnamed = edgeprof("models", "show", "edge-org/tiny-GGUF")
    assert unnamed.returncode == 2 and "name one: edge-org/tiny-GGUF:F32" in unnamed.stderr
    wrong_tag = edgeprof("models", "show", "edge-org/tiny-GGUF:Q4_K_M")
    assert wrong_tag.returncode == 2 and "offered: F32" in wrong_tag.stderr


def test_gated_and_unknown_repositories_say_what_to_do():
    from huggingface_hub import errors

    with pytest.raises(ModelSpecError, match="gated: accept its terms .* HF_TOKEN"):
        with hub_errors(HubRef("meta-llama/Llama-3.2-1B", None, None)):
            raise errors.GatedRepoError("403 gated")
    with pytest.raises(ModelSpecError, match="no such repository"):
        with hub_errors(HubRef("nobody/nothing", None, None)):
            raise errors.RepositoryNotFoundError("404")


def test_the_revision_flag_pins_hub_ids_and_refuses_what_it_cannot_pin(offline_hub, tmp_path):
    (offline_hub / "models--edge-org--tiny-GGUF" / "refs" / "v1").write_text(COMMIT)  # a tag, as the cache keeps it
    result = edgeprof("run", "-m", "edge-org/tiny-GGUF:F32,synth:tiny", "--revision", "v1", "-q", "f32", "-p", "8",
                      "-n", "4", "-r", "1", "--warmup", "0", "--no-fidelity", "--sample-hz", "0",
                      "-o", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    (run_dir,) = list((tmp_path / "runs").iterdir())
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    hub = [r["model"]["hub"] for r in records if r["model"].get("hub")]
    assert hub and all(h["revision"] == "v1" and h["commit"] == COMMIT for h in hub)
    assert edgeprof("models", "show", "edge-org/tiny-GGUF:F32", "--revision", "v1").returncode == 0
    missing = edgeprof("models", "show", "edge-org/tiny-GGUF:F32", "--revision", "v2")
    assert missing.returncode == 2 and "not in the local Hugging Face cache" in missing.stderr
    clash = edgeprof("models", "show", "edge-org/tiny-GGUF@main:F32", "--revision", "v1")
    assert clash.returncode == 2 and clash.stderr.strip().splitlines() == [
        "error: edge-org/tiny-GGUF@main:F32 names revision 'main' and --revision says 'v1'; give one"]
    nothing = edgeprof("predict", "-m", "synth:tiny", "--revision", "v1")
    assert nothing.returncode == 2 and "applies to Hugging Face Hub ids" in nothing.stderr
