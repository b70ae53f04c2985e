"""Text embeddings, loaded from files on this machine only: nothing is fetched at run time.

The built-in model is WordLlama's ``l2_supercat`` at 256 dimensions, whose weights
(16 MB of float16) and tokenizer ship inside the ``wordllama`` wheel. It is a
static model (a token-embedding table, mean-pooled), so it runs on numpy alone.
``WordLlama.load()`` itself looks for the tokenizer in a folder the wheel does not
have (``tokenizer/`` against the shipped ``tokenizers/``) and then downloads it,
and importing ``wordllama`` calls ``logging.basicConfig``; so the files are read
here directly and the package's Python code is never imported.

``MIDAS_EMBED_MODEL`` may name a local directory instead: a static model in
Model2Vec's layout (``tokenizer.json`` + ``model.safetensors``, numpy only) or a
sentence-transformers model (needs ``sentence-transformers``, runs on
``MIDAS_EMBED_DEVICE``). Every vector is float32 with unit length, so a dot
product is the cosine similarity.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from background_tasks.errors import MissingDependency

log = logging.getLogger(__name__)

BUILTIN_NAME = "wordllama-l2-supercat-256"
#: longest text embedded, in tokens (a chunk is ~1,000 characters, far fewer tokens)
MAX_TOKENS = 2048
DEVICES = ("cpu", "cuda")
#: tokens that carry no meaning: byte fallbacks of an unknown script, unknown, word boundary, padding
_MEANINGLESS = re.compile(r"^(<0x[0-9A-Fa-f]{2}>|\[UNK\]|<unk>|\[PAD\]|<pad>|<s>|</s>|\[CLS\]|\[SEP\]|▁|\s*)$")


class EmbeddingUnavailable(MissingDependency):
    """The embedding model cannot be loaded or the device asked for is not there."""


@dataclass(frozen=True)
class ModelInfo:
    """Which model made a vector: vectors of different ``key``s are never compared."""

    name: str
    version: str
    dim: int

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"


class Embedder(Protocol):
    info: ModelInfo

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row of unit length (all zeros for a text with no known token)."""
        ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)


class StaticEmbedder:
    """A token-embedding table, mean-pooled over a text's tokens (WordLlama, Model2Vec)."""

    def __init__(self, info: ModelInfo, tokenizer: Any, table: np.ndarray, device: str = "cpu") -> None:
        self.info = info
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._table = np.ascontiguousarray(table, dtype=np.float32)
        self._meaningful = np.ones(len(self._table), dtype=bool)
        for token, token_id in self._tokenizer.get_vocab().items():
            if 0 <= token_id < len(self._table) and _MEANINGLESS.match(token):
                self._meaningful[token_id] = False
        self._gpu: Any = None
        if device == "cuda":
            torch = _cuda_torch()
            self._gpu = (torch, torch.from_numpy(self._table).to("cuda"))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch([t or "" for t in texts], add_special_tokens=False)
        ids = [np.asarray(e.ids[:MAX_TOKENS], dtype=np.int64) for e in encodings]
        if self._gpu is not None:
            return self._embed_cuda(ids)
        out = np.zeros((len(ids), self._table.shape[1]), dtype=np.float32)
        for row, token_ids in enumerate(ids):
            if token_ids.size:
                out[row] = self._table[np.clip(token_ids, 0, len(self._table) - 1)].mean(axis=0)
        return normalize_rows(out)

    def query_vector(self, text: str) -> np.ndarray | None:
        """A query's vector from the tokens that carry meaning; None when it has none.

        A script the vocabulary lacks falls back to byte tokens (``<0xE1>``), and the unknown and
        word-boundary tokens say nothing either: a query of only those would match at random.
        """
        ids = np.asarray(self._tokenizer.encode(text or "", add_special_tokens=False).ids[:MAX_TOKENS], np.int64)
        ids = ids[(ids >= 0) & (ids < len(self._table))]
        ids = ids[self._meaningful[ids]]
        if not ids.size:
            return None
        return normalize_rows(self._table[ids].mean(axis=0, keepdims=True))[0]

    def _embed_cuda(self, ids: list[np.ndarray]) -> np.ndarray:
        torch, table = self._gpu
        flat = np.concatenate([*ids, np.zeros(0, np.int64)]).clip(0, len(self._table) - 1)
        offsets = np.cumsum([0, *(len(i) for i in ids[:-1])]) if ids else np.zeros(0, np.int64)
        pooled = torch.nn.functional.embedding_bag(
            torch.from_numpy(flat).to("cuda"), table, torch.from_numpy(np.asarray(offsets)).to("cuda"), mode="mean"
        )
        return normalize_rows(pooled.cpu().numpy())


