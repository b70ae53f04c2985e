"""Text from pictures: Tesseract (its command-line program) on page images.

Why the CLI and not a binding: the ``tesseract`` program is what every
platform's package installs, it needs no compiled Python extension, and a
subprocess can be killed when a page takes too long, so OCR time per page is
bounded. Images go to Tesseract on stdin (no temporary files) and its TSV
output gives the words with their confidences.

PDF pages are rendered with pypdfium2 (PDFium, a wheel with the binary
inside). Without it, the largest embedded image of each page is used, which
is what a scanned page is. Image files are read with Pillow.

Without Tesseract nothing here fails the document: ``ocr_available`` says so
and callers skip OCR with a warning.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from background_tasks.errors import (
    CorruptDocument,
    EncryptedDocument,
    ExtractionError,
    ExtractionTimeout,
    MidasError,
    MissingDependency,
    ResourceLimitExceeded,
)

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"})
#: formats whose frames are pages (a multi-page scan); other formats' extra frames are animation
PAGED_FORMATS = frozenset({"TIFF", "MPO"})
#: a page image larger than this is scaled down before OCR (300 dpi A3 is ~17 MP)
MAX_OCR_PIXELS = 40_000_000
#: an image file with more pixels than this is refused unread (a decompression bomb)
MAX_SOURCE_PIXELS = 250_000_000
#: images smaller than this (either side) hold no readable text
MIN_SIDE_PIXELS = 8
#: a page whose darkest and lightest pixel differ by less than this is blank
BLANK_CONTRAST = 16
_LIST_LANGS_TIMEOUT = 15.0


# --------------------------------------------------------------------------
# Tesseract
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class OcrOptions:
    """How to run OCR; built from settings so the isolated child needs nothing else."""

    languages: str = "eng"
    dpi: int = 300
    page_timeout: float = 60.0
    command: str = "tesseract"

    @classmethod
    def from_settings(cls, settings: Any) -> OcrOptions:
        return cls(
            languages=settings.ocr_languages,
            dpi=settings.ocr_dpi,
            page_timeout=settings.ocr_page_timeout,
            command=settings.tesseract_cmd,
        )


@dataclass(frozen=True)
class OcrResult:
    """Recognised text and the mean word confidence (0-100; None when no word was found)."""

    text: str
    mean_confidence: float | None
    words: int = 0
    duration_s: float = 0.0


def find_tesseract(command: str = "tesseract") -> str | None:
    """Full path of the tesseract program, or None when it is not installed."""
    if not command:
        return None
    if os.sep in command or (os.altsep and os.altsep in command):
        path = Path(command).expanduser()
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(command)


@functools.lru_cache(maxsize=8)
def _languages_of(executable: str) -> frozenset[str]:
    try:
        done = subprocess.run(
            [executable, "--list-langs"], capture_output=True, timeout=_LIST_LANGS_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot ask %s for its languages: %s", executable, exc)
        return frozenset()
    lines = (done.stdout or b"").decode("utf-8", "replace").splitlines()
    return frozenset(line.strip() for line in lines[1:] if line.strip() and " " not in line.strip())


def tesseract_languages(command: str = "tesseract") -> frozenset[str]:
    """Language packs the installed Tesseract has (empty when it is not installed)."""
    executable = find_tesseract(command)
    return _languages_of(executable) if executable else frozenset()


def resolve_languages(requested: str, command: str = "tesseract") -> tuple[str, list[str]]:
    """The requested ``eng+deu`` languages that are installed, and warnings for the missing ones.

    Raises MissingDependency when Tesseract or all requested languages are missing.
    """
    executable = find_tesseract(command)
    if executable is None:
        raise MissingDependency(f"Tesseract is not installed ({command!r} not found; see MIDAS_TESSERACT_CMD)")
    wanted = [lang.strip() for lang in (requested or "eng").replace(",", "+").split("+") if lang.strip()]
    installed = _languages_of(executable)
    if not installed:  # could not list them: let Tesseract decide
        return "+".join(wanted), []
    usable = [lang for lang in wanted if lang in installed]
    missing = [lang for lang in wanted if lang not in installed]
    if not usable:
        raise MissingDependency(
            f"Tesseract has none of the languages {'+'.join(wanted)} (installed: {', '.join(sorted(installed))})"
        )
    warnings = [f"OCR language(s) not installed, skipped: {', '.join(missing)}"] if missing else []
    return "+".join(usable), warnings


def ocr_available(languages: str | None = None, command: str = "tesseract") -> bool:
    """True when Tesseract is installed (and, if given, has at least one of ``languages``)."""
    if languages is None:
        return find_tesseract(command) is not None
    try:
        resolve_languages(languages, command)
    except MissingDependency:
        return False
    return True


def parse_tsv(tsv: str) -> OcrResult:
    """Text (lines and paragraphs kept) and mean word confidence from Tesseract's TSV output."""
    paragraphs: list[list[str]] = []
    line_words: list[str] = []
    current_par: tuple[str, ...] | None = None
    current_line: tuple[str, ...] | None = None
    confidences: list[float] = []
    lines: list[str] = []

    def end_line() -> None:
        if line_words:
            lines.append(" ".join(line_words))
            line_words.clear()

    def end_paragraph() -> None:
        end_line()
        if lines:
            paragraphs.append(list(lines))
            lines.clear()

    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) < 12 or cells[0] != "5":
            continue
        word = cells[11].strip()
        if not word:
            continue
        par = tuple(cells[1:4])
        line = (*par, cells[4])
        if par != current_par:
            end_paragraph()
            current_par = par
        elif line != current_line:
            end_line()
        current_line = line
        line_words.append(word)
        try:
            conf = float(cells[10])
        except ValueError:
            conf = -1.0
        if conf >= 0:
            confidences.append(conf)
    end_paragraph()
    text = "\n\n".join("\n".join(p) for p in paragraphs)
    mean = round(sum(confidences) / len(confidences), 2) if confidences else None
    return OcrResult(text=text, mean_confidence=mean, words=len(confidences))


