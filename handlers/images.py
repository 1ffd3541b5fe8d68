"""Image reading, checking and conversion for the `thumbnails` job type, built on Pillow.

Every function that looks at untrusted bytes turns Pillow's many failure modes into
`InvalidInput("image", ...)` with a message a person can act on.
"""

from __future__ import annotations

import io
import re
import struct
from datetime import datetime, timedelta, timezone
from typing import BinaryIO, Literal

from PIL import ExifTags, Image, UnidentifiedImageError

from queueing.errors import InvalidInput

OutputFormat = Literal["JPEG", "PNG"]

FIELD = "image"

# Pillow's plugin names of the accepted formats. MPO (a JPEG with extra images, as phones
# write them) is opened by the JPEG plugin, so it needs no entry of its own here.
OPEN_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF")
ACCEPTED_FORMATS = frozenset({*OPEN_FORMATS, "MPO"})
ACCEPTED_NAMES = "JPEG, PNG, GIF, WebP or TIFF"

JPEG_QUALITY = 85

# EXIF Orientation value -> the transpose that shows the image the right way up (EXIF 2.3,
# tag 0x0112). Values 5 to 8 swap width and height.
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Exceptions Pillow raises for data it cannot decode. Pillow only warns about some corrupt data,
# so a UserWarning reaches these handlers only where warnings are turned into errors.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, UserWarning)
_EXIF_ERRORS = (*_DECODE_ERRORS, TypeError, KeyError, IndexError, UnicodeDecodeError)

# Pillow's decompression-bomb message, e.g. "Image size (4364696535 pixels) exceeds limit ...".
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


# Opening and decoding ------------------------------------------------------------------------


def pixel_limit(max_pixels: int) -> int:
    """Return the effective limit: `thumbnails.max_pixels`, or Pillow's own when lower."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow_limit is None else min(max_pixels, int(pillow_limit))


def _too_large(pixels: int | None, limit: int, size: tuple[int, int] | None = None) -> InvalidInput:
    if pixels is None:
        found = "the image is larger than the limit"
    elif size is None:
        found = f"the image has {pixels:,} pixels"
    else:
        found = f"the image is {size[0]}x{size[1]} = {pixels:,} pixels"
    return InvalidInput(FIELD, f"{found}, over the limit of {limit:,} pixels; send a smaller image")


def open_image(stream: BinaryIO, max_pixels: int) -> Image.Image:
    """Open an image from its header only and check its format and pixel count.

    No pixel data is decoded, so this is cheap enough for the request thread. Use the returned
    image in a `with` block: leaving it keeps the caller's stream open, but `close()` closes it.
    """
    limit = pixel_limit(max_pixels)
    try:
        image = Image.open(stream, formats=OPEN_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        # Pillow raises (or warns, where that warning is an error) about a huge header before it
        # returns the image, so the pixel count is only in its message.
        match = _BOMB_PIXELS.search(str(error))
        raise _too_large(int(match.group(1)) if match else None, limit) from None
    except UnidentifiedImageError:
        raise InvalidInput(
            FIELD,
            f"the file is not a {ACCEPTED_NAMES} image (its content was checked, not its "
            f"name or declared type); send an image in one of those formats",
        ) from None
    except _DECODE_ERRORS as error:
        raise InvalidInput(
            FIELD,
            f"the image header could not be read: {error}; send a complete, valid "
            f"{ACCEPTED_NAMES} image",
        ) from None

    # A rejected image is left to the garbage collector: `close()` would close the stream too.
    if image.format not in ACCEPTED_FORMATS:
        raise InvalidInput(
            FIELD, f"{image.format} images are not accepted; send a {ACCEPTED_NAMES} image"
        )
    width, height = image.size
    if width * height > limit:
        raise _too_large(width * height, limit, (width, height))
    return image


def decode(image: Image.Image) -> None:
    """Decode the pixel data of the current frame, raising InvalidInput when it is broken."""
    try:
        image.load()
    except _DECODE_ERRORS as error:
        raise InvalidInput(
            FIELD,
            f"the image data is truncated or corrupt: {error}; send the complete file again",
        ) from None


def draft_for(image: Image.Image, target: tuple[int, int]) -> tuple[float, float, float, float]:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when that still covers `target`.

    Return the box of the (possibly reduced) image that corresponds to the whole original,
    for `Image.resize(box=...)`. Formats other than JPEG ignore the request.
    """
    result = image.draft(None, target)
    if result is None:
        return (0.0, 0.0, float(image.width), float(image.height))
    left, top, right, bottom = result[1]
    return (float(left), float(top), float(right), float(bottom))


# Orientation and EXIF ------------------------------------------------------------------------


def read_exif(image: Image.Image) -> Image.Exif | None:
    """Return the image's EXIF, or None when it has none or it cannot be parsed.

    Broken EXIF is common in real uploads and never worth failing a job for. For a PNG,
    Pillow decodes the whole image to find an eXIf chunk after the pixel data.
    """
    try:
        exif = image.getexif()
    except _EXIF_ERRORS:
        return None
    return exif if len(exif) else None


def orientation_of(exif: Image.Exif | None) -> int:
    """Return the EXIF Orientation value 1 to 8, or 1 when it is absent or out of range."""
    if exif is None:
        return 1
    value = exif.get(ExifTags.Base.Orientation)
    if isinstance(value, int) and 1 <= value <= 8:
        return value
    return 1


def transpose_for(orientation: int) -> Image.Transpose | None:
    return _TRANSPOSES.get(orientation)


