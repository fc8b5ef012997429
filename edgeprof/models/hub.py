"""Hugging Face Hub ids as model specs, through `huggingface_hub` (its cache, revisions, offline mode, and
the token from the usual places: `HF_TOKEN` or `huggingface-cli login`).

    Qwen/Qwen2.5-0.5B                      safetensors checkpoint -> exported like a local HF folder
    org/repo-GGUF:Q4_K_M                   the repository's GGUF whose name carries that quantization
    org/repo-GGUF:model-q4_k_m.gguf        one file by name
    org/repo@<revision>...                 a branch, tag or commit (default: main)

With `HF_HUB_OFFLINE=1`, or when the Hub cannot be reached, files come from the local cache only; a
missing file, a gated or unknown repository is one line saying what to do.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeprof.errors import ModelSpecError

_SPEC = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+?))?"
                   r"(?::(?P<selector>[\w.+-]+))?$")
CHECKPOINT_FILES = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
                    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")


@dataclass(frozen=True)
class HubRef:
    repo: str
    revision: str | None  # as the user gave it (None: the default branch)
    selector: str | None  # a quantization tag or a file name


@dataclass(frozen=True)
class HubModel:
    """What a Hub spec resolved to: a GGUF file or a checkpoint folder in the local cache."""

    path: Path
    repo: str
    revision: str | None
    commit: str
    filename: str | None  # the GGUF file (None for a checkpoint folder)

    def record(self) -> dict:
        return {"repo": self.repo, "revision": self.revision or "main", "commit": self.commit, "file": self.filename}


def parse_hub_spec(spec: str) -> HubRef | None:
    """`org/repo[@rev][:selector]` -> HubRef; anything else (a path, synth:...) -> None."""
    found = _SPEC.match(spec)
    if not found or spec.startswith((".", "/", "~")) or found["repo"].lower().endswith((".gguf", ".onnx", ".json")):
        return None  # a path (a missing file is "no such file", not a Hub lookup)
    return HubRef(found["repo"], found["revision"], found["selector"])


def with_revision(spec: str, revision: str) -> str:
    """`spec` pinned to `revision` (the `--revision` flag): a Hub id gains `@revision`; one that names another
    revision, or a spec that is no Hub id, is a one-line ModelSpecError. An empty revision changes nothing."""
    if not revision:
        return spec
    ref = parse_hub_spec(spec)
    if ref is None:
        raise ModelSpecError(f"--revision applies to Hugging Face Hub ids (org/repo); {spec} is not one")
    if ref.revision and ref.revision != revision:
        raise ModelSpecError(f"{spec} names revision {ref.revision!r} and --revision says {revision!r}; give one")
    return f"{ref.repo}@{revision}" + (f":{ref.selector}" if ref.selector else "")


def pin_revisions(specs: list[str], revision: str) -> list[str]:
    """`--revision` applied to the Hub ids among `specs` (presets, folders and files pass unchanged); a
    revision with no Hub id to pin is a one-line ModelSpecError."""
    if not revision:
        return specs
    if all(parse_hub_spec(spec) is None for spec in specs):
        raise ModelSpecError(f"--revision applies to Hugging Face Hub ids (org/repo); none among {', '.join(specs)}")
    return [spec if parse_hub_spec(spec) is None else with_revision(spec, revision) for spec in specs]


def fetch(ref: HubRef) -> HubModel:
    """Download (or find in the cache) what `ref` names; errors are one-line ModelSpecErrors."""
    import huggingface_hub

    with hub_errors(ref):
        files, commit = _list_files(ref)
        ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
        if ref.selector:
            chosen = _select_gguf(ref, ggufs)
            paths = [huggingface_hub.hf_hub_download(ref.repo, name, revision=commit) for name in chosen]
            return HubModel(Path(paths[0]), ref.repo, ref.revision, commit, chosen[0])
        if "config.json" in files and any(f.endswith(".safetensors") for f in files):
            folder = huggingface_hub.snapshot_download(ref.repo, revision=commit, allow_patterns=list(CHECKPOINT_FILES))
            return HubModel(Path(folder), ref.repo, ref.revision, commit, None)
        if ggufs:
            tags = sorted({_quant_tag(name) for name in ggufs} - {None})
            raise ModelSpecError(f"{ref.repo} holds GGUF files; name one: {ref.repo}:{tags[0] if tags else ggufs[0]} "
                                 f"(offered: {', '.join(tags or ggufs)})")
        raise ModelSpecError(f"{ref.repo} has neither a safetensors checkpoint nor GGUF files")


def find_cached(ref: HubRef, commit: str | None = None) -> HubModel:
    """What `ref` names, from the local cache alone: never a network request, whatever the environment says.
    Analysis resolves the models of recorded runs this way (at the commit the run recorded, where it did);
    a file or snapshot the cache does not hold is a one-line ModelSpecError saying so."""
    pinned = HubRef(ref.repo, commit, ref.selector) if commit else ref
    try:
        files, found = _cached_files(pinned)
    except ModelSpecError:
        raise ModelSpecError(f"{ref.repo}@{commit or ref.revision or 'main'} is not in the local Hugging Face "
                             "cache (analysis reads caches only, it never downloads)") from None
    snapshot = _snapshot_dir(ref.repo, found)
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if ref.selector:
        chosen = _select_gguf(ref, ggufs)
        return HubModel(snapshot / chosen[0], ref.repo, ref.revision, found, chosen[0])
    if "config.json" in files:
        return HubModel(snapshot, ref.repo, ref.revision, found, None)
    raise ModelSpecError(f"{ref.repo}: the cached snapshot {found[:12]} holds no config.json")


def _repo_dir(repo: str) -> Path:
    """A repository's folder in the huggingface_hub cache (refs/, blobs/, snapshots/)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--"))


