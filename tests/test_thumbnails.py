"""The `thumbnails` job type: request parsing and both handlers, on real image files."""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from PIL import ExifTags, Image, ImageChops, ImageCms, ImageOps, ImageStat

from handlers import thumbnails
from handlers.registry import Intake, Registry, Submission, UploadedFile
from handlers.thumbnails import ThumbnailsRequested, make_thumbnails, parse, read_facts
from queueing.context import CancelToken, JobContext
from queueing.errors import InvalidInput, JobInterrupted
from queueing.jobs import new_job_id
from queueing.local_files import LocalFileStore
from tests.support import SHARED_DATA

SETTINGS = {"thumbnails": {"sizes": [128, 512], "max_pixels": 50_000_000}}
MAX_MEAN_DIFFERENCE = 10  # per channel, out of 255


@pytest.fixture
def images_dir() -> Path:
    return SHARED_DATA / "images"


@pytest.fixture
def store(tmp_path: Path) -> LocalFileStore:
    return LocalFileStore(tmp_path)


class NoResources:
    """A scope for handlers that open no per-job resource."""

    def resource(self, name: str) -> Any:
        raise LookupError(f"no per-job resource {name!r} in these tests")

    def run(self, function: Callable[[], Any]) -> Any:
        return function()

    def close(self) -> None:
        pass


class ProgressLog:
    """A progress sink that keeps every report, and can cancel the job on the first one."""

    def __init__(self, cancel_token: CancelToken | None = None) -> None:
        self.calls: list[tuple[float, float | None, str | None]] = []
        self._cancel_token = cancel_token

    def __call__(self, done: float, total: float | None, message: str | None) -> None:
        self.calls.append((done, total, message))
        if self._cancel_token is not None:
            self._cancel_token.set("canceled")


