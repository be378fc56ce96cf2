"""`lunarfleet evaluate --video out.mp4`: episodes of tab 1's canvas as an MP4 at the real frame rate.

The embedded page draws its simulation 0 after every step and reset while recording
(`window.lunarfleet.startRecording()`, webapp/bridge.js), in the same handler that answers the
step, so there is exactly one frame per simulated step, whatever the speed of the machine. A step
is timescale/60 simulated seconds, so the video runs at 60/timescale frames a second (30 at the
default timescale 2): one simulated second is one second of video. Frames are taken from the page
every DRAIN_EVERY_STEPS steps of the evaluation (`on_step`) and written with imageio-ffmpeg
(libx264). Recording stops when the page's frames show that `episodes` episodes have ended.
"""

from __future__ import annotations

import base64
import contextlib
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.fleet import Fleet

DRAIN_EVERY_STEPS = 30  # vec steps between taking the page's frames (a second of video at 30 fps)
PROGRESS_EVERY_S = 3.0
JPEG_QUALITY = 0.9  # frames cross the page boundary as JPEG; the video is re-encoded anyway


class VideoUnavailable(RuntimeError):
    """imageio-ffmpeg is missing: said before any tab opens."""


def check_video_support() -> None:
    try:
        import imageio_ffmpeg  # noqa: F401
        from PIL import Image  # noqa: F401
    except ImportError as exc:
        raise VideoUnavailable(
            f"--video needs imageio-ffmpeg and Pillow ({exc.name} is missing): pip install imageio-ffmpeg pillow"
        ) from None


class CanvasRecorder:
    """Tab 1's canvas, simulation 0, from `start()` until `episodes` episodes have ended there."""

    def __init__(self, fleet: Fleet, path: Path, timescale: float, episodes: int, say: Callable[[str], None]) -> None:
        self.fleet, self.path, self.episodes, self.say = fleet, path, episodes, say
        self.fps = 60.0 / timescale
        self.frames = 0
        self.episodes_done = 0
        self._writer: Any = None
        self._size: tuple[int, int] | None = None
        self._steps = 0
        self._recording = False
        self._last_progress = 0.0

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def start(self) -> None:
        self._page(f"window.lunarfleet.startRecording({JPEG_QUALITY})")
        self._recording = True
        self._last_progress = time.monotonic()
        self.say(f"[Video] Recording tab 1 into {self.path}: {self.episodes} episode(s) at {self.fps:g} frames/s "
                 "(one frame per step: one simulated second is one second of video)")

    def on_step(self, dones: np.ndarray, infos: list[dict[str, Any]]) -> None:
        """After each vec step of the evaluation: take the page's frames now and then."""
        if not self._recording:
            return
        self._steps += 1
        if self._steps % DRAIN_EVERY_STEPS == 0 or bool(dones[0]):
            try:
                self._drain()
            except Exception as exc:  # tab 1 is being replaced: the evaluation goes on, frames are lost
                self.say(f"[Video] ! could not take tab 1's frames ({type(exc).__name__}: {exc}); trying again")
        if self._recording and self.frames and time.monotonic() - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = time.monotonic()
            self.say(f"[Video] {self.seconds:,.1f} s recorded ({self.frames:,} frames), "
                     f"episode {min(self.episodes_done + 1, self.episodes)} of {self.episodes}")

    def _drain(self) -> None:
        on, frames = self._page("[window.lunarfleet.recording.on, window.lunarfleet.takeFrames()]")
        self._take(frames)
        if self._recording and not on:
            # Tab 1 was replaced (a crash, a hang): its new page records from here on.
            self._page(f"window.lunarfleet.startRecording({JPEG_QUALITY})")
            self.say("[Video] ! tab 1 was replaced while recording; recording goes on on its new page")

    def stop(self) -> None:
        """Take the last frames and stop recording (the evaluation of the policy is over)."""
        if self._recording:
            try:
                self._take(self._page("window.lunarfleet.stopRecording()"))
            except Exception as exc:  # the tab is gone: keep what was recorded
                self.say(f"[Video] ! could not take the last frames of tab 1: {exc}")
            self._stop()

    def finish(self) -> dict[str, Any]:
        """Stop, close the file; what was recorded (for the JSON)."""
        self.stop()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        result = {"path": str(self.path), "frames": self.frames, "seconds": round(self.seconds, 2), "fps": self.fps,
                  "episodes": self.episodes_done}
        if not self.frames:
            self.say("[Video] ! no frame was recorded; no video written")
            return result
        short = "" if self.episodes_done >= self.episodes else (
            f" (the evaluation ended before tab 1 finished {self.episodes}: raise --episodes)")
        self.say(f"[Video] Wrote {self.path}: {self.frames:,} frames, {self.seconds:,.1f} s at {self.fps:g} frames/s, "
                 f"{self.episodes_done} episode(s){short}")
        return result

    # ---- frames ----------------------------------------------------------------------------
    def _take(self, frames: list[list[Any]]) -> None:
        for data_url, ended in frames:
            if not self._recording:
                return
            self._write(_decode(data_url))
            if ended:
                self.episodes_done += 1
                if self.episodes_done >= self.episodes:
                    self._stop()

    def _write(self, rgb: np.ndarray) -> None:
        if self._writer is None:
            import imageio_ffmpeg

            self._size = (rgb.shape[1], rgb.shape[0])
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = imageio_ffmpeg.write_frames(
                str(self.path), self._size, fps=self.fps, codec="libx264", quality=7, macro_block_size=2
            )
            self._writer.send(None)
        if (rgb.shape[1], rgb.shape[0]) != self._size:
            return  # a page of another size (cannot happen with the embedded page): skipped
        self._writer.send(np.ascontiguousarray(rgb))
        self.frames += 1

    def _stop(self) -> None:
        if self._recording:
            self._recording = False
            with contextlib.suppress(Exception):  # the tab is gone: nothing to stop
                self._page("window.lunarfleet.stopRecording()")

    def _page(self, script: str) -> Any:
        return self.fleet.run(self.fleet.pool.evaluate(0, script), timeout=30)


def _decode(data_url: str) -> np.ndarray:
    from PIL import Image

    _, encoded = data_url.split(",", 1)
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        return np.asarray(image.convert("RGB"))