def _prepare(image: Any) -> Any:
    """A grayscale image Tesseract reads well: transparency over white, 16-bit scaled, huge pages shrunk."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode.startswith("I") or image.mode == "F":
        import numpy as np

        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode != "L":
        image = image.convert("RGB").convert("L") if image.mode not in ("RGB", "1") else image.convert("L")
    pixels = image.width * image.height
    if pixels > MAX_OCR_PIXELS:
        factor = math.sqrt(MAX_OCR_PIXELS / pixels)
        image = image.resize((max(1, int(image.width * factor)), max(1, int(image.height * factor))))
    return image


def is_blank(image: Any) -> bool:
    """No ink worth reading: too small, or (almost) one colour."""
    if min(image.size) < MIN_SIDE_PIXELS:
        return True
    low, high = image.convert("L").getextrema() if image.mode != "L" else image.getextrema()
    return high - low < BLANK_CONTRAST


def ocr_image(
    image: Any,
    languages: str = "eng",
    timeout: float = 60.0,
    *,
    dpi: int | None = None,
    command: str = "tesseract",
    label: str = "image",
) -> OcrResult:
    """OCR one image (a path or a Pillow image) with at most ``timeout`` seconds of Tesseract.

    Raises MissingDependency without Tesseract, ExtractionTimeout when the
    page takes too long (the process is killed), ExtractionError when
    Tesseract fails.
    """
    started = time.monotonic()
    executable = find_tesseract(command)
    if executable is None:
        raise MissingDependency(f"Tesseract is not installed ({command!r} not found; see MIDAS_TESSERACT_CMD)")
    if isinstance(image, str | os.PathLike):
        with open_image(Path(image)) as opened:
            if dpi is None:
                dpi = declared_dpi(opened)
            prepared = _prepare(opened.copy())
    else:
        prepared = _prepare(image)
    if is_blank(prepared):
        return OcrResult("", None, 0, round(time.monotonic() - started, 3))
    buffer = io.BytesIO()
    # PNG, lightly compressed: leptonica reads it from a pipe much faster than an uncompressed PNM
    prepared.save(buffer, format="PNG", compress_level=3)
    cmd = [executable, "stdin", "stdout", "-l", languages or "eng"]
    if dpi:
        cmd += ["--dpi", str(int(dpi))]
    cmd.append("tsv")
    try:
        done = subprocess.run(
            cmd,
            input=buffer.getvalue(),
            capture_output=True,
            timeout=timeout,
            check=False,
            # one thread per page: parallelism comes from the worker processes, and OpenMP threads of
            # several Tesseracts fighting over the same cores are slower than one each
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
    except subprocess.TimeoutExpired:  # run() has killed and reaped tesseract
        raise ExtractionTimeout(f"{label}: OCR took longer than {timeout:g} s (MIDAS_OCR_PAGE_TIMEOUT)") from None
    except OSError as exc:
        raise MissingDependency(f"cannot run Tesseract ({executable}): {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise ExtractionError(f"{label}: Tesseract failed ({detail[-1] if detail else f'exit {done.returncode}'})")
    result = parse_tsv((done.stdout or b"").decode("utf-8", "replace"))
    return OcrResult(result.text, result.mean_confidence, result.words, round(time.monotonic() - started, 3))


# --------------------------------------------------------------------------
# Page images
# --------------------------------------------------------------------------


@contextmanager
def open_image(path: Path) -> Iterator[Any]:
    """Open an image file with Pillow; refuse bombs and undecodable files with our errors."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - Pillow comes with streamlit
        raise MissingDependency("Pillow is needed to read images (pip install pillow)") from exc
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ResourceLimitExceeded(f"{path.name}: image too large ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise CorruptDocument(f"{path.name}: not a readable image") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise CorruptDocument(f"{path.name}: unreadable image ({type(exc).__name__}: {exc})") from exc
    try:
        if image.width * image.height > MAX_SOURCE_PIXELS:
            raise ResourceLimitExceeded(
                f"{path.name}: {image.width}x{image.height} pixels is more than the {MAX_SOURCE_PIXELS} allowed"
            )
        yield image
    finally:
        image.close()


def declared_dpi(image: Any) -> int | None:
    """The resolution an image file declares, if it is believable for a scan."""
    dpi = image.info.get("dpi")
    try:
        value = float(dpi[0]) if isinstance(dpi, tuple | list) else float(dpi)
    except (TypeError, ValueError, IndexError):
        return None
    return round(value) if 100 <= value <= 2400 else None


def frame_count(image: Any) -> int:
    """Pages in an image file: the frames of a multi-page TIFF, else 1 (animation frames are not pages)."""
    if image.format in PAGED_FORMATS:
        return max(1, int(getattr(image, "n_frames", 1) or 1))
    return 1


def _decode_error(label: str, exc: BaseException) -> MidasError:
    if isinstance(exc, MidasError):
        return exc
    if isinstance(exc, MemoryError):
        return ResourceLimitExceeded(f"{label}: the image needs more memory than allowed")
    return CorruptDocument(f"{label}: image cannot be decoded ({type(exc).__name__}: {exc})")


class PageSource:
    """Page images of one file, rendered one at a time (never all in memory)."""

    renderer = "none"

    def __init__(self, path: Path, dpi: int) -> None:
        self.path = path
        self.dpi = dpi

    def __enter__(self) -> PageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the open document."""

    def image(self, number: int) -> tuple[Any, int | None]:
        """(Pillow image, its resolution in dpi or None) of page ``number`` (1-based)."""
        raise NotImplementedError


class ImageFileSource(PageSource):
    renderer = "pillow"

    def __init__(self, path: Path, dpi: int) -> None:
        super().__init__(path, dpi)
        self._cm = open_image(path)
        self._image = self._cm.__enter__()

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

    def image(self, number: int) -> tuple[Any, int | None]:
        label = f"{self.path.name} frame {number}"
        try:
            self._image.seek(number - 1)
            frame = self._image.copy()
        except EOFError as exc:
            raise CorruptDocument(f"{label}: no such frame") from exc
        except Exception as exc:  # Pillow raises OSError/ValueError/SyntaxError on damaged data
            raise _decode_error(label, exc) from exc
        return frame, declared_dpi(self._image)


class PdfiumSource(PageSource):
    renderer = "pdfium"

    def __init__(self, path: Path, dpi: int) -> None:
        super().__init__(path, dpi)
        import pypdfium2 as pdfium

        try:
            self._pdf = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            if "password" in str(exc).lower():
                raise EncryptedDocument(f"{path.name}: PDF is password-protected; cannot render pages") from exc
            raise CorruptDocument(f"{path.name}: PDFium cannot open the PDF ({exc})") from exc
        self.page_count = len(self._pdf)

    def close(self) -> None:
        self._pdf.close()

    def image(self, number: int) -> tuple[Any, int | None]:
        if not 1 <= number <= self.page_count:
            raise CorruptDocument(f"{self.path.name}: no page {number}")
        page = self._pdf[number - 1]
        try:
            width, height = page.get_size()
            scale = self.dpi / 72.0
            pixels = width * scale * height * scale
            if pixels > MAX_OCR_PIXELS:
                scale *= math.sqrt(MAX_OCR_PIXELS / pixels)
            if width * scale < 1 or height * scale < 1:
                from PIL import Image

                return Image.new("L", (1, 1), 255), None
            bitmap = page.render(scale=scale, grayscale=True)
            try:
                return bitmap.to_pil().copy(), round(scale * 72)
            finally:
                bitmap.close()
        except MidasError:
            raise
        except Exception as exc:
            raise _decode_error(f"{self.path.name} page {number}", exc) from exc
        finally:
            page.close()


class PdfImagesSource(PageSource):
    """Fallback without PDFium: the largest embedded image of a page (a scanned page is one image)."""

    renderer = "pypdf-images"

    def __init__(self, path: Path, dpi: int) -> None:
        super().__init__(path, dpi)
        from pypdf import PdfReader

        try:
            self._reader = PdfReader(path, strict=False)
            if self._reader.is_encrypted and not self._reader.decrypt(""):
                raise EncryptedDocument(f"{path.name}: PDF is password-protected; cannot read its images")
            self.page_count = len(self._reader.pages)
        except MidasError:
            raise
        except Exception as exc:
            raise CorruptDocument(f"{path.name}: cannot read the PDF's pages ({type(exc).__name__})") from exc

    def image(self, number: int) -> tuple[Any, int | None]:
        from PIL import Image

        label = f"{self.path.name} page {number}"
        try:
            page = self._reader.pages[number - 1]
            best = None
            for item in page.images:
                picture = item.image
                if picture is not None and (best is None or picture.width * picture.height > best.width * best.height):
                    best = picture
            width_pt = float(page.mediabox.width) or 612.0
        except MidasError:
            raise
        except Exception as exc:
            raise _decode_error(label, exc) from exc
        if best is None:
            return Image.new("L", (1, 1), 255), None
        dpi = round(best.width / (width_pt / 72.0))
        return best, dpi if 70 <= dpi <= 2400 else None


def page_source(path: Path, extension: str, dpi: int = 300) -> PageSource:
    """The right page source for a PDF (PDFium, else embedded images) or an image file."""
    if extension.lower() == ".pdf":
        try:
            import pypdfium2  # noqa: F401
        except ImportError:
            log.info("pypdfium2 is not installed; OCR uses the PDF's embedded images")
            return PdfImagesSource(path, dpi)
        return PdfiumSource(path, dpi)
    return ImageFileSource(path, dpi)


# --------------------------------------------------------------------------
# Many pages within a time budget
# --------------------------------------------------------------------------


def ocr_document_pages(
    path: str, extension: str, pages: list[int], options: OcrOptions, budget_s: float
) -> dict[str, Any]:
    """OCR ``pages`` of one file in order, starting a page only while it can finish within ``budget_s``.

    The first page is always attempted, so every call makes progress. Returns
    a JSON-able dict: per-page results (text, confidence, words, seconds, or
    an error), the pages left for later (``pending``), the languages used,
    the renderer, and warnings. Meant to run in an isolated child process.
    """
    started = time.monotonic()
    languages, warnings = resolve_languages(options.languages, options.command)
    results: list[dict[str, Any]] = []
    pending: list[int] = []
    with page_source(Path(path), extension, options.dpi) as source:
        for index, number in enumerate(pages):
            elapsed = time.monotonic() - started
            if results and elapsed + options.page_timeout > budget_s:
                pending = list(pages[index:])
                break
            page_started = time.monotonic()
            label = f"{Path(path).name} page {number}"
            try:
                image, dpi = source.image(number)
                result = ocr_image(
                    image, languages, options.page_timeout, dpi=dpi, command=options.command, label=label
                )
            except MissingDependency:
                raise
            except MidasError as exc:
                log.warning("%s: %s", label, exc.message)
                results.append({"page": number, "error": exc.message, "error_type": exc.error_type})
                continue
            results.append(
                {
                    "page": number,
                    "text": result.text,
                    "confidence": result.mean_confidence,
                    "words": result.words,
                    "seconds": round(time.monotonic() - page_started, 3),
                }
            )
    return {
        "pages": results,
        "pending": pending,
        "languages": languages,
        "renderer": source.renderer,
        "warnings": warnings,
        "seconds": round(time.monotonic() - started, 3),
    }


def mean_confidence(page_results: list[dict[str, Any]]) -> float | None:
    """Word-weighted mean confidence over pages (None when no word was recognised)."""
    words = sum(int(r.get("words") or 0) for r in page_results if r.get("confidence") is not None)
    if not words:
        return None
    total = sum(
        float(r["confidence"]) * int(r.get("words") or 0) for r in page_results if r.get("confidence") is not None
    )
    return round(total / words, 1)
