"""resolve_checkpoint against a local Hub-like HTTP server, through the real huggingface_hub code.

The server speaks the part of the Hub protocol that ``hf_hub_download`` uses:
``HEAD/GET /{repo}/resolve/{revision}/{file}`` answers with ``X-Repo-Commit`` and ``ETag``;
checkpoint files (LFS on the Hub) are redirected, like on the Hub, to a CDN on another host
(``localhost`` instead of ``127.0.0.1``) with ``X-Linked-Etag`` / ``X-Linked-Size``; errors carry
``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest
import torch
from safetensors.torch import save_file

from sam2_fast.checkpoint import load_model_weights, read_state_dict
from sam2_fast.hub import CheckpointNotFoundError, resolve_checkpoint
from sam2_fast.modeling.config import PRESETS
from sam2_fast.modeling.sam2_base import SAM2Base
from sam2_fast.zoo.sam2 import to_transformers_state_dict

TINY = "sam2.1-hiera-tiny"
REPO = "facebook/sam2.1-hiera-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SERVER_LIFETIME_S = 120.0  # the request loop ends by itself after this, whatever happens


@dataclass
class FakeHub:
    """Repositories ``{repo_id: {filename: bytes}}`` served over HTTP, and a request log."""

    repos: Dict[str, Dict[str, bytes]] = field(default_factory=dict)
    requests: List[Tuple[str, str]] = field(default_factory=list)
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def blobs(self) -> Dict[str, bytes]:
        return {
            hashlib.sha256(data).hexdigest(): data
            for files in self.repos.values()
            for data in files.values()
        }


def _handler(hub: FakeHub) -> type:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # seconds a connection may stay idle

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _send(self, status: int, headers: Dict[str, str], data: bytes, body: bool) -> None:
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(name, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _error(self, code: str, body: bool, commit: bool = False) -> None:
            headers = {"X-Error-Code": code, "Content-Type": "application/json"}
            if commit:
                headers["X-Repo-Commit"] = COMMIT
            self._send(404, headers, b'{"error": "%s"}' % code.encode(), body)

        def _answer(self, body: bool) -> None:
            hub.requests.append((self.command, self.path))
            if self.path.startswith("/cdn/"):
                data = hub.blobs().get(self.path[len("/cdn/") :])
                if data is None:
                    return self._send(404, {}, b"", body)
                return self._send(200, {"Content-Type": "application/octet-stream"}, data, body)
            parts = self.path.lstrip("/").split("/", 4)  # org, name, "resolve", revision, file
            if len(parts) != 5 or parts[2] != "resolve":
                return self._send(404, {}, b"", body)
            repo_id, revision, filename = f"{parts[0]}/{parts[1]}", parts[3], parts[4]
            if repo_id not in hub.repos:
                return self._error("RepoNotFound", body)
            if revision not in ("main", COMMIT):
                return self._error("RevisionNotFound", body)
            data = hub.repos[repo_id].get(filename)
            if data is None:
                return self._error("EntryNotFound", body, commit=True)
            sha = hashlib.sha256(data).hexdigest()
            self._send(
                302,
                {
                    "Location": f"http://localhost:{hub.port}/cdn/{sha}",
                    "X-Repo-Commit": COMMIT,
                    "ETag": '"%s"' % hashlib.sha1(sha.encode()).hexdigest(),
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(data)),
                },
                b"",
                body,
            )

    return Handler


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running fake Hub; HF_ENDPOINT points at it and the HF cache is an empty tmp folder."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    server.timeout = 0.05  # handle_request() returns this often when idle
    hub.port = server.server_address[1]
    stop = threading.Event()
    deadline = time.monotonic() + SERVER_LIFETIME_S

    def serve() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            server.handle_request()

    thread = threading.Thread(target=serve, name="fake-hub", daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    try:
        yield hub
    finally:
        stop.set()
        thread.join(timeout=5)
        server.server_close()
        assert not thread.is_alive(), "the fake Hub's request loop did not stop"


@pytest.fixture(scope="session")
def tiny_pt_bytes(tiny_pt_file: Path) -> bytes:
    return tiny_pt_file.read_bytes()


@pytest.fixture(scope="session")
def tiny_safetensors_bytes(tiny_safetensors_file: Path) -> bytes:
    return tiny_safetensors_file.read_bytes()


def _load(path: Path, expected: dict) -> None:
    with torch.device("meta"):
        model = SAM2Base.from_config(PRESETS[TINY])
    load_model_weights(model, read_state_dict(path), assign=True)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def _cdn_downloads(hub: FakeHub) -> List[str]:
    return [path for method, path in hub.requests if method == "GET" and path.startswith("/cdn/")]


def test_downloads_the_official_pt_into_the_hf_cache(
    fake_hub: FakeHub, tmp_path: Path, tiny_pt_bytes: bytes, tiny_state_dict: dict
) -> None:
    fake_hub.repos[REPO] = {"sam2.1_hiera_tiny.pt": tiny_pt_bytes}
    path, info = resolve_checkpoint("configs/sam2.1/sam2.1_hiera_t.yaml", progress=False)
    assert info is not None and info.name == TINY
    assert path.name == "sam2.1_hiera_tiny.pt" and path.read_bytes() == tiny_pt_bytes
    assert path.is_relative_to(
        tmp_path / "hf_home" / "hub" / "models--facebook--sam2.1-hiera-tiny" / "snapshots"
    )
    heads = [p for m, p in fake_hub.requests if m == "HEAD"]
    assert heads[:2] == [  # our safetensors copy first (absent), then the official file
        "/facebook/sam2.1-hiera-tiny/resolve/main/sam2.1_hiera_tiny.safetensors",
        "/facebook/sam2.1-hiera-tiny/resolve/main/sam2.1_hiera_tiny.pt",
    ]
    assert len(_cdn_downloads(fake_hub)) == 1
    _load(path, tiny_state_dict)


def test_safetensors_is_preferred_when_the_repo_has_both(
    fake_hub: FakeHub, tiny_pt_bytes: bytes, tiny_safetensors_bytes: bytes, tiny_state_dict: dict
) -> None:
    fake_hub.repos[REPO] = {
        "sam2.1_hiera_tiny.pt": tiny_pt_bytes,
        "sam2.1_hiera_tiny.safetensors": tiny_safetensors_bytes,
    }
    path, _ = resolve_checkpoint(REPO, progress=False)
    assert path.name == "sam2.1_hiera_tiny.safetensors"
    assert not any(p.endswith(".pt") for _, p in fake_hub.requests)
    assert len(_cdn_downloads(fake_hub)) == 1
    _load(path, tiny_state_dict)


def test_transformers_model_safetensors_is_the_fallback_and_is_converted(
    fake_hub: FakeHub, tmp_path: Path, tiny_pt_bytes: bytes, tiny_state_dict: dict
) -> None:
    hf_file = tmp_path / "model.safetensors"
    save_file(to_transformers_state_dict(tiny_state_dict), str(hf_file))
    fake_hub.repos[REPO] = {"model.safetensors": hf_file.read_bytes(), "config.json": b"{}"}
    path, _ = resolve_checkpoint(TINY, progress=False)
    assert path.name == "model.safetensors"
    _load(path, tiny_state_dict)


def test_the_official_file_is_taken_before_the_transformers_weights(
    fake_hub: FakeHub, tmp_path: Path, tiny_pt_bytes: bytes
) -> None:
    fake_hub.repos[REPO] = {"sam2.1_hiera_tiny.pt": tiny_pt_bytes, "model.safetensors": b"unused"}
    path, _ = resolve_checkpoint(TINY, progress=False)
    assert path.name == "sam2.1_hiera_tiny.pt"
    assert not any(p.endswith("model.safetensors") for _, p in fake_hub.requests)


def test_second_call_is_served_from_the_cache_without_the_server(
    fake_hub: FakeHub, tiny_pt_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.repos[REPO] = {"sam2.1_hiera_tiny.pt": tiny_pt_bytes}
    first, _ = resolve_checkpoint(TINY, progress=False)
    fake_hub.repos.clear()
    fake_hub.requests.clear()
    again, info = resolve_checkpoint(TINY, progress=False)
    assert again == first and info.name == TINY and fake_hub.requests == []
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    assert resolve_checkpoint(TINY)[0] == first
    assert resolve_checkpoint(TINY, revision=COMMIT, local_files_only=True)[0] == first


def test_offline_with_an_empty_cache_names_every_place_tried(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError) as err:
        resolve_checkpoint(TINY)
    assert isinstance(err.value, FileNotFoundError)
    message = str(err.value)
    assert f"local path {tmp_path / TINY}: does not exist" in message
    cache = tmp_path / "hf_home" / "hub" / "models--facebook--sam2.1-hiera-tiny"
    assert (
        f"Hugging Face cache {cache}: none of "
        "sam2.1_hiera_tiny.safetensors, sam2.1_hiera_tiny.pt, model.safetensors" in message
    )
    assert "Hugging Face Hub: not contacted (HF_HUB_OFFLINE is set)" in message
    assert (
        "download facebook/sam2.1-hiera-tiny sam2.1_hiera_tiny.pt` (it goes to the cache above)"
        in message
    )
    assert "unset HF_HUB_OFFLINE" in message and "pass the path of a local" in message
    assert fake_hub.requests == []


def test_missing_repo_gives_a_clear_error(fake_hub: FakeHub) -> None:
    with pytest.raises(CheckpointNotFoundError) as err:
        resolve_checkpoint("sam2-hiera-large", progress=False)
    message = str(err.value)
    url = f"{fake_hub.endpoint}/facebook/sam2-hiera-large/resolve/main/sam2_hiera_large.safetensors"
    assert f"Hugging Face Hub {url}: repository not found (HTTP 404)" in message
    assert "download facebook/sam2-hiera-large sam2_hiera_large.pt`" in message
    assert len(fake_hub.requests) == 1  # a missing repository ends the search


def test_repo_without_any_known_file_lists_each_one(fake_hub: FakeHub) -> None:
    fake_hub.repos[REPO] = {"README.md": b"# no weights here"}
    with pytest.raises(CheckpointNotFoundError) as err:
        resolve_checkpoint(TINY, progress=False)
    assert str(err.value).count("the repository has no such file") == 3


def test_unreachable_hub_fails_fast_with_the_network_error(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(CheckpointNotFoundError) as err:
        resolve_checkpoint(TINY, progress=False)
    assert time.monotonic() - start < 5  # no retries with back-off
    assert "http://127.0.0.1:9/facebook/sam2.1-hiera-tiny/resolve/main/" in str(err.value)
    assert "ConnectError" in str(err.value) and "check the network connection" in str(err.value)


def test_existing_local_path_is_used_as_is(tiny_pt_file: Path) -> None:
    assert resolve_checkpoint(tiny_pt_file) == (tiny_pt_file, None)


def test_unknown_name_is_not_found_with_suggestions(fake_hub: FakeHub) -> None:
    with pytest.raises(CheckpointNotFoundError, match="Did you mean 'sam2.1-hiera-tiny'"):
        resolve_checkpoint("sam2.1-hiera-tiyn")
    with pytest.raises(CheckpointNotFoundError, match="not a model name either"):
        resolve_checkpoint("./checkpoints/sam2.1_hiera_tiny.pt")
    assert fake_hub.requests == []


def test_predictors_from_pretrained_load_a_checkpoint_through_the_factory(
    tiny_pt_file: Path, tiny_state_dict: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``from_pretrained`` of the image and video predictors (and a subclass of the video
    predictor) reads the weights, recognises the variant, and builds the caller's class."""
    from sam2_fast import SAM2ImagePredictor, SAM2VideoPredictor
    from sam2_fast.modeling.sam2_base import SAM2Base

    image = SAM2ImagePredictor.from_pretrained(str(tiny_pt_file), device="cpu", mask_threshold=0.5)
    assert type(image.model) is SAM2Base and image.mask_threshold == 0.5
    _load_matches(image.model, tiny_state_dict)

    class MyTracker(SAM2VideoPredictor):
        pass

    compiled = []
    monkeypatch.setattr(SAM2Base, "compile_components", lambda self, mode=None: compiled.append(self) or [])
    video = MyTracker.from_pretrained(str(tiny_pt_file), device="cpu", vos_optimized=True)
    assert type(video) is MyTracker and compiled == [video]
    assert video.fill_hole_area == 8  # the official video builder's post-processing
    _load_matches(video, tiny_state_dict)
    assert type(SAM2VideoPredictor.from_pretrained(str(tiny_pt_file), device="cpu")) is SAM2VideoPredictor


