"""The embedding model: loaded from the installed wheel with the network impossible, and its vectors mean something."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from background_tasks.analysis.embeddings import (
    BUILTIN_NAME,
    EmbeddingUnavailable,
    StaticEmbedder,
    cuda_available,
    load_embedder,
    wordllama_files,
)

# What a process sees when nothing may leave the machine: every socket connect refused, hubs told to stay offline.
_NO_NETWORK = textwrap.dedent(
    """
    import os, socket
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    """
)


def test_builtin_model_loads_and_embeds_with_no_network_at_all() -> None:
    script = _NO_NETWORK + textwrap.dedent(
        """
        import json, numpy as np
        from background_tasks.analysis.embeddings import load_embedder
        e = load_embedder()
        v = e.embed(["the cat sat on the mat", "a kitten rested on the rug", "quarterly tax revenue report"])
        print(json.dumps({"key": e.info.key, "dim": e.info.dim, "shape": list(v.shape), "sims": (v @ v.T).tolist()}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["key"].startswith(BUILTIN_NAME + "@") and out["dim"] == 256 and out["shape"] == [3, 256]
    sims = np.array(out["sims"])
    assert sims[0, 1] > sims[0, 2] + 0.2 and sims[0, 1] > sims[1, 2] + 0.2  # cat/kitten closer than cat/tax


def test_the_network_guard_itself_refuses() -> None:
    """The guard above must really stop a connection, or the test before proves nothing."""
    script = _NO_NETWORK + "import socket\nsocket.create_connection(('127.0.0.1', 6379))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "network access attempted" in done.stderr


def test_wordllama_wheel_ships_weights_and_tokenizer() -> None:
    weights, tokenizer, version = wordllama_files()
    assert weights.stat().st_size > 10_000_000 and tokenizer.stat().st_size > 1_000_000
    assert version == "0.4.0.post1"


@pytest.fixture(scope="module")
def embedder() -> StaticEmbedder:
    return load_embedder()


def test_paraphrases_are_closer_than_unrelated_texts(embedder) -> None:
    texts = [
        "The invoice must be paid within thirty days.",
        "Payment of the bill is due in a month.",
        "Volcanic eruptions shaped the island's mountains.",
        "Lava flows formed the peaks of the isle.",
    ]
    v = embedder.embed(texts)
    assert v.dtype == np.float32 and v.shape == (4, 256)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > max(sims[0, 2], sims[0, 3]) and sims[2, 3] > max(sims[2, 0], sims[2, 1])


def test_odd_input_gives_vectors_not_errors(embedder) -> None:
    odd = ["", "   ", "🙂🚀🎉", "x" * 10_000, "Καλημέρα κόσμε", "דוקומנט", "\x00\x01"]
    v = embedder.embed(odd)
    assert v.shape == (len(odd), 256) and np.isfinite(v).all()
    assert not v[0].any()  # no token: the zero vector, which matches nothing
    assert v[3].any() and v[4].any()
    assert embedder.embed([]).shape == (0, 256)


def test_same_text_same_vector_across_loads(embedder) -> None:
    again = load_embedder()
    assert again.info == embedder.info
    assert np.array_equal(again.embed(["stable"]), embedder.embed(["stable"]))


def test_bad_model_and_device_are_clear_errors(tmp_path) -> None:
    with pytest.raises(EmbeddingUnavailable, match="not a directory"):
        load_embedder(str(tmp_path / "missing"))
    with pytest.raises(EmbeddingUnavailable, match=r"modules\.json"):
        load_embedder(str(tmp_path))
    with pytest.raises(EmbeddingUnavailable, match="must be one of"):
        load_embedder(None, "tpu")


def test_a_local_static_model_directory_loads(tmp_path, embedder) -> None:
    """Model2Vec's layout (tokenizer.json + model.safetensors) works offline like the built-in model."""
    import shutil

    from safetensors.numpy import load_file, save_file

    weights, tokenizer, _ = wordllama_files()
    model_dir = tmp_path / "my-static-model"
    model_dir.mkdir()
    shutil.copy(tokenizer, model_dir / "tokenizer.json")
    table = load_file(str(weights))["embedding.weight"][:, :64]
    save_file({"embeddings": np.ascontiguousarray(table)}, str(model_dir / "model.safetensors"))
    local = load_embedder(str(model_dir))
    assert local.info.name == "my-static-model" and local.info.dim == 64 and len(local.info.version) == 12
    assert local.info.key != embedder.info.key
    assert local.embed(["hello"]).shape == (1, 64)


@pytest.mark.skipif(cuda_available(), reason="this machine has CUDA: the error path cannot be shown")
def test_cuda_asked_for_and_absent_is_a_clear_error() -> None:
    with pytest.raises(EmbeddingUnavailable, match="MIDAS_EMBED_DEVICE=cuda"):
        load_embedder(None, "cuda")


@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device (runs on machines that have one)")
def test_cuda_embeddings_match_cpu(embedder) -> None:
    gpu = load_embedder(None, "cuda")
    texts = ["graphics cards", "a much longer sentence about the weather in the mountains", ""]
    assert np.allclose(gpu.embed(texts), embedder.embed(texts), atol=1e-4)
