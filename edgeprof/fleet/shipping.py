"""Model files travel from the head to a device, and a device measures only what hashes as the manifest says.

The head exports every artifact once (its own cache, its own exporters: a Jetson needs neither torch nor
optimum) and ships the files a device lacks in chunks through the engine. The device keeps them in its
store under the artifact's sha256 and, right before each measurement, hashes every file again: a file
whose hash differs from the one the head recorded (tampered, truncated, bit-flipped on a card) is deleted
and the configuration fails with that reason, never measured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from edgeprof.errors import ArtifactError
from edgeprof.export.artifacts import Artifact, sha256_of

# Per engine message: small enough for an 8 GB board's worker, large enough for a LAN, and below Dask's
# large-graph warning (10 MB by default), which a chunk sent as a task's argument would otherwise print.
CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class ShippedFile:
    name: str  # relative to the artifact's folder
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Shipment:
    """An artifact as the head exported it and the files that make it up (the model file first)."""

    artifact: Artifact
    files: tuple[ShippedFile, ...]

    def folder(self, store: Path) -> Path:
        return store / "artifacts" / self.artifact.sha256

    def on_device(self, store: Path) -> Artifact:
        """The same artifact at its place in a device's store."""
        return replace(self.artifact, path=str(self.folder(store) / self.files[0].name))


def artifact_files(artifact: Artifact) -> list[Path]:
    """The files a device needs to run `artifact`, as the backend reading its format says (a GGUF file; an
    exported ONNX variant's whole folder: graph, external data, config and tokenizer), model file first."""
    from edgeprof.backends.registry import for_format

    return for_format(artifact.format).shipped_files(artifact)


def make_shipment(artifact: Artifact) -> Shipment:
    """Hash each file on the head, now: what the device must match is what the head holds."""
    files = tuple(ShippedFile(path.name, path.stat().st_size, sha256_of(path)) for path in artifact_files(artifact))
    return Shipment(artifact, files)


def head_path(shipment: Shipment, file: ShippedFile) -> Path:
    return Path(shipment.artifact.path).parent / file.name


# -- the device's side --------------------------------------------------------------------------------


def missing_files(store: Path, shipment: Shipment) -> list[str]:
    """Files of the shipment this device lacks or holds at another size (the hash is checked before use)."""
    folder = shipment.folder(store)
    return [f.name for f in shipment.files
            if not (folder / f.name).is_file() or (folder / f.name).stat().st_size != f.bytes]


def write_chunk(store: Path, shipment: Shipment, name: str, offset: int, data: bytes) -> None:
    partial = _partial(store, shipment, name)
    partial.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "r+b" if offset else "wb") as f:
        f.seek(offset)
        f.write(data)


def seal_file(store: Path, shipment: Shipment, name: str) -> None:
    """Check a fully received file against the head's hash and move it into the store."""
    expected = next(f for f in shipment.files if f.name == name)
    partial = _partial(store, shipment, name)
    got = sha256_of(partial)
    if got != expected.sha256:
        partial.unlink(missing_ok=True)
        raise ArtifactError(f"{name} arrived with sha256 {got[:16]}…, the head sent {expected.sha256[:16]}…")
    partial.replace(shipment.folder(store) / name)


def _partial(store: Path, shipment: Shipment, name: str) -> Path:
    return shipment.folder(store) / f"{name}.incoming"


def verify(store: Path, shipment: Shipment) -> Artifact:
    """The artifact in this device's store, after hashing every file against the manifest's hashes."""
    folder = shipment.folder(store)
    for file in shipment.files:
        path = folder / file.name
        if not path.is_file():
            raise ArtifactError(f"refused to measure: {file.name} of {shipment.artifact.source} "
                                f"{shipment.artifact.quant} is not in this device's store ({folder})")
        got = sha256_of(path)
        if got != file.sha256:
            path.unlink()  # the next sweep ships it again
            raise ArtifactError(f"refused to measure: {file.name} of {shipment.artifact.source} "
                                f"{shipment.artifact.quant} hashes to sha256 {got[:16]}… on this device, the "
                                f"manifest says {file.sha256[:16]}… (file deleted; it is shipped again next time)")
    return shipment.on_device(store)
