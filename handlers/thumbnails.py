"""The `thumbnails` job type: an uploaded image becomes one thumbnail per configured size.

Two handlers run for each job: `make-thumbnails` writes the thumbnails, `read-facts` reports the
image's format, displayed size, orientation, frame count, capture time and camera.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from handlers import images
from handlers.registry import MULTIPART, Intake, Registry, Submission
from queueing.context import JobContext
from queueing.errors import InvalidInput
from queueing.jobs import Notification

logger = logging.getLogger(__name__)

UPLOAD_NAME = "upload"
DEFAULT_SIZES = (128, 512)
DEFAULT_MAX_PIXELS = 50_000_000

# A thumbnail is made from an earlier, larger thumbnail only when that one is at least this
# many times larger. Below that the second resampling softens edges, so the decoded image is
# used instead. LANCZOS from a 2x or larger source matches a resize of the full image closely.
CHAIN_MIN_RATIO = 2.0

# Passed to `Image.resize`: shrink by a whole factor with a box filter until the image is this
# many times the target, then finish with LANCZOS. The `Image.resize` documentation of Pillow 13
# says a gap of 3.0 or more is indistinguishable from plain resampling in most cases.
RESIZE_REDUCING_GAP = 3.0


@dataclass(frozen=True, kw_only=True)
class ThumbnailsRequested(Notification):
    """A stored upload to turn into thumbnails, with the settings of the moment it was accepted."""

    upload: str
    sizes: tuple[int, ...]
    max_pixels: int


def _thumbnail_settings(settings: Mapping[str, Any]) -> tuple[tuple[int, ...], int]:
    section = settings.get("thumbnails", {})
    sizes = tuple(int(size) for size in section.get("sizes", DEFAULT_SIZES))
    max_pixels = int(section.get("max_pixels", DEFAULT_MAX_PIXELS))
    return sizes, max_pixels


def parse(submission: Submission, intake: Intake) -> ThumbnailsRequested:
    """Check an upload cheaply on the request thread, store it and build the notification.

    Only the header is read: the format comes from the content, never from the file name or
    the declared content type. Faults that only a full decode finds fail the job later.
    """
    submission.check_names(["image"])
    upload = submission.require_file("image")
    sizes, max_pixels = _thumbnail_settings(intake.settings)

    stream = upload.stream
    stream.seek(0, io.SEEK_END)
    if stream.tell() == 0:
        raise InvalidInput("image", f"the file is empty; send a {images.ACCEPTED_NAMES} image")
    stream.seek(0)
    # Opening reads the header and runs every check; the pixel data waits for the handler.
    # Leaving the `with` releases the image without closing the stream, unlike `close()`.
    with images.open_image(stream, max_pixels):
        pass

    stream.seek(0)
    intake.save_upload(UPLOAD_NAME, stream)
    return ThumbnailsRequested(
        job_id=intake.job_id, upload=UPLOAD_NAME, sizes=sizes, max_pixels=max_pixels
    )


def _read_upload(notification: ThumbnailsRequested, ctx: JobContext) -> io.BytesIO:
    # Read the whole upload first, so an OSError from the file store (worth a retry) is never
    # mistaken for an OSError from Pillow about broken image data (never worth one).
    with ctx.open_file(notification.upload) as stored:
        return io.BytesIO(stored.read())


def _pick_source(
    target: tuple[int, int],
    decoded: Image.Image,
    box: tuple[float, float, float, float],
    resized_images: list[Image.Image],
) -> tuple[Image.Image, tuple[float, float, float, float] | None]:
    """Return the smallest image to resize into `target`, with its crop box when it has one."""
    for earlier in reversed(resized_images):  # smallest first: sizes are made largest first
        if max(earlier.size) >= CHAIN_MIN_RATIO * max(target) or earlier.size == target:
            return earlier, None
    return decoded, box


def make_thumbnails(notification: ThumbnailsRequested, ctx: JobContext) -> dict[str, Any]:
    """Write one thumbnail per size, largest first, each from the cheapest good source."""
    started = time.perf_counter()
    ctx.check_canceled()
    with images.open_image(_read_upload(notification, ctx), notification.max_pixels) as image:
        source_format, stored_size = image.format, image.size
        thumbnails = _write_thumbnails(image, sorted(set(notification.sizes)), ctx)
    logger.info(
        "Job %s made %d thumbnails from a %s image of %dx%d pixels in %.0f ms.",
        ctx.job_id,
        len(thumbnails),
        source_format,
        *stored_size,
        (time.perf_counter() - started) * 1000,
    )
    return {"thumbnails": thumbnails}


def _write_thumbnails(
    image: Image.Image, sizes: list[int], ctx: JobContext
) -> list[dict[str, Any]]:
    """Decode `image` once and save a thumbnail per size; return their entries, smallest first."""
    # Targets come from the full stored size, so drafting cannot change any result size.
    targets = {size: images.fit_within(image.size, size) for size in sizes}
    box = images.draft_for(image, targets[sizes[-1]])
    images.decode(image)
    transpose = images.transpose_for(images.orientation_of(images.read_exif(image)))
    icc_profile = image.info.get("icc_profile")
    decoded, output_format = images.for_output(image)
    icc = images.matching_icc_profile(icc_profile, decoded.mode)
    extension = "jpg" if output_format == "JPEG" else "png"

    resized_images: list[Image.Image] = []
    thumbnails: list[dict[str, Any]] = []
    for done, size in enumerate(reversed(sizes), start=1):
        ctx.check_canceled()
        target = targets[size]
        source, source_box = _pick_source(target, decoded, box, resized_images)
        if source.size == target and source_box is None:
            resized = source
        else:
            resized = source.resize(
                target, Image.Resampling.LANCZOS, box=source_box, reducing_gap=RESIZE_REDUCING_GAP
            )
        resized_images.append(resized)
        # Rotating the small result is cheaper than rotating the decoded image first.
        oriented = resized if transpose is None else resized.transpose(transpose)
        url = ctx.save_output(
            f"thumbnail-{size}.{extension}", images.encode(oriented, output_format, icc)
        )
        thumbnails.append(
            {
                "size": size,
                "width": oriented.width,
                "height": oriented.height,
                "format": output_format,
                "url": url,
            }
        )
        ctx.report_progress(done, len(sizes), f"made the {size} px thumbnail")
    thumbnails.reverse()
    return thumbnails


def read_facts(notification: ThumbnailsRequested, ctx: JobContext) -> dict[str, Any]:
    """Report what the image is, from its header and EXIF.

    Only a PNG has its pixel data decoded, because Pillow looks for its EXIF after the pixels.

    `orientation` is the EXIF value that was applied, 1 to 8; an image without a valid
    Orientation tag reports 1, which means it is shown as stored. `format` is Pillow's name,
    except that MPO (a JPEG carrying extra images) is reported as JPEG.
    """
    ctx.check_canceled()
    with images.open_image(_read_upload(notification, ctx), notification.max_pixels) as image:
        exif = images.read_exif(image)
        orientation = images.orientation_of(exif)
        width, height = images.displayed_size(image.size, orientation)
        facts: dict[str, Any] = {
            "format": "JPEG" if image.format == "MPO" else image.format,
            "width": width,
            "height": height,
            "mode": image.mode,
            "orientation": orientation,
            "frames": getattr(image, "n_frames", 1),
        }
    taken_at = images.taken_at(exif)
    if taken_at is not None:
        facts["taken_at"] = taken_at
    camera = images.camera_of(exif)
    if camera is not None:
        facts["camera"] = camera
    logger.debug("Job %s read the facts of a %s image.", ctx.job_id, facts["format"])
    return {"image": facts}


def register(registry: Registry) -> None:
    registry.job_type(
        "thumbnails",
        ThumbnailsRequested,
        parse,
        accepts=MULTIPART,
        description="Make thumbnails of an uploaded image and report its facts.",
    )
    registry.handler(ThumbnailsRequested, "make-thumbnails", make_thumbnails)
    registry.handler(ThumbnailsRequested, "read-facts", read_facts)
