"""``sam2-fast serve``'s JSON API through FastAPI's TestClient: every endpoint, every refusal
(413, 415, 422, 404, 409, 401), the session store's bounds, path safety, and two users at
once. The masks must be those of ``SAM2ImagePredictor.predict`` on the same model."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'sam2-fast[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from cli_support import run_cli  # noqa: E402
from sam2_fast import SAM2ImagePredictor  # noqa: E402
from sam2_fast.ops.rle import rle_to_mask  # noqa: E402
from sam2_fast.serve import ServeLimits, create_app  # noqa: E402
from sam2_fast.serve.model_queue import ModelQueue  # noqa: E402
from sam2_fast.serve.sessions import Session, SessionNotFound, SessionStore  # noqa: E402
from serve_support import IMAGE_HW, VIDEO_HW, frames_zip, image, png, sse_events, tiny_model, write_mp4  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

LIMITS = ServeLimits(max_upload_mb=1, max_frames=8, max_sessions=4)
CLICK = (100.0, 120.0)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def client(model, tmp_path_factory):
    app = create_app(model, LIMITS, model_name="sam2.1-hiera-tiny", random_weights=True,
                     workdir=tmp_path_factory.mktemp("serve"))
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> bytes:
    return write_mp4(tmp_path_factory.mktemp("video") / "clip.mp4", 6).read_bytes()


def upload_image(client, array=None, name="scene.png"):
    r = client.post("/api/images", files={"file": (name, png(image() if array is None else array), "image/png")})
    assert r.status_code == 200, r.text
    return r.json()


def upload_video(client, data: bytes, name="clip.mp4"):
    r = client.post("/api/videos", files={"file": (name, data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    return r.json()


def reference(model, array, **prompt):
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(array)
    return predictor.predict(**prompt)


def decoded(answer) -> np.ndarray:
    return np.stack([rle_to_mask(m) for m in answer["masks"]])


# ------------------------------------------------------------------ server
def test_healthz_page_and_openapi(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "sam2.1-hiera-tiny" and health["random_weights"]
    assert health["image_size"] == 256 and health["auth"] is False and health["limits"]["max_frames"] == 8
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/api/images", "/api/images/{image_id}/segment", "/api/images/{image_id}/overlay.png",
                 "/api/images/{image_id}", "/api/videos", "/api/videos/{video_id}/prompts",
                 "/api/videos/{video_id}/propagate", "/api/videos/{video_id}/export",
                 "/api/videos/{video_id}/frames/{frame_idx}", "/api/videos/{video_id}/objects/{obj_id}",
                 "/api/videos/{video_id}", "/healthz"]:
        assert path in paths, path


def test_the_page_ships_in_the_installed_package():
    from importlib.resources import files

    static = files("sam2_fast.serve") / "static"
    for name in ["index.html", "app.js", "style.css"]:
        assert (static / name).is_file(), name


# ------------------------------------------------------------------ images
@pytest.mark.parametrize("prompt", [
    {"points": [CLICK], "labels": [1], "multimask": True},
    {"points": [CLICK, (250.0, 60.0)], "labels": [1, 0], "multimask": False},
    {"box": (60.0, 70.0, 200.0, 210.0), "multimask": False},
    {"points": [CLICK], "labels": [1], "box": (60.0, 70.0, 200.0, 210.0), "multimask": True},
])
def test_segment_gives_the_image_predictors_masks(client, model, prompt):
    info = upload_image(client)
    assert (info["height"], info["width"]) == IMAGE_HW
    body = {k: (list(map(list, v)) if k == "points" else v) for k, v in prompt.items()}
    answer = client.post(f"/api/images/{info['image_id']}/segment", json=body).json()
    masks, scores, _ = reference(
        model, image(),
        point_coords=np.array(prompt["points"], np.float32) if "points" in prompt else None,
        point_labels=np.array(prompt["labels"], np.int32) if "points" in prompt else None,
        box=np.array(prompt["box"], np.float32) if "box" in prompt else None,
        multimask_output=prompt["multimask"],
    )
    assert len(answer["masks"]) == (3 if prompt["multimask"] else 1)
    assert answer["masks"][0]["size"] == list(IMAGE_HW)
    np.testing.assert_array_equal(decoded(answer), masks > 0.5)
    np.testing.assert_allclose(answer["scores"], scores, rtol=1e-5, atol=1e-6)


def test_overlay_and_delete_image(client):
    from PIL import Image

    image_id = upload_image(client)["image_id"]
    plain = Image.open(io.BytesIO(client.get(f"/api/images/{image_id}/overlay.png").content))
    assert plain.size == IMAGE_HW[::-1]
    answer = client.post(f"/api/images/{image_id}/segment", json={"points": [CLICK], "labels": [1]}).json()
    r = client.get(answer["overlay_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(r.content)))
    assert drawn.shape == (*IMAGE_HW, 3) and not np.array_equal(drawn, np.asarray(plain))
    assert client.delete(f"/api/images/{image_id}").status_code == 204
    r = client.post(f"/api/images/{image_id}/segment", json={"points": [CLICK], "labels": [1]})
    assert r.status_code == 404 and "upload the image again" in r.json()["detail"]
    assert client.delete(f"/api/images/{image_id}").status_code == 404


@pytest.mark.parametrize("body,status,message", [
    ({"points": [[400, 20]], "labels": [1]}, 422, "points[0]: (400, 20) is outside the image, which is 320x240"),
    ({"points": [[-1, 20]], "labels": [1]}, 422, "outside the image"),
    ({"box": [10, 10, 330, 100]}, 422, "box: [10.0, 10.0, 330.0, 100.0] reaches outside the image"),
    ({"box": [50, 10, 20, 100]}, 422, "x0 < x1 and y0 < y1"),
    ({"points": [[10, 20]], "labels": []}, 422, "one label per point"),
    ({"points": [[10, 20]], "labels": [2]}, 422, "1 (object) or 0 (background)"),
    ({}, 422, "at least one point or a box"),
    ({"points": [[10]], "labels": [1]}, 422, ""),
])
def test_segment_refuses_bad_prompts(client, body, status, message):
    image_id = upload_image(client)["image_id"]
    r = client.post(f"/api/images/{image_id}/segment", json=body)
    assert r.status_code == status, r.text
    assert message in json.dumps(r.json()["detail"]).replace('\\"', '"'), r.json()


def test_unknown_image_is_404(client):
    for r in [client.post("/api/images/0123abcd/segment", json={"points": [CLICK], "labels": [1]}),
              client.get("/api/images/0123abcd/overlay.png"), client.delete("/api/images/0123abcd")]:
        assert r.status_code == 404 and "no image with id '0123abcd'" in r.json()["detail"]


def test_upload_refusals(client):
    big = b"\0" * (LIMITS.max_upload_bytes + 100 * 1024)
    r = client.post("/api/images", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "limit of 1 MB (--max-upload-mb)" in r.json()["detail"]
    r = client.post("/api/videos", files={"file": ("big.mp4", big, "video/mp4")})
    assert r.status_code == 413
    r = client.post("/api/images", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 415 and "file 'notes.txt' is not an image" in r.json()["detail"]
    r = client.post("/api/videos", files={"file": ("notes.mp4", b"hello" * 100, "video/mp4")})
    assert r.status_code == 415 and "file 'notes.mp4' is not a video" in r.json()["detail"]
    r = client.post("/api/videos", files={"file": ("empty.zip", _zip({"readme.txt": b"x"}), "application/zip")})
    assert r.status_code == 415 and "holds no frames" in r.json()["detail"]
    r = client.post("/api/images", data={"not_file": "x"})
    assert r.status_code == 422 and "file" in json.dumps(r.json()["detail"])


def test_an_upload_without_a_length_is_counted_as_it_arrives():
    from sam2_fast.serve.schemas import RequestError
    from sam2_fast.serve.uploads import copy_limited

    with pytest.raises(RequestError) as info:
        copy_limited(io.BytesIO(b"x" * 3000), io.BytesIO(), 2048, "the upload")
    assert info.value.status == 413
    assert copy_limited(io.BytesIO(b"x" * 2048), io.BytesIO(), 2048, "the upload") == 2048


# ------------------------------------------------------------------ videos
def test_video_prompt_track_export_delete(client, mp4):
    info = upload_video(client, mp4)
    assert info["num_frames"] == 6 and (info["height"], info["width"]) == VIDEO_HW and info["fps"] == 12
    vid = info["video_id"]
    frame = client.get(f"/api/videos/{vid}/frames/3")
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/jpeg"
    r = client.post(f"/api/videos/{vid}/prompts", json={"frame_idx": 2, "obj_id": 1, "points": [[60, 90]], "labels": [1]})
    assert r.status_code == 200, r.text
    assert r.json()["frame_idx"] == 2 and r.json()["obj_ids"] == [1] and r.json()["masks"][0]["size"] == list(VIDEO_HW)
    r = client.post(f"/api/videos/{vid}/prompts", json={"frame_idx": 4, "obj_id": 7, "box": [150, 100, 220, 170]})
    assert r.json()["obj_ids"] == [1, 7] and len(r.json()["masks"]) == 2

    r = client.post(f"/api/videos/{vid}/propagate")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    kinds = [e for e, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"frame"}, kinds
    progress = [d for e, d in events if e == "frame"]
    assert [d["done"] for d in progress] == list(range(1, len(progress) + 1))
    assert all(d["total"] == len(progress) for d in progress)
    assert {d["frame_idx"] for d in progress} == set(range(6)) and events[-1][1]["frames"] == 6
    assert all(d["obj_ids"] == [1, 7] for d in progress)

    doc = client.get(f"/api/videos/{vid}/export", params={"format": "rle"})
    assert doc.status_code == 200 and "attachment" in doc.headers["content-disposition"]
    doc = doc.json()
    assert doc["videos"][0]["length"] == 6 and doc["info"]["random_weights"] is True
    assert len(doc["annotations"]) == 12 and {a["obj_id"] for a in doc["annotations"]} == {1, 7}
    last = {(d["frame_idx"], oid): m for d in progress for oid, m in zip(d["obj_ids"], d["masks"])}
    for a in doc["annotations"]:  # the export holds the streamed masks (the latest of a frame)
        assert a["segmentation"] == last[(a["frame_index"], a["obj_id"])]

    zipped = zipfile.ZipFile(io.BytesIO(client.get(f"/api/videos/{vid}/export?format=png-zip").content))
    assert sorted(zipped.namelist())[:2] == ["masks/00000_obj1.png", "masks/00000_obj7.png"]
    assert len(zipped.namelist()) == 12
    video = client.get(f"/api/videos/{vid}/export?format=mp4")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4" and len(video.content) > 1000
    assert client.get(f"/api/videos/{vid}/export?format=gif").status_code == 422

    r = client.delete(f"/api/videos/{vid}/objects/7")
    assert r.status_code == 200 and r.json()["obj_ids"] == [1]
    doc = client.get(f"/api/videos/{vid}/export?format=rle").json()
    assert {a["obj_id"] for a in doc["annotations"]} == {1}
    assert client.delete(f"/api/videos/{vid}/objects/7").status_code == 404
    assert client.delete(f"/api/videos/{vid}").status_code == 204
    assert client.get(f"/api/videos/{vid}/frames/0").status_code == 404


def test_zip_of_frames(client):
    names = [f"frames/{i}.png" for i in (0, 1, 2, 10, 11)]  # numeric order: 10 after 2
    info = upload_video(client, frames_zip(5, names), "clip.zip")
    assert info["num_frames"] == 5 and info["fps"] == 24
    from PIL import Image

    from serve_support import frames

    got = np.asarray(Image.open(io.BytesIO(client.get(f"/api/videos/{info['video_id']}/frames/3").content)))
    assert np.abs(got.astype(int) - frames(5)[3]).mean() < 3  # JPEG of frame 3 (named 10.png)


def test_video_refusals(client, mp4):
    vid = upload_video(client, mp4)["video_id"]
    prompt = {"frame_idx": 0, "obj_id": 1, "points": [[60, 90]], "labels": [1]}
    r = client.post(f"/api/videos/{vid}/propagate")
    assert r.status_code == 409 and "has no prompts" in r.json()["detail"]
    r = client.get(f"/api/videos/{vid}/export?format=rle")
    assert r.status_code == 409 and "has not been tracked yet" in r.json()["detail"]
    r = client.post(f"/api/videos/{vid}/prompts", json=dict(prompt, frame_idx=6))
    assert r.status_code == 422 and "frame_idx: 6 is outside the video, which has 6 frames" in r.json()["detail"]
    r = client.post(f"/api/videos/{vid}/prompts", json=dict(prompt, points=[[300, 90]]))
    assert r.status_code == 422 and "outside frame 0, which is 256x192" in r.json()["detail"]
    r = client.post(f"/api/videos/{vid}/prompts", json=dict(prompt, obj_id=-1))
    assert r.status_code == 422
    assert client.get(f"/api/videos/{vid}/frames/6").status_code == 404
    assert client.delete(f"/api/videos/{vid}/objects/1").status_code == 404
    for r in [client.post("/api/videos/0123abcd/prompts", json=prompt), client.post("/api/videos/0123abcd/propagate"),
              client.get("/api/videos/0123abcd/export"), client.delete("/api/videos/0123abcd")]:
        assert r.status_code == 404 and "no video with id '0123abcd'" in r.json()["detail"]
    image_id = upload_image(client)["image_id"]  # an image id is not a video id
    assert client.post(f"/api/videos/{image_id}/propagate").status_code == 404


def test_at_most_max_frames(client, tmp_path):
    r = client.post("/api/videos", files={"file": ("long.zip", frames_zip(9), "application/zip")})
    assert r.status_code == 422 and "zip 'long.zip' has 9 frames; this server takes at most 8 (--max-frames)" in r.json()["detail"]
    long_mp4 = write_mp4(tmp_path / "long.mp4", 9).read_bytes()
    r = client.post("/api/videos", files={"file": ("long.mp4", long_mp4, "video/mp4")})
    assert r.status_code == 422 and "has 9 frames" in r.json()["detail"]


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_nothing_is_written_outside_the_servers_folder(model, tmp_path):
    work = tmp_path / "work"
    frame = png(np.zeros((*VIDEO_HW, 3), np.uint8))
    evil = _zip({"../../escaped0.png": frame, "/tmp/escaped1.png": frame, "a/../../escaped2.png": frame,
                 "__MACOSX/._3.png": b"junk"})
    with TestClient(create_app(model, LIMITS, workdir=work)) as client:
        info = upload_video(client, evil, "../../escaped.zip")
        assert info["num_frames"] == 3
        upload_image(client, name="../../escaped.png")
        files = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert files and all(work in p.parents for p in files), files
        assert not list(Path("/tmp").glob("escaped*"))
        names = sorted(p.name for p in (work / info["video_id"]).rglob("*") if p.is_file())
        assert names == ["00000.png", "00001.png", "00002.png"]
        client.delete(f"/api/videos/{info['video_id']}")
        assert not (work / info["video_id"]).exists()


# ------------------------------------------------------------------ auth
def test_token_auth(model):
    with TestClient(create_app(model, LIMITS, token="s3cret")) as client:
        assert client.get("/healthz").json()["auth"] is True  # open: the page asks it whether to show the token box
        r = client.post("/api/images", files={"file": ("a.png", png(image()), "image/png")})
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
        r = client.post("/api/images", files={"file": ("a.png", png(image()), "image/png")},
                        headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "wrong token" in r.json()["detail"]
        assert client.get("/api/videos/x/export", headers={"Authorization": "Basic s3cret"}).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        r = client.post("/api/images", files={"file": ("a.png", png(image()), "image/png")}, headers=ok)
        assert r.status_code == 200
        image_id = r.json()["image_id"]
        assert client.delete(f"/api/images/{image_id}").status_code == 401
        assert client.delete(f"/api/images/{image_id}", headers=ok).status_code == 204


# ------------------------------------------------------------------ users at once
def test_two_sessions_at_once_do_not_mix(client, model, mp4):
    """Two users click on their own images in parallel threads while a third tracks a video:
    every answer is the one its own image gives alone."""
    images = [image(), np.ascontiguousarray(image()[::-1, ::-1])]
    ids = [upload_image(client, a)["image_id"] for a in images]
    clicks = [[CLICK], [CLICK, (200.0, 50.0)]]
    expected = [reference(model, a, point_coords=np.array(c, np.float32), point_labels=np.ones(len(c), np.int32))
                for a, c in zip(images, clicks)]
    vid = upload_video(client, mp4)["video_id"]
    client.post(f"/api/videos/{vid}/prompts", json={"frame_idx": 0, "obj_id": 1, "points": [[60, 90]], "labels": [1]})
    start = threading.Barrier(3)

    def user(k: int):
        start.wait()
        return [client.post(f"/api/images/{ids[k]}/segment",
                            json={"points": [list(c) for c in clicks[k]], "labels": [1] * len(clicks[k])}).json()
                for _ in range(4)]

    def tracker():
        start.wait()
        return client.post(f"/api/videos/{vid}/propagate").text

    with ThreadPoolExecutor(3) as pool:
        track = pool.submit(tracker)
        answers = list(pool.map(user, [0, 1]))
    for k in range(2):
        for answer in answers[k]:
            np.testing.assert_array_equal(decoded(answer), expected[k][0] > 0.5)
            np.testing.assert_allclose(answer["scores"], expected[k][1], rtol=1e-5, atol=1e-6)
    assert sse_events(track.result())[-1][0] == "done"


# ------------------------------------------------------------------ sessions and the queue
class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _session(tmp_path: Path, name: str, nbytes: int = 0) -> Session:
    folder = tmp_path / name
    folder.mkdir()
    return Session(id=name, folder=folder, nbytes=nbytes)


def test_store_evicts_least_recently_used_and_expires(tmp_path):
    clock = _Clock()
    store = SessionStore(max_sessions=2, max_bytes=100, ttl_s=60, clock=clock)
    a, b, c = (_session(tmp_path, n) for n in "abc")
    store.add(a)
    store.add(b)
    store.get("a", "session")  # a is now the most recently used
    store.add(c)
    with pytest.raises(SessionNotFound):
        store.get("b", "session")
    assert not b.folder.exists() and a.folder.exists()
    store.resize(c, 90)
    d = _session(tmp_path, "d", 20)
    with a.lock:  # busy sessions are never evicted
        store.add(d)
        assert store.get("a", "session") is a
    with pytest.raises(SessionNotFound):
        store.get("c", "session")  # over the memory bound: c went, not the busy a
    clock.now = 61
    with pytest.raises(SessionNotFound) as info:
        store.get("a", "session")
    assert "expire after 60 s unused" in str(info.value)
    assert len(store) == 0 and not d.folder.exists()


def test_server_keeps_at_most_max_sessions(model):
    with TestClient(create_app(model, ServeLimits(max_sessions=2))) as client:
        ids = [upload_image(client)["image_id"] for _ in range(3)]
        assert client.get(f"/api/images/{ids[0]}/overlay.png").status_code == 404
        assert all(client.get(f"/api/images/{i}/overlay.png").status_code == 200 for i in ids[1:])
        assert client.get("/healthz").json()["sessions"] == 2


def test_queue_serves_in_order_and_a_long_job_lets_others_run_between_steps():
    queue = ModelQueue()
    order = []
    in_job = threading.Event()
    proceed = threading.Event()

    def long_job():
        with queue.turn():
            order.append("job step 1")
            in_job.set()
            proceed.wait()
            queue.pause()
            order.append("job step 2")

    def click():
        with queue.turn():
            order.append("click")

    job = threading.Thread(target=long_job)
    job.start()
    in_job.wait()
    clicker = threading.Thread(target=click)
    clicker.start()
    while queue.waiting == 0:
        pass
    proceed.set()
    job.join()
    clicker.join()
    assert order == ["job step 1", "click", "job step 2"]
    with queue.turn():
        queue.pause()  # nobody waiting: continues at once
    assert queue.waiting == 0


# ------------------------------------------------------------------ the command
def test_serve_command_warns_without_a_token_off_loopback(monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    base = ["serve", "--random-weights", "--image-size", "256", "--device", "cpu", "--port", "8123"]
    rc, _, stderr = run_cli([*base, "--host", "0.0.0.0"])
    assert rc == 0, stderr
    assert "RANDOM WEIGHTS" in stderr and "there is NO authentication" in stderr and "--token" in stderr
    assert calls[-1][1]["host"] == "0.0.0.0" and calls[-1][1]["port"] == 8123
    rc, _, stderr = run_cli([*base, "--host", "0.0.0.0", "--token", "s3cret"])
    assert rc == 0 and "NO authentication" not in stderr
    rc, _, stderr = run_cli(base)
    assert rc == 0 and "NO authentication" not in stderr and "http://127.0.0.1:8123/" in stderr


def test_serve_command_refuses_bad_limits():
    rc, _, stderr = run_cli(["serve", "--max-frames", "0"])
    assert rc == 2 and "--max-frames" in stderr
