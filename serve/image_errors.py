"""The two ways untrusted image bytes are refused (serve/imagecheck.py, serve/png_stream.py)."""


class BadImage(ValueError):
    """Bytes that are not a complete JPEG or PNG image (answered with 400)."""


class ImageTooLarge(ValueError):
    """An image whose declared width x height exceeds the pixel limit (answered with 413)."""