class Job:
    """One accepted thumbnails job: its notification, context, store and progress log."""

    def __init__(
        self,
        store: LocalFileStore,
        notification: ThumbnailsRequested,
        *,
        cancel_after_first_report: bool = False,
    ) -> None:
        self.store = store
        self.notification = notification
        self.cancel_token = CancelToken()
        self.progress = ProgressLog(self.cancel_token if cancel_after_first_report else None)
        self.context = JobContext(
            job_id=notification.job_id,
            job_type="thumbnails",
            attempt=1,
            settings=SETTINGS,
            files=store,
            cancel_token=self.cancel_token,
            scope=NoResources(),
            report=self.progress,
        )

    def thumbnails(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = make_thumbnails(self.notification, self.context)[
            "thumbnails"
        ]
        return result

    def facts(self) -> dict[str, Any]:
        result: dict[str, Any] = read_facts(self.notification, self.context)["image"]
        return result

    def output(self, entry: Mapping[str, Any]) -> Image.Image:
        name = str(entry["url"]).rsplit("/", 1)[-1]
        with self.store.open(self.notification.job_id, name) as stored:
            image = Image.open(io.BytesIO(stored.read()))
            image.load()
        return image


def submission_of(data: bytes, filename: str = "upload.bin", **fields: str) -> Submission:
    upload = UploadedFile(field="image", filename=filename, stream=io.BytesIO(data))
    return Submission(content="multipart", fields=fields, files={"image": upload})


def submit(
    store: LocalFileStore,
    data: bytes,
    settings: Mapping[str, Any] = SETTINGS,
    filename: str = "upload.bin",
) -> ThumbnailsRequested:
    intake = Intake(job_id=new_job_id(time.time()), settings=settings, files=store)
    return parse(submission_of(data, filename), intake)


def start(store: LocalFileStore, path: Path, sizes: tuple[int, ...] = (128, 512)) -> Job:
    settings = {"thumbnails": {"sizes": list(sizes), "max_pixels": 50_000_000}}
    return Job(store, submit(store, path.read_bytes(), settings, path.name))


def rejection_message(
    store: LocalFileStore, data: bytes, settings: Mapping[str, Any] = SETTINGS
) -> str:
    with pytest.raises(InvalidInput) as caught:
        submit(store, data, settings)
    assert caught.value.field == "image"
    assert store.job_ids() == [], "a rejected upload must leave no files behind"
    return caught.value.message


def mean_difference(first: Image.Image, second: Image.Image, mode: str = "RGB") -> list[float]:
    difference = ImageChops.difference(first.convert(mode), second.convert(mode))
    return [float(value) for value in ImageStat.Stat(difference).mean]


def reference(path: Path, size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """The expected thumbnail: the whole image decoded, oriented, then resized in one step."""
    with Image.open(path) as original:
        oriented = ImageOps.exif_transpose(original).convert(mode)
    return oriented.resize(size, Image.Resampling.LANCZOS)


def jpeg_with_exif(exif: Image.Exif | bytes, size: tuple[int, int] = (60, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


# Orientation -----------------------------------------------------------------------------------

LANDSCAPES = [f"Landscape_{number}.jpg" for number in range(9)]


@pytest.mark.parametrize("name", LANDSCAPES)
def test_landscape_thumbnails_match_oriented_original(images_dir: Path, store, name: str):
    path = images_dir / "photos" / name
    job = start(store, path)

    entries = job.thumbnails()

    assert [entry["size"] for entry in entries] == [128, 512]
    for entry in entries:
        thumbnail = job.output(entry)
        assert thumbnail.size == (entry["width"], entry["height"])
        assert max(thumbnail.size) == entry["size"]
        assert thumbnail.width > thumbnail.height, "every file shows a landscape photo"
        expected = reference(path, thumbnail.size)
        assert max(mean_difference(thumbnail, expected)) < MAX_MEAN_DIFFERENCE


@pytest.mark.parametrize("name", LANDSCAPES)
def test_landscape_thumbnails_look_the_same_way_up(images_dir: Path, store, name: str):
    # Landscape_1.jpg is stored upright, so every correctly oriented file must look like it.
    upright = images_dir / "photos" / "Landscape_1.jpg"
    job = start(store, images_dir / "photos" / name, sizes=(512,))

    thumbnail = job.output(job.thumbnails()[0])

    expected = reference(upright, thumbnail.size)
    assert max(mean_difference(thumbnail, expected)) < MAX_MEAN_DIFFERENCE


@pytest.mark.parametrize("number", range(9))
def test_landscape_facts_give_displayed_size(images_dir: Path, store, number: int):
    job = start(store, images_dir / "photos" / f"Landscape_{number}.jpg")

    facts = job.facts()

    assert facts["width"] == 1800
    assert facts["height"] == 1200
    assert facts["format"] == "JPEG"
    assert facts["mode"] == "RGB"
    assert facts["frames"] == 1
    # Landscape_0.jpg has Orientation 0, which is not a valid value: it is shown as stored.
    assert facts["orientation"] == max(number, 1)


def test_orientation_from_png_exif_chunk_is_applied(images_dir: Path, store):
    path = images_dir / "edge" / "exif_imagemagick_orientation.png"
    job = start(store, path, sizes=(256,))

    thumbnail = job.output(job.thumbnails()[0])

    assert job.facts()["orientation"] == 3
    rotated = reference(path, thumbnail.size)
    assert max(mean_difference(thumbnail, rotated)) < MAX_MEAN_DIFFERENCE
    with Image.open(path) as original:
        as_stored = original.convert("RGB").resize(thumbnail.size, Image.Resampling.LANCZOS)
    assert max(mean_difference(thumbnail, as_stored)) > MAX_MEAN_DIFFERENCE


def test_many_sizes_each_match_a_direct_resize(images_dir: Path, store):
    # Covers decoding at reduced scale, thumbnails made from larger ones, and the full size.
    path = images_dir / "photos" / "Landscape_6.jpg"
    job = start(store, path, sizes=(1800, 700, 300, 100, 64))

    entries = job.thumbnails()

    assert [entry["size"] for entry in entries] == [64, 100, 300, 700, 1800]
    for entry in entries:
        thumbnail = job.output(entry)
        expected = reference(path, thumbnail.size)
        assert max(mean_difference(thumbnail, expected)) < MAX_MEAN_DIFFERENCE, entry


# Colour modes and formats ----------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb_jpeg(images_dir: Path, store):
    path = images_dir / "edge" / "pil_sample_cmyk.jpg"
    job = start(store, path, sizes=(64,))

    entry = job.thumbnails()[0]
    thumbnail = job.output(entry)

    assert entry["format"] == "JPEG"
    assert entry["url"].endswith("/thumbnail-64.jpg")
    assert thumbnail.mode == "RGB"
    assert max(mean_difference(thumbnail, reference(path, thumbnail.size))) < 10
    assert job.facts()["mode"] == "CMYK"


@pytest.mark.parametrize("name", ["p_trns_single.png", "rgb_trns.png", "transparent.png"])
def test_transparent_images_keep_alpha_as_png(images_dir: Path, store, name: str):
    path = images_dir / "edge" / name
    job = start(store, path, sizes=(48,))

    entry = job.thumbnails()[0]
    thumbnail = job.output(entry)

    assert entry["format"] == "PNG"
    assert entry["url"].endswith("/thumbnail-48.png")
    assert thumbnail.mode == "RGBA"
    assert thumbnail.getchannel("A").getextrema()[0] == 0, "transparent pixels were lost"
    expected = reference(path, thumbnail.size, "RGBA")
    assert mean_difference(thumbnail, expected, "RGBA")[3] < MAX_MEAN_DIFFERENCE


def test_greyscale_with_alpha_stays_la_png(store):
    image = Image.new("LA", (80, 40), (90, 255))
    image.paste((200, 0), (0, 0, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    job = Job(store, submit(store, buffer.getvalue()))

    entry = job.thumbnails()[0]
    thumbnail = job.output(entry)

    assert entry["format"] == "PNG"
    assert thumbnail.mode == "LA"
    assert thumbnail.getchannel("A").getextrema() == (0, 255)


def test_rgb_thumbnail_keeps_icc_profile(store):
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), (20, 120, 220)).save(buffer, "JPEG", icc_profile=srgb)
    job = Job(store, submit(store, buffer.getvalue()))

    thumbnail = job.output(job.thumbnails()[0])

    assert thumbnail.info.get("icc_profile") == srgb


def test_cmyk_profile_is_not_copied_to_rgb(store):
    # An RGB thumbnail tagged with the source's CMYK profile would show wrong colours.
    cmyk_profile = bytes(16) + b"CMYK" + bytes(108)
    buffer = io.BytesIO()
    Image.new("CMYK", (30, 20), (0, 200, 200, 0)).save(buffer, "JPEG", icc_profile=cmyk_profile)
    job = Job(store, submit(store, buffer.getvalue()))

    thumbnail = job.output(job.thumbnails()[0])

    assert thumbnail.mode == "RGB"
    assert "icc_profile" not in thumbnail.info


@pytest.mark.parametrize("name", ["gray16_gradient.png", "gray16_gradient.tif"])
def test_sixteen_bit_grey_is_scaled_not_clipped(images_dir: Path, store, name: str):
    job = start(store, images_dir / "edge" / name, sizes=(300,))

    thumbnail = job.output(job.thumbnails()[0])

    assert thumbnail.mode == "L"
    assert 118 < ImageStat.Stat(thumbnail).mean[0] < 138
    # The ramp runs from black on the left to white on the right, without steps backwards.
    columns = [
        ImageStat.Stat(thumbnail.crop((x, 0, x + 1, thumbnail.height))).mean[0]
        for x in range(thumbnail.width)
    ]
    assert columns[0] < 10
    assert columns[-1] > 245
    assert all(later >= earlier - 3 for earlier, later in itertools.pairwise(columns))


def test_sixteen_bit_rgb_keeps_both_ramps(images_dir: Path, store):
    job = start(store, images_dir / "edge" / "rgb16_ramps.png", sizes=(300,))

    thumbnail = job.output(job.thumbnails()[0])
    red, green, blue = thumbnail.split()
    width, height = thumbnail.size

    assert ImageStat.Stat(red.crop((0, 0, 5, height))).mean[0] < 15
    assert ImageStat.Stat(red.crop((width - 5, 0, width, height))).mean[0] > 240
    assert ImageStat.Stat(blue.crop((0, 0, width, 5))).mean[0] < 15
    assert ImageStat.Stat(blue.crop((0, height - 5, width, height))).mean[0] > 240
    assert 118 < ImageStat.Stat(green).mean[0] < 138


def test_sixteen_bit_integer_image_uses_full_range(store):
    # A 32-bit integer image whose samples fit in 16 bits is read as 16-bit data.
    image = Image.linear_gradient("L").resize((64, 64)).convert("I").point(lambda v: v * 257)
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    job = Job(store, submit(store, buffer.getvalue()))

    thumbnail = job.output(job.thumbnails()[0])

    assert thumbnail.mode == "L"
    assert 118 < ImageStat.Stat(thumbnail).mean[0] < 138


def test_animated_gif_reports_frames_and_uses_first(images_dir: Path, store):
    path = images_dir / "edge" / "iss634.gif"
    job = start(store, path)

    thumbnail = job.output(job.thumbnails()[-1])
    facts = job.facts()

    assert facts["frames"] == 42
    assert facts["format"] == "GIF"
    with Image.open(path) as original:
        first_frame = original.convert("RGB")
    assert thumbnail.size == first_frame.size
    assert max(mean_difference(thumbnail, first_frame)) < MAX_MEAN_DIFFERENCE


def test_animation_thumbnail_shows_first_frame(store):
    red = Image.new("RGB", (40, 40), (255, 0, 0))
    blue = Image.new("RGB", (40, 40), (0, 0, 255))
    green = Image.new("RGB", (40, 40), (0, 255, 0))
    buffer = io.BytesIO()
    red.save(buffer, "GIF", save_all=True, append_images=[blue, green], duration=100)
    job = Job(store, submit(store, buffer.getvalue()))

    thumbnail = job.output(job.thumbnails()[0])

    assert job.facts()["frames"] == 3
    assert max(mean_difference(thumbnail, red)) < MAX_MEAN_DIFFERENCE


def test_phone_mpo_is_accepted_as_jpeg(store):
    main = Image.new("RGB", (64, 48), (10, 160, 20))
    second = Image.new("RGB", (64, 48), (250, 250, 250))
    buffer = io.BytesIO()
    main.save(buffer, "MPO", save_all=True, append_images=[second])
    job = Job(store, submit(store, buffer.getvalue()))

    thumbnail = job.output(job.thumbnails()[0])
    facts = job.facts()

    assert facts["format"] == "JPEG"
    assert facts["frames"] == 2
    assert max(mean_difference(thumbnail, main)) < MAX_MEAN_DIFFERENCE


@pytest.mark.parametrize(
    ("name", "image_format"),
    [
        ("hopper.jpg", "JPEG"),
        ("hopper.png", "PNG"),
        ("hopper.gif", "GIF"),
        ("hopper.webp", "WEBP"),
        ("hopper.tif", "TIFF"),
    ],
)
def test_hopper_in_every_format(images_dir: Path, store, name: str, image_format: str):
    path = images_dir / "edge" / name
    job = start(store, path, sizes=(96,))

    entry = job.thumbnails()[0]
    thumbnail = job.output(entry)
    facts = job.facts()

    assert entry["format"] == "JPEG"
    assert (entry["width"], entry["height"]) == (96, 96)
    assert max(mean_difference(thumbnail, reference(path, (96, 96)))) < MAX_MEAN_DIFFERENCE
    assert facts["format"] == image_format
    assert (facts["width"], facts["height"]) == (128, 128)
    assert "taken_at" not in facts
    assert "camera" not in facts


# Result document, progress and cancellation --------------------------------------------------


def test_small_image_is_not_upscaled(images_dir: Path, store):
    job = start(store, images_dir / "edge" / "hopper.png", sizes=(64, 512, 1024))

    entries = job.thumbnails()

    sizes = [(entry["size"], entry["width"], entry["height"]) for entry in entries]
    assert sizes == [(64, 64, 64), (512, 128, 128), (1024, 128, 128)]
    assert job.output(entries[2]).size == (128, 128)


def test_result_urls_name_saved_files(images_dir: Path, store):
    job = start(store, images_dir / "edge" / "hopper.jpg")
    job_id = job.notification.job_id

    entries = job.thumbnails()

    assert [entry["url"] for entry in entries] == [
        f"/jobs/{job_id}/files/thumbnail-128.jpg",
        f"/jobs/{job_id}/files/thumbnail-512.jpg",
    ]
    assert job.context.outputs == ["thumbnail-512.jpg", "thumbnail-128.jpg"]
    assert job.output(entries[0]).format == "JPEG"


def test_progress_is_reported_per_size(images_dir: Path, store):
    job = start(store, images_dir / "photos" / "Landscape_3.jpg")

    job.thumbnails()

    assert [(done, total) for done, total, _ in job.progress.calls] == [(1, 2), (2, 2)]
    assert all(message for _, _, message in job.progress.calls)


def test_cancel_stops_between_sizes(images_dir: Path, store):
    path = images_dir / "photos" / "Landscape_3.jpg"
    notification = submit(store, path.read_bytes())
    job = Job(store, notification, cancel_after_first_report=True)

    with pytest.raises(JobInterrupted):
        job.thumbnails()

    assert job.context.outputs == ["thumbnail-512.jpg"]
    assert len(job.progress.calls) == 1


def test_canceled_job_decodes_nothing(images_dir: Path, store):
    job = start(store, images_dir / "photos" / "Landscape_3.jpg")
    job.cancel_token.set("canceled")

    with pytest.raises(JobInterrupted):
        job.thumbnails()

    assert job.context.outputs == []


def test_truncated_jpeg_fails_in_handler(images_dir: Path, store):
    # Its header is intact, so only the full decode in the handler finds the fault.
    job = start(store, images_dir / "edge" / "truncated_jpeg.jpg")

    with pytest.raises(InvalidInput) as caught:
        job.thumbnails()

    assert caught.value.field == "image"
    assert "truncated or corrupt" in caught.value.message
    assert job.context.outputs == []


# EXIF facts ------------------------------------------------------------------------------------


def test_facts_include_capture_time_and_camera(store):
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    exif[ExifTags.Base.Model] = "Canon EOS 5D"
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal] = "2021:06:05 14:03:09"
    details[ExifTags.Base.OffsetTimeOriginal] = "+02:00"
    job = Job(store, submit(store, jpeg_with_exif(exif)))

    facts = job.facts()

    assert facts["taken_at"] == "2021-06-05T14:03:09+02:00"
    assert facts["camera"] == "Canon EOS 5D"


def test_facts_join_make_and_model(store):
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Apple"
    exif[ExifTags.Base.Model] = "iPhone 12"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2020:01:02 03:04:05"
    job = Job(store, submit(store, jpeg_with_exif(exif)))

    facts = job.facts()

    assert facts["camera"] == "Apple iPhone 12"
    assert facts["taken_at"] == "2020-01-02T03:04:05"


def test_placeholder_capture_time_is_left_out(store):
    exif = Image.Exif()
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "0000:00:00 00:00:00"
    job = Job(store, submit(store, jpeg_with_exif(exif)))

    assert "taken_at" not in job.facts()


def test_orientation_tag_swaps_displayed_size(store):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    job = Job(store, submit(store, jpeg_with_exif(exif, size=(60, 40))))

    facts = job.facts()
    entry = job.thumbnails()[0]

    assert (facts["width"], facts["height"]) == (40, 60)
    assert (entry["width"], entry["height"]) == (40, 60)


def test_unparsable_exif_is_ignored(store):
    job = Job(store, submit(store, jpeg_with_exif(b"Exif\x00\x00not a TIFF header at all")))

    facts = job.facts()
    entries = job.thumbnails()

    assert facts["orientation"] == 1
    assert (entries[0]["width"], entries[0]["height"]) == (60, 40)


def run_both_handlers(
    store: LocalFileStore, data: bytes
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    job = Job(store, submit(store, data))
    return job.facts(), job.thumbnails()


def test_truncated_exif_only_warns(store):
    # An EXIF block cut off inside its first entry: Pillow warns about it and carries on.
    broken = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03"
    with pytest.warns(UserWarning, match="Corrupt EXIF"):
        facts, entries = run_both_handlers(store, jpeg_with_exif(broken))

    assert facts["orientation"] == 1
    assert (entries[0]["width"], entries[0]["height"]) == (60, 40)


# Rejections at submit time -----------------------------------------------------------------------


def test_file_that_is_not_a_png_is_rejected(images_dir: Path, store):
    message = rejection_message(store, (images_dir / "edge" / "broken.png").read_bytes())

    assert "not a JPEG, PNG, GIF, WebP or TIFF image" in message


def test_decompression_bomb_is_rejected(images_dir: Path, store):
    data = (images_dir / "edge" / "decompression_bomb.gif").read_bytes()

    message = rejection_message(store, data)

    assert "4,364,696,535 pixels" in message
    assert "limit of 50,000,000 pixels" in message


def test_large_canvas_is_rejected_by_our_limit(images_dir: Path, store):
    message = rejection_message(store, (images_dir / "edge" / "large_canvas_60mp.png").read_bytes())

    assert "8000x7500 = 60,000,000 pixels" in message
    assert "limit of 50,000,000 pixels" in message


def test_large_canvas_passes_under_a_higher_limit(images_dir: Path, store):
    settings = {"thumbnails": {"sizes": [128], "max_pixels": 70_000_000}}
    data = (images_dir / "edge" / "large_canvas_60mp.png").read_bytes()

    notification = submit(store, data, settings)

    assert notification.max_pixels == 70_000_000


def test_pillow_limit_applies_below_ours(images_dir: Path, store, monkeypatch):
    # hopper.png has 16,384 pixels: over this Pillow limit, under twice it, so Pillow only
    # warns, and the test run turns warnings into errors as the service does for this one.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)

    message = rejection_message(store, (images_dir / "edge" / "hopper.png").read_bytes())

    assert "16,384 pixels" in message
    assert "limit of 10,000 pixels" in message


def test_empty_file_is_rejected(store):
    message = rejection_message(store, b"")

    assert "empty" in message


def test_text_file_is_rejected_whatever_its_name(store):
    with pytest.raises(InvalidInput) as caught:
        submit(store, b"name,size\nhopper,128\n", filename="hopper.png")

    assert caught.value.field == "image"
    assert "its content was checked" in caught.value.message


def test_unaccepted_format_is_rejected(store):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "BMP")

    message = rejection_message(store, buffer.getvalue())

    assert "JPEG, PNG, GIF, WebP or TIFF" in message


def test_missing_image_part_is_rejected(store):
    intake = Intake(job_id=new_job_id(time.time()), settings=SETTINGS, files=store)

    with pytest.raises(InvalidInput) as caught:
        parse(Submission(content="multipart"), intake)

    assert caught.value.field == "image"
    assert "missing" in caught.value.message


def test_unknown_extra_field_is_rejected(images_dir: Path, store):
    data = (images_dir / "edge" / "hopper.png").read_bytes()
    intake = Intake(job_id=new_job_id(time.time()), settings=SETTINGS, files=store)

    with pytest.raises(InvalidInput) as caught:
        parse(submission_of(data, caption="my cat"), intake)

    assert caught.value.field == "caption"
    assert store.job_ids() == []


# Submission and registration -------------------------------------------------------------------


def test_content_decides_not_file_name(images_dir: Path, store):
    data = (images_dir / "edge" / "hopper.png").read_bytes()
    job = Job(store, submit(store, data, filename="holiday.jpg"))

    assert job.facts()["format"] == "PNG"


def test_notification_copies_settings_and_round_trips(images_dir: Path, store):
    settings = {"thumbnails": {"sizes": [64, 256], "max_pixels": 1_000_000}}

    notification = submit(store, (images_dir / "edge" / "hopper.jpg").read_bytes(), settings)

    assert notification.sizes == (64, 256)
    assert notification.max_pixels == 1_000_000
    assert notification.upload == "upload"
    assert ThumbnailsRequested.from_payload(notification.to_payload()) == notification
    with store.open(notification.job_id, "upload") as stored:
        assert stored.read() == (images_dir / "edge" / "hopper.jpg").read_bytes()


def test_register_adds_type_and_handlers_in_order():
    registry = Registry()

    thumbnails.register(registry)
    registry.freeze()

    job_type = registry.get("thumbnails")
    assert job_type.notification is ThumbnailsRequested
    assert job_type.accepts == frozenset({"multipart"})
    names = [handler.name for handler in registry.handlers_for(ThumbnailsRequested)]
    assert names == ["make-thumbnails", "read-facts"]
