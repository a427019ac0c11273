"""Video files (`.avi`, `.mp4`) through PyAV, and animated GIF (write only) through imageio.

- ``.avi`` is written with the lossless FFV1 codec (grey ``gray`` pixels for cines, ``bgr0`` for
  RGB overlays), so cines round-trip bit for bit.
- ``.mp4`` is written as H.264 (libx264, ``yuv420p``, CRF 12): small and playable everywhere, but
  lossy; frames come back close, not equal. yuv420p needs even sizes, so an odd height/width is
  padded by one black row/column at the bottom/right.
- Videos have no pixel spacing. We store the exact IJK-to-RAS matrix and frame times as JSON in
  the container's ``comment`` tag (AVI ``ICMT``, MP4 ``©cmt``); files from elsewhere (e.g.
  EchoNet-Dynamic 112x112 RGB AVIs) read with 1 mm pixels (``metadata['spacing_known']`` False)
  and times ``i / fps`` from the stream's average frame rate.
- Colour videos become grey by BT.601 luma (`echosam.cine.rgb_to_grey`).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..cine import Cine
from ..errors import CineError
from .limits import check_bytes
from .common import RawCine, geometry_record, parse_geometry_record, to_uint8

CONTAINERS = {".avi": ("avi", "ffv1"), ".mp4": ("mp4", "libx264")}


def _rate(fps: float) -> Fraction:
    if not (np.isfinite(fps) and fps > 0):
        raise CineError(f"Frame rate must be positive to write a video, got {fps}.")
    return Fraction(float(fps)).limit_denominator(1001)


def write_video(frames: np.ndarray, tmp: Path, fps: float, suffix: str, comment: str = "") -> None:
    """Encode (T, H, W) grey or (T, H, W, 3) RGB uint8 frames to ``tmp`` as ``suffix`` (.avi/.mp4)."""
    import av

    fmt, codec = CONTAINERS[suffix]
    a = to_uint8(np.asarray(frames))
    rgb = a.ndim == 4
    if codec == "libx264" and (a.shape[1] % 2 or a.shape[2] % 2):
        pad = [(0, 0), (0, a.shape[1] % 2), (0, a.shape[2] % 2)] + ([(0, 0)] if rgb else [])
        a = np.pad(a, pad)
    container = av.open(str(tmp), mode="w", format=fmt)
    try:
        if comment:
            container.metadata["comment"] = comment
        stream = container.add_stream(codec, rate=_rate(fps))
        stream.height, stream.width = int(a.shape[1]), int(a.shape[2])
        if codec == "ffv1":
            stream.pix_fmt = "bgr0" if rgb else "gray"
        else:
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "12", "preset": "veryfast"}
        for frame in a:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24" if rgb else "gray")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()


def write_video_cine(cine: Cine, tmp: Path) -> None:
    """Write ``cine`` as .avi/.mp4 (chosen by the suffix of ``tmp``) with its geometry in the comment tag."""
    suffix = tmp.suffix.lower()
    write_video(cine.frames, tmp, cine.fps, suffix,
                geometry_record(cine, height=cine.shape[1], width=cine.shape[2]))


def read_video(path: Path, slices_as_frames: bool = False) -> RawCine:
    """Decode every frame of a video into (T, H, W) grey or (T, H, W, 3) RGB uint8 frames."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise CineError(f"{path.name} has no video stream: it may be truncated (an MP4 whose index is "
                            "missing) or hold audio only; choose a complete video of the echo cine.")
        stream = container.streams.video[0]
        grey = (stream.codec_context.pix_fmt or "").startswith("gray")
        expected = int(stream.frames or 0)
        per_frame = int(stream.codec_context.width or 0) * int(stream.codec_context.height or 0) * (1 if grey else 3)
        check_bytes(per_frame * expected, path.name)
        frames, total = [], 0
        for f in container.decode(stream):        # a stream may hold more frames than it declares
            frames.append(f.to_ndarray(format="gray" if grey else "rgb24"))
            total += frames[-1].nbytes
            check_bytes(total, path.name, "decoded frames")
        rate = stream.average_rate or stream.guessed_rate
        comment = container.metadata.get("comment", "")
    if not frames:
        raise CineError(f"{path.name} holds no decodable video frames; the file may be truncated.")
    if expected and len(frames) < expected:
        raise CineError(f"{path.name} is truncated: {len(frames)} of {expected} frames could be decoded.")
    arr = np.stack(frames)
    m, times, rec = parse_geometry_record(comment, arr.shape[0])
    if rec and "height" in rec and "width" in rec:          # remove the padding added for yuv420p
        arr = arr[:, :rec["height"], :rec["width"]]
    if times is None and rate:
        times = np.arange(arr.shape[0]) / float(rate)
    meta = {"format": "video", "spacing_known": m is not None}
    return RawCine(np.ascontiguousarray(arr), m, times, meta)


def write_gif(frames_rgb: np.ndarray, tmp: Path, fps: float) -> None:
    """Write (T, H, W, 3) uint8 frames as a looping GIF (frame duration rounded to 10 ms by GIF)."""
    import imageio.v3 as iio

    iio.imwrite(str(tmp), np.asarray(frames_rgb), extension=".gif", plugin="pillow",
                duration=1000.0 / float(_rate(fps)), loop=0)
