"""Real images for the HTTP service's /predict checks, as encoded files (what a client uploads): the
photos scikit-learn ships, in RGB, RGBA, grayscale and odd sizes, and digits from its digits set
rendered to PNG; and the malformed uploads the service must refuse with a 4xx."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np


def _encode(image: object, kind: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind)  # type: ignore[attr-defined]
    return buffer.getvalue()


def upload_images() -> dict[str, bytes]:
    """name -> encoded image bytes."""
    from PIL import Image
    from sklearn.datasets import load_digits, load_sample_images

    china, flower = (Image.fromarray(array) for array in load_sample_images().images)
    digits = load_digits()
    images = {
        "china-rgb.jpg": _encode(china, "JPEG"),
        "flower-rgb.png": _encode(flower.resize((320, 240)), "PNG"),
        "flower-rgba.png": _encode(flower.resize((300, 200)).convert("RGBA"), "PNG"),
        "china-gray.png": _encode(china.resize((256, 192)).convert("L"), "PNG"),
        "china-odd-123x77.png": _encode(china.crop((100, 50, 223, 127)), "PNG"),
    }
    for index in (0, 7, 42):
        ink = (digits.images[index] / 16.0 * 255).astype(np.uint8)
        digit = Image.fromarray(ink, mode="L").resize((32, 32), Image.Resampling.NEAREST)
        images[f"digit-{digits.target[index]}-gray.png"] = _encode(digit, "PNG")
        images[f"digit-{digits.target[index]}-rgb.png"] = _encode(digit.convert("RGB"), "PNG")
    return images


def zero_size_png() -> bytes:
    """A syntactically complete PNG whose header says 0 x 0 pixels."""
    return png_declaring(0, 0)


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header says `width` x `height` RGB pixels, with no pixel data: what a service
    must judge from the header alone (50000 x 50000 is 7.5 GB decoded, in a 60-byte upload)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))
