"""The built-in job types over HTTP, on real files, and the README's own job type example."""

from __future__ import annotations

import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageOps, ImageStat

from tests.conftest import LiveService
from tests.test_api import assert_problem

README = Path(__file__).resolve().parents[1] / "README.md"


def upload(path: Path) -> tuple[str, bytes]:
    return path.name, path.read_bytes()


def mean_difference(first: Image.Image, second: Image.Image) -> float:
    difference = ImageStat.Stat(ImageChops.difference(first, second))
    return max(difference.mean)


def test_every_photo_orientation_gives_upright_thumbnails(
    service: LiveService, shared_data: Path
) -> None:
    photos = sorted((shared_data / "images" / "photos").glob("Landscape_*.jpg"))
    assert len(photos) == 9
    jobs = {
        photo: service.post("/jobs/thumbnails", files={"image": upload(photo)}).json()["id"]
        for photo in photos
    }
    for photo, job_id in jobs.items():
        assert service.wait_until_finished(job_id)["status"] == "succeeded", photo.name
        result = service.get(f"/jobs/{job_id}/result").json()
        assert (result["image"]["width"], result["image"]["height"]) == (1800, 1200)
        upright = ImageOps.exif_transpose(Image.open(photo)).convert("RGB")
        for thumbnail in result["thumbnails"]:
            response = service.get(thumbnail["url"])
            assert response.headers["Content-Type"] == "image/jpeg"
            made = Image.open(io.BytesIO(response.content)).convert("RGB")
            assert made.size == (thumbnail["width"], thumbnail["height"])
            assert max(made.size) == thumbnail["size"]
            expected = upright.resize(made.size, Image.Resampling.LANCZOS)
            assert mean_difference(made, expected) < 10, (photo.name, thumbnail["size"])


@pytest.mark.parametrize(
    ("name", "format_", "frames"),
    [
        ("pil_sample_cmyk.jpg", "JPEG", 1),
        ("transparent.png", "PNG", 1),
        ("iss634.gif", "JPEG", 42),
        ("hopper.webp", "JPEG", 1),
        ("hopper.tif", "JPEG", 1),
        ("gray16_gradient.png", "JPEG", 1),
    ],
)
def test_edge_images_give_thumbnails(
    service: LiveService, shared_data: Path, name: str, format_: str, frames: int
) -> None:
    path = shared_data / "images" / "edge" / name
    job = service.post("/jobs/thumbnails", files={"image": upload(path)}).json()
    assert service.wait_until_finished(job["id"])["status"] == "succeeded"
    result = service.get(f"/jobs/{job['id']}/result").json()
    assert result["image"]["frames"] == frames
    assert {t["format"] for t in result["thumbnails"]} == {format_}
    made = Image.open(io.BytesIO(service.get(result["thumbnails"][0]["url"]).content))
    if name == "transparent.png":
        assert made.mode in ("RGBA", "LA")
        assert made.getextrema()[-1][0] < 255  # some pixels stay transparent
    if name == "gray16_gradient.png":
        assert 100 < ImageStat.Stat(made.convert("L")).mean[0] < 156


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("broken.png", "not a JPEG, PNG, GIF, WebP or TIFF"),
        ("decompression_bomb.gif", "over the limit"),
        ("large_canvas_60mp.png", "60,000,000 pixels, over the limit of 50,000,000"),
    ],
)
def test_bad_images_are_refused_at_submit(
    service: LiveService, shared_data: Path, tmp_path: Path, name: str, words: str
) -> None:
    path = shared_data / "images" / "edge" / name
    body = assert_problem(
        service.post("/jobs/thumbnails", files={"image": upload(path)}), 422, field="image"
    )
    assert words in body["detail"]
    assert service.get("/jobs").json()["jobs"] == []
    assert not list((tmp_path / "var").rglob("upload"))


def test_truncated_jpeg_fails_job_clearly_and_worker_goes_on(
    service: LiveService, shared_data: Path
) -> None:
    truncated = shared_data / "images" / "edge" / "truncated_jpeg.jpg"
    job = service.post("/jobs/thumbnails", files={"image": upload(truncated)}).json()
    finished = service.wait_until_finished(job["id"])
    assert finished["status"] == "failed"
    assert finished["attempt"] == 1
    assert finished["error"]["type"] == "invalid_input"
    assert "truncated or corrupt" in finished["error"]["message"]
    good = shared_data / "images" / "edge" / "hopper.jpg"
    after = service.post("/jobs/thumbnails", files={"image": upload(good)}).json()
    assert service.wait_until_finished(after["id"])["status"] == "succeeded"


