"""A hub id (``org/name``) goes through the same export as a folder.

The hub is not reachable from CI, so the model is placed in a Hugging Face cache laid out as the
hub client writes it (``models--org--name/snapshots/<commit>`` and ``refs/main``) and the export
runs with ``HF_HUB_OFFLINE=1``: the id is resolved by ``huggingface_hub`` exactly as after a
download, which is the code path a user with network access takes once the files are fetched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hf_models import make_config

transformers = pytest.importorskip("transformers")

FULL = os.environ.get("SPATTN_HF_FULL") == "1"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache_with(cache: Path, repo_id: str) -> None:
    org, name = repo_id.split("/")
    root = cache / f"models--{org}--{name}"
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(make_config("mistral"))
    model.save_pretrained(str(snap))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)


def _spattn(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [sys.executable, "-m", "spattn", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(not FULL, reason="set SPATTN_HF_FULL=1 (one more export)")
def test_export_of_a_hub_id_resolved_from_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    _cache_with(cache, "tiny-org/tiny-mistral")
    out = tmp_path / "out"
    res = _spattn(
        ["export", "tiny-org/tiny-mistral", "--task", "text-generation", "-o", str(out)], cache
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "model.onnx").is_file()
    assert json.loads((out / "config.json").read_text())["model_type"] == "mistral"
    report = json.loads((out / "export_report.json").read_text())
    assert report["passed"] is True
    assert "validation vs attn_implementation='eager' passed" in res.stdout


def test_a_hub_id_that_cannot_be_fetched_is_a_clear_error(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    cache.mkdir()
    res = _spattn(
        ["export", "tiny-org/not-there", "--task", "text-generation", "-o", str(tmp_path / "o")],
        cache,
    )
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert "tiny-org/not-there" in text
    # says what to do instead, and is not reported as an internal error
    assert "save_pretrained" in text and "looks like a bug" not in text
    assert not (tmp_path / "o" / "model.onnx").exists()
