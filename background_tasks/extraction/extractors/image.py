"""Image files (PNG, JPEG, TIFF, BMP, GIF): facts here, text from the pipeline's OCR step.

An image has no text layer, so extraction returns no text and lists the
pages to OCR in ``pages_without_text``: every page of a multi-page TIFF, the
first frame of anything else (an animated GIF's frames are not pages). The
first frame is decoded here so a truncated or corrupt file fails as
``corrupt`` instead of succeeding with an empty OCR result. Pillow is
imported inside ``extract`` like every optional library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from background_tasks.errors import CorruptDocument, MidasError, ResourceLimitExceeded
from background_tasks.extraction.extractors.base import Extraction, Extractor, Limits
from background_tasks.extraction.extractors.metadata import shaped
from background_tasks.extraction.tesseract import IMAGE_EXTENSIONS, declared_dpi, frame_count, open_image

#: EXIF tags worth keeping -> metadata keys: ImageDescription, Artist, Copyright, DateTime (when the file was
#: last changed, in the EXIF standard's words), Software
_EXIF_TAGS = {
    0x010E: "description",
    0x013B: "authors",
    0x8298: "copyright",
    0x0132: "modified",
    0x0131: "application",
}
_BANDS = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3, "RGBA": 4, "CMYK": 4}


class ImageExtractor(Extractor):
    name = "image"
    extensions = IMAGE_EXTENSIONS
    mime_types = frozenset({"image/png", "image/jpeg", "image/tiff", "image/bmp", "image/x-ms-bmp", "image/gif"})

    def extract(self, path: Path, limits: Limits) -> Extraction:
        with open_image(path) as image:
            width, height = image.size
            bands = _BANDS.get(image.mode, 4)
            if width * height * bands > limits.max_decompressed_bytes:
                raise ResourceLimitExceeded(
                    f"{path.name}: {width}x{height} pixels decode to more than "
                    f"{limits.max_decompressed_bytes} bytes (MIDAS_MAX_DECOMPRESSED_MB)"
                )
            try:
                image.load()
            except MidasError:
                raise
            except MemoryError as exc:
                raise ResourceLimitExceeded(f"{path.name}: the image needs more memory than allowed") from exc
            except Exception as exc:  # Pillow raises OSError/ValueError/SyntaxError on damaged data
                raise CorruptDocument(f"{path.name}: image cannot be decoded ({type(exc).__name__}: {exc})") from exc
            pages = frame_count(image)
            metadata: dict[str, Any] = {
                "image_format": image.format,
                "width": width,
                "height": height,
                "mode": image.mode,
                "frames": int(getattr(image, "n_frames", 1) or 1),
                "page_count": pages,
                "text_layer": False,
                "pages_without_text": list(range(1, pages + 1)),
            }
            dpi = declared_dpi(image)
            if dpi:
                metadata["dpi"] = dpi
            metadata.update(_exif(image))
        return Extraction(text="", metadata=metadata)


def _exif(image: Any) -> dict[str, Any]:
    try:
        exif = image.getexif()
    except Exception:  # damaged EXIF never costs the image
        return {}
    found: dict[str, str] = {}
    for tag, key in _EXIF_TAGS.items():
        value = exif.get(tag)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            value = " ".join(value.replace("\x00", "").split())
            if value:
                found[key] = value[:1000]
    return shaped(found)