def displayed_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """Return (width, height) as shown once the orientation is applied."""
    width, height = size
    return (height, width) if orientation >= 5 else (width, height)


def _exif_text(exif: Image.Exif | dict[int, object], tag: int) -> str | None:
    value = exif.get(tag)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    text = value.replace("\x00", " ").strip()
    return text or None


def taken_at(exif: Image.Exif | None) -> str | None:
    """Return DateTimeOriginal as ISO 8601, with its offset and fraction when the EXIF has them.

    Placeholder dates such as "0000:00:00 00:00:00" give None.
    """
    if exif is None:
        return None
    try:
        details = exif.get_ifd(ExifTags.IFD.Exif)
    except _EXIF_ERRORS:
        return None
    text = _exif_text(details, ExifTags.Base.DateTimeOriginal)
    if text is None:
        return None
    try:
        moment = datetime.strptime(text, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None

    fraction = _exif_text(details, ExifTags.Base.SubsecTimeOriginal)
    if fraction is not None and fraction.isdigit():
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    offset = _exif_text(details, ExifTags.Base.OffsetTimeOriginal)
    zone = _parse_offset(offset) if offset else None
    if zone is not None:
        moment = moment.replace(tzinfo=zone)
    return moment.isoformat()


def _parse_offset(text: str) -> timezone | None:
    match = re.fullmatch(r"([+-])(\d{2}):(\d{2})", text)
    if match is None:
        return None
    sign = -1 if match.group(1) == "-" else 1
    delta = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
    if delta >= timedelta(hours=24):
        return None
    return timezone(sign * delta)


def camera_of(exif: Image.Exif | None) -> str | None:
    """Return "Make Model" from the EXIF, without repeating a make that the model starts with."""
    if exif is None:
        return None
    make = _exif_text(exif, ExifTags.Base.Make)
    model = _exif_text(exif, ExifTags.Base.Model)
    if make and model and model.lower().startswith(make.lower()):
        return model
    parts = [part for part in (make, model) if part]
    return " ".join(parts) or None


# Conversion for output -----------------------------------------------------------------------


def _scale_to_8_bits(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit or float greyscale image linearly to 8-bit "L".

    Pillow's own conversion to "L" clips, which turns a 16-bit image almost white.
    """
    if image.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    else:
        low_value, high_value = image.getextrema()
        low, high = float(low_value), float(high_value)  # type: ignore[arg-type]
        if image.mode == "I" and low >= 0 and high <= 65535:
            # NOTE: Pillow does not record the source's bit depth for "I". Values that fit in
            # 16 bits are taken as 16-bit samples, so 8-bit samples stored as "I" come out dark.
            low, high = 0.0, 65535.0
        elif image.mode == "F" and low >= 0 and high <= 1:
            low, high = 0.0, 1.0
    # Anything else (signed or wider ranges) is stretched from its own minimum to maximum.
    span = high - low or 1.0
    scale = 255.0 / span
    working = image.convert("F") if image.mode == "F" else image.convert("I")
    scaled = working.point(lambda value: value * scale - low * scale)
    return scaled.convert("L")


def for_output(image: Image.Image) -> tuple[Image.Image, OutputFormat]:
    """Convert a decoded frame to the mode its thumbnail is written in, and pick the format.

    Images with any transparency become RGBA or LA and are written as PNG; opaque ones become
    RGB or L and are written as JPEG.
    """
    mode = image.mode
    if mode.startswith(("I", "F")):
        return _scale_to_8_bits(image), "JPEG"
    if image.has_transparency_data:
        target = "LA" if mode in ("1", "L", "LA") else "RGBA"
        return (image if mode == target else image.convert(target)), "PNG"
    if mode in ("L", "RGB"):
        return image, "JPEG"
    if mode == "1":
        return image.convert("L"), "JPEG"
    try:
        return image.convert("RGB"), "JPEG"
    except ValueError:
        raise InvalidInput(
            FIELD,
            f"images in colour mode {mode} are not supported; send an RGB, greyscale, "
            "palette or CMYK image",
        ) from None


def matching_icc_profile(icc_profile: object, mode: str) -> bytes | None:
    """Return the source's ICC profile when its colour space matches `mode`, else None.

    A profile keeps colours right in wide-gamut photos, but a CMYK profile on the RGB thumbnail
    of a CMYK image would be wrong. Bytes 16 to 20 of a profile name its colour space.
    """
    if not isinstance(icc_profile, bytes) or len(icc_profile) < 20:
        return None
    space = icc_profile[16:20]
    if (mode in ("RGB", "RGBA") and space == b"RGB ") or (mode in ("L", "LA") and space == b"GRAY"):
        return icc_profile
    return None


def encode(image: Image.Image, output_format: OutputFormat, icc_profile: bytes | None) -> bytes:
    """Write a thumbnail without EXIF: its orientation is already applied, and it drops GPS."""
    buffer = io.BytesIO()
    if output_format == "JPEG":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, icc_profile=icc_profile)
    else:
        image.save(buffer, "PNG", icc_profile=icc_profile)
    return buffer.getvalue()


def fit_within(stored: tuple[int, int], longest: int) -> tuple[int, int]:
    """Return `stored` scaled so its longest side is `longest`, never scaled up."""
    width, height = stored
    if max(width, height) <= longest:
        return width, height
    if width >= height:
        return longest, max(1, round(height * longest / width))
    return max(1, round(width * longest / height)), longest