def test_text_file_sent_as_image_is_422(service: LiveService, shared_data: Path) -> None:
    text = shared_data / "csv" / "messy" / "ragged.csv"
    response = service.post(
        "/jobs/thumbnails", files={"image": ("photo.jpg", text.read_bytes(), "image/jpeg")}
    )
    assert_problem(response, 422, field="image")


def test_empty_file_and_missing_part_are_422(service: LiveService) -> None:
    empty = service.post("/jobs/thumbnails", files={"image": ("a.png", b"")})
    assert "empty" in assert_problem(empty, 422, field="image")["detail"]
    missing = service.post("/jobs/thumbnails", files={"picture": ("a.png", b"x")})
    assert_problem(missing, 422, field="picture")


def test_messy_csv_profiles_match_expected(service: LiveService, shared_data: Path) -> None:
    folder = shared_data / "csv" / "messy"
    expected = json.loads((folder / "expected.json").read_text())
    for name, facts in expected.items():
        if name.startswith("_"):
            continue
        job = service.post("/jobs/csv-profile", files={"file": upload(folder / name)})
        assert job.status_code == 202, job.text
        finished = service.wait_until_finished(job.json()["id"])
        assert finished["status"] == "succeeded", name
        profile = service.get(f"/jobs/{job.json()['id']}/result").json()
        assert profile["encoding"] in facts["encoding"], name
        assert profile["delimiter"] == facts["delimiter"], name
        assert profile["rows"] == facts["rows"], name
        columns = {column["name"]: column for column in profile["columns"]}
        assert list(columns) == facts["columns"], name
        for column, mean in facts["numeric_means"].items():
            assert columns[column]["mean"] == pytest.approx(mean, rel=1e-6), (name, column)
        for column, nulls in facts["nulls"].items():
            assert columns[column]["nulls"] == nulls, (name, column)
        if "problems" in facts:
            ragged = [p for p in profile["problems"] if p["kind"] != "blank_line"]
            assert len(ragged) == facts["problems"], name


def test_spectrum_csvs_match_their_json_twins(service: LiveService, shared_data: Path) -> None:
    folder = shared_data / "csv" / "spectrum"
    for path in sorted((folder / "csvs").glob("*.csv")):
        rows = json.loads((folder / "json" / f"{path.stem}.json").read_text())
        response = service.post("/jobs/csv-profile", files={"file": upload(path)})
        if not path.read_bytes().strip():
            assert_problem(response, 422, field="file")
            continue
        finished = service.wait_until_finished(response.json()["id"])
        assert finished["status"] == "succeeded", path.name
        profile = service.get(f"/jobs/{response.json()['id']}/result").json()
        assert profile["rows"] == len(rows), path.name
        if rows:
            assert [c["name"] for c in profile["columns"]] == list(rows[0]), path.name


def test_csv_text_as_json(service: LiveService) -> None:
    response = service.post(
        "/jobs/csv-profile", json={"csv": "a;b\n1,5;x\n2,5;y\n"}, headers={"Prefer": "wait=20"}
    )
    assert response.status_code == 200
    profile = service.get(f"/jobs/{response.json()['id']}/result").json()
    assert profile["delimiter"] == ";"
    assert profile["columns"][0]["mean"] == pytest.approx(2.0)


@pytest.fixture
def readme_module(tmp_path: Path) -> Iterator[str]:
    source = README.read_text()
    match = re.search(r"```python\n(# wordcount\.py.*?)```", source, re.DOTALL)
    assert match, "the README lost its job type example"
    (tmp_path / "wordcount.py").write_text(match.group(1))
    sys.path.insert(0, str(tmp_path))
    yield "wordcount"
    sys.path.remove(str(tmp_path))
    sys.modules.pop("wordcount", None)


def test_readme_job_type_example_works(
    start_service: Callable[..., LiveService], readme_module: str
) -> None:
    service = start_service({"handlers": {"modules": [readme_module]}})
    response = service.post(
        "/jobs/word-count", json={"text": "one two three"}, headers={"Prefer": "wait=20"}
    )
    assert response.status_code == 200
    assert service.get(f"/jobs/{response.json()['id']}/result").json() == {"words": 3}
    assert_problem(service.post("/jobs/word-count", json={}), 422, field="text")