class SentenceTransformerEmbedder:
    """A local sentence-transformers model directory, on CPU or CUDA."""

    def __init__(self, path: Path, device: str) -> None:
        if device == "cuda":
            _cuda_torch()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbeddingUnavailable(
                f"MIDAS_EMBED_MODEL={path} is a sentence-transformers model, but sentence-transformers "
                "is not installed (pip install sentence-transformers)"
            ) from exc
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        dim = int(self._model.get_sentence_embedding_dimension())
        self.info = ModelInfo(path.name, _fingerprint(path), dim)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(list(texts), batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        return normalize_rows(np.asarray(vectors, dtype=np.float32))


def _cuda_torch() -> Any:
    """torch with a CUDA device, or a clear error (never a silent fall back to the CPU)."""
    try:
        import torch
    except ImportError as exc:
        raise EmbeddingUnavailable(
            "MIDAS_EMBED_DEVICE=cuda needs PyTorch with CUDA (torch is not installed); set MIDAS_EMBED_DEVICE=cpu"
        ) from exc
    if not torch.cuda.is_available():
        raise EmbeddingUnavailable(
            "MIDAS_EMBED_DEVICE=cuda, but PyTorch sees no CUDA device here; set MIDAS_EMBED_DEVICE=cpu"
        )
    return torch


def cuda_available() -> bool:
    try:
        _cuda_torch()
    except EmbeddingUnavailable:
        return False
    return True


def wordllama_files() -> tuple[Path, Path, str]:
    """(weights, tokenizer, version) of the model inside the installed ``wordllama`` wheel."""
    spec = importlib.util.find_spec("wordllama")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingUnavailable("the built-in embedding model needs the wordllama package (see requirements.txt)")
    root = Path(next(iter(spec.submodule_search_locations)))
    weights = root / "weights" / "l2_supercat_256.safetensors"
    tokenizer = root / "tokenizers" / "l2_supercat_tokenizer_config.json"
    for path in (weights, tokenizer):
        if not path.is_file():
            raise EmbeddingUnavailable(f"the wordllama package lacks {path.name}; reinstall it from requirements.txt")
    return weights, tokenizer, importlib.metadata.version("wordllama")


def _fingerprint(directory: Path) -> str:
    """A short hash of a model directory's files (names, sizes, first MiB): its version for MIDAS."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(directory)}:{path.stat().st_size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:12]


def _static_table(weights: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    tensors = load_file(str(weights))
    for key in ("embedding.weight", "embeddings"):
        if key in tensors:
            return tensors[key]
    raise EmbeddingUnavailable(f"{weights} holds no embedding table (embedding.weight or embeddings)")


def load_embedder(model: str | None = None, device: str = "cpu") -> Embedder:
    """The built-in model (``model`` empty), or the local model directory ``model``, on ``device``."""
    from tokenizers import Tokenizer

    if device not in DEVICES:
        raise EmbeddingUnavailable(f"MIDAS_EMBED_DEVICE must be one of {', '.join(DEVICES)}, not {device!r}")
    if not model:
        weights, tokenizer, version = wordllama_files()
        table = _static_table(weights)
        info = ModelInfo(BUILTIN_NAME, version, int(table.shape[1]))
        return StaticEmbedder(info, Tokenizer.from_file(str(tokenizer)), table, device)
    path = Path(model).expanduser()
    if not path.is_dir():
        raise EmbeddingUnavailable(f"MIDAS_EMBED_MODEL={model} is not a directory on this machine")
    if (path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory: never ask a hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        return SentenceTransformerEmbedder(path, device)
    if (path / "tokenizer.json").is_file() and (path / "model.safetensors").is_file():
        table = _static_table(path / "model.safetensors")
        info = ModelInfo(path.name, _fingerprint(path), int(table.shape[1]))
        return StaticEmbedder(info, Tokenizer.from_file(str(path / "tokenizer.json")), table, device)
    raise EmbeddingUnavailable(
        f"MIDAS_EMBED_MODEL={model}: not a sentence-transformers model (modules.json) nor a static model "
        "(tokenizer.json + model.safetensors)"
    )


@lru_cache(maxsize=4)
def cached_embedder(model: str | None, device: str) -> Embedder:
    """One loaded model per process (loading the built-in one takes ~0.2 s)."""
    embedder = load_embedder(model, device)
    log.info("embedding model %s (%d dimensions) on %s", embedder.info.key, embedder.info.dim, device)
    return embedder


def configured_embedder(settings: Any) -> Embedder:
    """The model the settings name (``MIDAS_EMBED_MODEL``, ``MIDAS_EMBED_DEVICE``)."""
    return cached_embedder(settings.embed_model, settings.embed_device)