def _snapshot_dir(repo: str, commit: str) -> Path:
    return _repo_dir(repo) / "snapshots" / commit


def _list_files(ref: HubRef) -> tuple[list[str], str]:
    """The repository's files and the commit the revision points at: from the Hub, or (offline, or the
    Hub unreachable) from the local cache."""
    import huggingface_hub
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        try:
            info = huggingface_hub.HfApi().model_info(ref.repo, revision=ref.revision, files_metadata=False)
            return [s.rfilename for s in info.siblings or []], info.sha
        except Exception as exc:  # noqa: BLE001 - requests (0.x) and httpx (1.x on) raise different types
            if not _is_network_error(exc):
                raise
    return _cached_files(ref)


_NETWORK_ERRORS = frozenset({"OfflineModeIsEnabled", "ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout",
                             "ConnectError", "NetworkError", "TimeoutException"})


def _is_network_error(exc: Exception) -> bool:
    """A failure to reach the Hub, whichever HTTP library this huggingface_hub uses (requests before 1.0,
    httpx from 1.0 on, which releases without requests installed), judged by class names so neither
    library has to be importable."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(cls.__name__ in _NETWORK_ERRORS for cls in type(exc).__mro__)


def _cached_files(ref: HubRef) -> tuple[list[str], str]:
    """Files of the revision's snapshot in the local cache, laid out as huggingface_hub writes it."""
    from huggingface_hub import constants

    revision = ref.revision or "main"
    ref_file = _repo_dir(ref.repo) / "refs" / revision
    commit = ref_file.read_text().strip() if ref_file.is_file() else revision
    snapshot = _snapshot_dir(ref.repo, commit)
    if not snapshot.is_dir():
        raise ModelSpecError(f"{ref.repo}@{revision} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) "
                             "and the Hub cannot be reached (or HF_HUB_OFFLINE is set); download it once online")
    files = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file() or p.is_symlink())
    return files, commit


def _quant_tag(filename: str) -> str | None:
    found = re.search(r"[._-]((?:I?Q\d[\w]*?)|BF16|F16|F32)(?:-\d{5}-of-\d{5})?\.gguf$", Path(filename).name,
                      re.IGNORECASE)
    return found.group(1).upper() if found else None


def _select_gguf(ref: HubRef, ggufs: list[str]) -> list[str]:
    """The file named, or every file of the quantization tag (all shards of a split GGUF, first first)."""
    selector = ref.selector
    if selector.lower().endswith(".gguf"):
        if selector not in ggufs and not any(Path(g).name == selector for g in ggufs):
            raise ModelSpecError(f"{ref.repo} has no file {selector} (GGUF files: {', '.join(ggufs) or 'none'})")
        return [next(g for g in ggufs if g == selector or Path(g).name == selector)]
    chosen = [g for g in ggufs if (_quant_tag(g) or "").upper() == selector.upper()]
    if not chosen:
        tags = sorted({_quant_tag(g) for g in ggufs} - {None})
        raise ModelSpecError(f"{ref.repo} has no {selector} GGUF (offered: {', '.join(tags) or 'none'})")
    return chosen


@contextlib.contextmanager
def hub_errors(ref: HubRef) -> Iterator[None]:
    """Turn huggingface_hub's failures into one line each (anything else passes through)."""
    from huggingface_hub import errors

    repo = ref.repo
    try:
        yield
    except ModelSpecError:
        raise
    except errors.GatedRepoError:
        raise ModelSpecError(f"{repo} is gated: accept its terms on huggingface.co, then log in "
                             "(`hf auth login`, `huggingface-cli login` before huggingface_hub 1.0, or HF_TOKEN)") from None
    except errors.RepositoryNotFoundError:
        raise ModelSpecError(f"{repo}: no such repository on the Hub (or it is private: log in with HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise ModelSpecError(f"{repo}: no revision {ref.revision!r}") from None
    except Exception as exc:
        if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)) or _is_network_error(exc):
            raise ModelSpecError(f"{repo}: not in the local Hugging Face cache and the Hub cannot be reached "
                                 "(or HF_HUB_OFFLINE is set); download it once online") from None
        raise