def _load_matches(model, state_dict: dict) -> None:
    own = model.state_dict()
    for key in ("image_encoder.trunk.patch_embed.proj.weight", "sam_mask_decoder.iou_token.weight"):
        assert torch.equal(own[key], state_dict[key]), key


def test_a_hub_repo_outside_the_zoo_is_read_as_a_transformers_folder(
    fake_hub: FakeHub, tmp_path: Path, tiny_state_dict: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``from_pretrained("org/name")`` of a repository that only has transformers' files:
    config.json and model.safetensors land in one snapshot folder, which the factory reads
    with the config it holds; a second call needs no server."""
    from sam2_fast import SAM2ImagePredictor
    from sam2_fast.transformers_format import write_transformers_folder
    from sam2_fast.zoo import get_family

    config = PRESETS[TINY].replace(image_size=512)
    folder = write_transformers_folder(tmp_path / "hf", get_family(config), config, tiny_state_dict, video=True)
    fake_hub.repos["acme/sam2-med"] = {p.name: p.read_bytes() for p in folder.iterdir()}
    path, info = resolve_checkpoint("acme/sam2-med", progress=False)
    assert info is None and sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    predictor = SAM2ImagePredictor.from_pretrained("acme/sam2-med", device="cpu")
    assert predictor.model.image_size == 512
    _load_matches(predictor.model, tiny_state_dict)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_checkpoint("acme/sam2-med")[0] == path
    with pytest.raises(CheckpointNotFoundError) as err:
        resolve_checkpoint("acme/sam2-other")
    assert "not in the zoo; read as a transformers-format Hub repository" in str(err.value)
    assert "Hugging Face Hub: not contacted" in str(err.value)
