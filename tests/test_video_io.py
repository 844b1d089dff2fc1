"""Video input (``sam2_fast.predictors.video_io``): folders of frames, video files (PyAV),
frames in memory; bad input raises one clear error naming ``video_path``; the lazy frame
store keeps a bounded cache and reads ahead in the background."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from sam2_fast.predictors.video_io import (
    FolderFrames,
    FrameSource,
    LazyVideoFrames,
    VideoFileFrames,
    VideoReadError,
    open_video,
    preprocess_frame,
)
from sam2_fast.sample import sample_video_frame

T, H, W = 10, 48, 64


def originals(indices=range(T)) -> list:
    return [sample_video_frame(i, H, W) for i in indices]


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_frames_close(decoded: list, expected: list, max_mad: float):
    """Each decoded frame is within ``max_mad`` of its original and nearer to it than to any
    other original (the right frame, in the right order)."""
    for i, frame in enumerate(decoded):
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
        diffs = [mean_abs_diff(frame, e) for e in expected]
        assert diffs[i] <= max_mad, f"frame {i}: mean abs diff {diffs[i]:.2f}"
        assert int(np.argmin(diffs)) == i, f"frame {i} looks like original {int(np.argmin(diffs))}"


# ------------------------------------------------------------------ folders of frames


@pytest.mark.parametrize("ext,max_mad", [(".png", 0.0), (".jpg", 4.0)])
def test_folder_frames_are_ordered_by_their_numbers(tmp_path, ext, max_mad):
    numbers = [10, 2, 1, 30]  # unpadded: 10 sorts before 2 as text
    for n in numbers:
        Image.fromarray(sample_video_frame(n, H, W)).save(tmp_path / f"{n}{ext}", quality=95)
    video = open_video(tmp_path)
    assert isinstance(video, FolderFrames)
    assert (len(video), video.height, video.width) == (4, H, W)
    assert [p.name for p in video.paths] == [f"{n}{ext}" for n in sorted(numbers)]
    assert_frames_close([video.read(i) for i in range(4)], originals(sorted(numbers)), max_mad)


def test_empty_folder_raises(tmp_path):
    (tmp_path / "notes.txt").write_text("no frames here")
    with pytest.raises(VideoReadError, match=r"video_path: no frames found in folder .*\.jpg, \.jpeg, \.png"):
        open_video(tmp_path)


def test_folder_with_unreadable_jpg_raises_naming_the_file(tmp_path):
    Image.fromarray(sample_video_frame(0, H, W)).save(tmp_path / "00000.jpg")
    (tmp_path / "00001.jpg").write_text("not a JPEG")
    with pytest.raises(VideoReadError, match=r"video_path: frame '.*00001\.jpg' is not a readable image"):
        open_video(tmp_path)


def test_folder_with_mixed_frame_sizes_raises(tmp_path):
    Image.fromarray(sample_video_frame(0, H, W)).save(tmp_path / "00000.png")
    Image.fromarray(sample_video_frame(1, H, W + 2)).save(tmp_path / "00001.png")
    with pytest.raises(
        VideoReadError, match=rf"video_path: frames in .* have different sizes: {W}x{H} \(00000\.png\), {W + 2}x{H}"
    ):
        open_video(tmp_path)


# ------------------------------------------------------------------ video files

CODECS = {
    # MPEG-4 part 2 with B-frames and a key frame every 3 frames: random access must seek by
    # decode timestamps (in mp4 a B-frame's key frame is stored before it)
    "mpeg4_bframes": ("mpeg4", {"g": "3", "bf": "2"}, 6.0),
    "h264": ("libx264", {"crf": "10", "g": "4"}, 4.0),
}


@pytest.fixture(scope="module", params=list(CODECS))
def video_file(request, tmp_path_factory):
    """A 10-frame 64x48 mp4 of the generated video, and the decoded frames' error bound."""
    av = pytest.importorskip("av")
    codec, options, max_mad = CODECS[request.param]
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV was built without {codec}")
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10, options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.bit_rate = 4_000_000
        for frame in originals():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path, max_mad


def test_video_file_frames_match_the_originals(video_file):
    path, max_mad = video_file
    video = open_video(path)
    assert isinstance(video, VideoFileFrames)
    assert (len(video), video.height, video.width) == (T, H, W)
    assert_frames_close([video.read(i) for i in range(T)], originals(), max_mad)
    video.close()


def test_video_file_random_access_gives_the_sequential_frames(video_file):
    path, _ = video_file
    sequential = open_video(path)
    expected = [sequential.read(i) for i in range(T)]
    video = open_video(path)
    for i in (7, 2, 3, 9, 0, 0, 5, 4, 8, 1):
        np.testing.assert_array_equal(video.read(i), expected[i], err_msg=f"frame {i}")
    sequential.close()
    video.close()


def test_corrupt_video_file_raises(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoReadError, match=r"video_path: '.*clip\.mp4' is not a readable video"):
        open_video(path)


def test_nonexistent_path_raises(tmp_path):
    with pytest.raises(VideoReadError, match=r"video_path: '.*missing\.mp4' does not exist"):
        open_video(tmp_path / "missing.mp4")


# ------------------------------------------------------------------ frames in memory


