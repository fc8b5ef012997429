"""Shared fixtures: an isolated cache (shared by the session, so synth models are made once) and an
empty user config folder, so a developer's own presets never leak into tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    config = tmp_path_factory.mktemp("config")
    old = {k: os.environ.get(k) for k in ("EDGEPROF_CACHE", "EDGEPROF_CONFIG_DIR")}
    os.environ["EDGEPROF_CACHE"] = str(cache)
    os.environ["EDGEPROF_CONFIG_DIR"] = str(config)
    yield {"cache": cache, "config": config}
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_source():
    from edgeprof.models.source import resolve

    return resolve("synth:tiny")


@pytest.fixture(scope="session")
def tiny_gguf_f32(tiny_source):
    from edgeprof.export.gguf_export import export_gguf

    return export_gguf(tiny_source, "f32")