def test_array_of_frames_is_read_back_unchanged():
    frames = np.stack(originals())
    video = open_video(frames)
    assert (len(video), video.height, video.width) == (T, H, W)
    for i in (3, 0, 9):
        np.testing.assert_array_equal(video.read(i), frames[i])


@pytest.mark.parametrize("kind", ["list_of_arrays", "list_of_pil_images", "generator"])
def test_sequences_and_iterables_of_frames_are_read_back_unchanged(kind):
    frames = originals()
    if kind == "list_of_arrays":
        video_path = list(frames)
    elif kind == "list_of_pil_images":
        video_path = [Image.fromarray(f) for f in frames]
    else:
        video_path = (f for f in frames)
    video = open_video(video_path)
    assert (len(video), video.height, video.width) == (T, H, W)
    for i in (3, 0, 9):
        np.testing.assert_array_equal(video.read(i), frames[i])


BAD_IN_MEMORY = [
    ("empty_list", [], VideoReadError, "video_path: the sequence of frames is empty"),
    ("empty_generator", (f for f in []), VideoReadError, "video_path: the sequence of frames is empty"),
    ("array_without_channels", np.zeros((T, H, W), np.uint8), VideoReadError,
     rf"video_path: an array of frames must be \[T, H, W, 3\] uint8, got shape \({T}, {H}, {W}\)"),
    ("array_rgba", np.zeros((T, H, W, 4), np.uint8), ValueError, r"video_path\[0\]: expected shape \[H, W, 3\]"),
    ("array_float", np.zeros((T, H, W, 3), np.float32), TypeError, r"video_path\[0\]: expected dtype uint8"),
    ("list_of_mixed_sizes", [np.zeros((H, W, 3), np.uint8), np.zeros((H - 8, W, 3), np.uint8)], VideoReadError,
     rf"video_path\[1\]: frame is {W}x{H - 8} but frame 0 is {W}x{H}"),
    ("list_with_a_non_frame", [np.zeros((H, W, 3), np.uint8), "frame.jpg"], TypeError,
     r"video_path\[1\]: expected a numpy array \[H, W, 3\] of uint8"),
    ("a_number", 3, VideoReadError, "video_path: expected a folder of JPEG/PNG frames, .* got int"),
]


@pytest.mark.parametrize("name,video_path,exc,match", BAD_IN_MEMORY, ids=[b[0] for b in BAD_IN_MEMORY])
def test_bad_frames_in_memory_raise_when_opened(name, video_path, exc, match):
    with pytest.raises(exc, match=match):
        open_video(video_path)


@pytest.mark.parametrize(
    "index,exc,match",
    [(T, IndexError, rf"frame_idx: {T} is out of range for a video of {T} frames"),
     (-1, IndexError, "frame_idx: -1 is out of range"),
     (1.0, TypeError, "frame_idx: expected an int, got float")],
    ids=["past_the_end", "negative", "float"],
)
def test_reading_a_bad_frame_index_raises(index, exc, match):
    with pytest.raises(exc, match=match):
        open_video(np.stack(originals())).read(index)


# ------------------------------------------------------------------ lazy model inputs

SIZE = 32  # model input size: small, the values do not matter here


class CountingFrames(FrameSource):
    """Generated frames that record each read (index, thread name)."""

    def __init__(self) -> None:
        self.num_frames, self.height, self.width = T, H, W
        self.reads: list = []

    def _read(self, index: int) -> np.ndarray:
        self.reads.append((index, threading.current_thread().name))
        return sample_video_frame(index, H, W)


def test_lazy_frames_hold_at_most_cache_size_inputs():
    source = CountingFrames()
    images = LazyVideoFrames(source, SIZE, torch.device("cpu"), cache_size=2)
    assert len(images) == T
    for i in (0, 1, 0, 2, 3, 0, 5, 4, 5):
        torch.testing.assert_close(images[i], preprocess_frame(sample_video_frame(i, H, W), SIZE))
        assert len(images._cache) <= 2
    # least recently used first out: 0 stays after 2 (it was used after 1), 5 is a hit
    assert [i for i, _ in source.reads] == [0, 1, 2, 3, 0, 5, 4]


def test_prefetch_reads_the_next_frames_in_the_background():
    source = CountingFrames()
    images = LazyVideoFrames(source, SIZE, torch.device("cpu"), cache_size=2, prefetch=2)
    images.prefetch([T, -1])  # out of range: ignored
    images.prefetch([1, 2, 3])  # at most `prefetch` frames ahead
    for i in (1, 2):
        torch.testing.assert_close(images[i], preprocess_frame(sample_video_frame(i, H, W), SIZE))
    images.close()
    assert sorted(i for i, _ in source.reads) == [1, 2]
    assert all(thread.startswith("sam2-fast-frames") for _, thread in source.reads)


def test_prefetch_is_a_no_op_when_disabled():
    source = CountingFrames()
    images = LazyVideoFrames(source, SIZE, torch.device("cpu"), cache_size=2)
    images.prefetch([1, 2])
    images[1]
    assert source.reads == [(1, threading.current_thread().name)]


def test_a_frame_source_is_used_as_is():
    source = CountingFrames()
    assert open_video(source) is source
