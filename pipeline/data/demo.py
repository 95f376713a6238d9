"""A deterministic demo dataset: short clips of stick figures doing the seven actions of the classic HAR video set."""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.paths import DEMO_DIR
from pipeline.progress import progress_bar

CLASSES = ("clapping", "meeting_and_splitting", "sitting", "standing_still", "walking",
           "walking_while_reading_book", "walking_while_using_phone")
SIZES = ((160, 120), (240, 180), (320, 240), (320, 180), (256, 256))  # (width, height)
FPS = (15, 20, 25, 30)
# (extension, container, codec, encoder options): codecs browsers play (the app shows the uploaded clip), in three
# containers. One thread each and, for x264, a constant quantiser: with its rate control (CRF) x264's bytes varied
# between runs of the same process for some clips; with qp they never did (9 runs of 21 clips).
FORMATS = (("mp4", "mp4", "libx264", {"preset": "veryfast", "threads": "1", "qp": "23"}),
           ("mkv", "matroska", "libx264", {"preset": "veryfast", "threads": "1", "qp": "23"}),
           ("webm", "webm", "libvpx-vp9", {"deadline": "good", "cpu-used": "5", "threads": "1"}))
BITEXACT = {"fflags": "+bitexact"}  # no random ids (Matroska, WebM) nor version strings written by the muxer


@dataclass
class DemoConfig:
    """Demo settings (params.yaml: demo.*): where to write, clips per class, and the seed that fixes every clip."""

    out_dir: str = DEMO_DIR
    clips_per_class: int = 20
    seed: int = 0


def make_demo_dataset(cfg: DemoConfig, progress: bool = True) -> list[Path]:
    """Render clips_per_class clips (2-4 s) per class to out_dir/<class>/; returns the files written.

    Each clip varies position, figure size, speed, colours, background, camera shake, resolution, fps and
    container/codec (H.264 in mp4 and mkv, VP9 in webm: what browsers play), all drawn from a generator seeded
    by (seed, class, clip), so the dataset is reproducible.
    """
    out = Path(cfg.out_dir)
    if out.exists():
        shutil.rmtree(out)
    jobs = [(c, i) for c in range(len(CLASSES)) for i in range(cfg.clips_per_class)]
    files = []
    for class_idx, clip_idx in progress_bar(jobs, desc="demo", unit="clip", disable=not progress):
        rng = np.random.default_rng([cfg.seed, class_idx, clip_idx])
        files.append(render_clip(out / CLASSES[class_idx], f"{CLASSES[class_idx]}_{clip_idx:03d}",
                                 CLASSES[class_idx], rng))
    return files


def render_clip(folder: Path, stem: str, action: str, rng: np.random.Generator) -> Path:
    """Write one clip of `action` to folder/stem.<ext> (written under a temporary name, then renamed)."""
    width, height = SIZES[rng.integers(len(SIZES))]
    fps = int(FPS[rng.integers(len(FPS))])
    ext, container, codec, options = FORMATS[rng.integers(len(FORMATS))]
    n_frames = int(rng.uniform(2.0, 4.0) * fps)
    scene = _Scene(width, height, rng)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.{ext}"
    tmp = folder / f".{stem}.tmp.{ext}"  # hidden, so a half-written clip is never discovered
    try:
        with av.open(str(tmp), "w", format=container, options=BITEXACT) as out:
            stream = out.add_stream(codec, rate=fps, options=options)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"  # 4:2:0: what browsers decode
            for f in range(n_frames):
                frame = av.VideoFrame.from_ndarray(scene.frame(action, f / fps, n_frames / fps), format="bgr24")
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


class _Scene:
    """Background, figure look and motion parameters of one clip."""

    def __init__(self, width: int, height: int, rng: np.random.Generator):
        self.w, self.h, self.rng = width, height, rng
        self.bg = self._background(rng)
        self.figure_h = height * rng.uniform(0.45, 0.7)
        self.ground = height * rng.uniform(0.85, 0.95)
        self.colors = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(2)]
        self.thick = max(1, int(round(self.figure_h / 40)))
        self.speed = self.figure_h * rng.uniform(0.25, 0.6)  # pixels per second
        self.step_hz = rng.uniform(1.2, 2.2)
        self.facing = 1 if rng.random() < 0.5 else -1
        self.phase = rng.uniform(0, 2 * math.pi)
        self.x0 = width * rng.uniform(0.3, 0.7)
        self.shake = rng.uniform(0.0, 2.5)  # pixels of camera shake

    def _background(self, rng) -> np.ndarray:
        """A wall colour, a floor and a few static boxes, drawn once (BGR uint8)."""
        img = np.empty((self.h, self.w, 3), np.uint8)
        img[:] = rng.integers(40, 230, 3)
        floor_y = int(self.h * rng.uniform(0.6, 0.8))
        img[floor_y:] = rng.integers(20, 200, 3)
        for _ in range(rng.integers(0, 4)):
            x, y = int(rng.integers(0, self.w)), int(rng.integers(0, floor_y))
            bw, bh = int(rng.integers(10, self.w // 3)), int(rng.integers(10, self.h // 3))
            cv2.rectangle(img, (x, y), (x + bw, y + bh), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        return img

    def frame(self, action: str, t: float, length: float) -> np.ndarray:
        """The BGR frame at time t (seconds) of a clip of `length` seconds."""
        dx, dy = self.rng.normal(0, self.shake, 2) if self.shake else (0.0, 0.0)
        shift = np.float32([[1, 0, dx], [0, 1, dy]])
        img = cv2.warpAffine(self.bg, shift, (self.w, self.h), borderMode=cv2.BORDER_REPLICATE)
        off = np.array([dx, dy])
        swing = math.sin(2 * math.pi * self.step_hz * t + self.phase)
        walk_x = self.x0 + self.facing * self.speed * (t - length / 2)
        if action == "meeting_and_splitting":
            # two figures walk towards each other, meet in the middle at half time, then walk apart again
            gap = self.figure_h * 0.3 + self.speed * abs(t - length / 2) * 1.2
            for side, color in ((-1, self.colors[0]), (1, self.colors[1])):
                pose = _walking_pose(swing * side)
                facing = -side if t < length / 2 else side
                _draw_figure(img, self.x0 + side * gap / 2 + off[0], self.ground + off[1], self.figure_h, pose,
                             facing, color, self.thick)
            return img
        if action == "clapping":
            clap = 0.5 + 0.5 * math.sin(2 * math.pi * self.step_hz * 1.8 * t + self.phase)
            pose = dict(_STANDING, upper_front=1.1, fore_front=1.6 + 0.9 * clap, upper_back=-1.1,
                        fore_back=-1.6 - 0.9 * clap)
            x, prop = self.x0, None
        elif action == "standing_still":
            pose = dict(_STANDING, upper_front=0.1 + 0.03 * swing, upper_back=-0.1, fore_front=0.15, fore_back=-0.15)
            x, prop = self.x0 + 0.01 * self.figure_h * swing, None
        elif action == "sitting":
            x, prop = self.x0, "chair"
            pose = dict(thigh_front=1.5, shin_front=0.0, thigh_back=1.45, shin_back=0.05, upper_front=0.4,
                        fore_front=1.2 + 0.05 * swing, upper_back=0.3, fore_back=1.1, sit=True)
        elif action == "walking":
            pose, x, prop = _walking_pose(swing), walk_x, None
        elif action == "walking_while_reading_book":
            pose = dict(_walking_pose(swing * 0.6), upper_front=0.5, fore_front=2.2, upper_back=0.4, fore_back=2.1)
            x, prop = walk_x, "book"
        elif action == "walking_while_using_phone":
            pose = dict(_walking_pose(swing), upper_front=0.3, fore_front=2.6)
            x, prop = walk_x, "phone"
        else:
            raise ValueError(f"unknown demo action {action!r}")
        _draw_figure(img, x + off[0], self.ground + off[1], self.figure_h, pose, self.facing, self.colors[0],
                     self.thick, prop)
        return img


_STANDING = dict(thigh_front=0.05, shin_front=0.0, thigh_back=-0.05, shin_back=0.0, upper_front=0.15,
                 fore_front=0.2, upper_back=-0.15, fore_back=-0.2)


def _walking_pose(swing: float) -> dict:
    """Limb angles (radians from straight down, positive = forward) of a walking stride at phase sin = swing."""
    return dict(thigh_front=0.45 * swing, shin_front=0.45 * swing - 0.3 * max(0.0, -swing),
                thigh_back=-0.45 * swing, shin_back=-0.45 * swing - 0.3 * max(0.0, swing),
                upper_front=-0.4 * swing, fore_front=-0.4 * swing + 0.3, upper_back=0.4 * swing,
                fore_back=0.4 * swing + 0.3)


def _draw_figure(img, x, ground, h, pose, facing, color, thick, prop=None) -> None:
    """Draw a stick figure `h` pixels tall standing (or sitting) at x on the ground line."""
    leg = 0.44 * h
    sit = pose.get("sit", False)
    hip = np.array([x, ground - (0.24 * h if sit else leg)])
    neck = hip - [0, 0.32 * h]
    head_r = 0.08 * h

    def limb(start, a1, a2, l1, l2):
        knee = start + l1 * np.array([facing * math.sin(a1), math.cos(a1)])
        end = knee + l2 * np.array([facing * math.sin(a2), math.cos(a2)])
        cv2.line(img, _pt(start), _pt(knee), color, thick, cv2.LINE_AA)
        cv2.line(img, _pt(knee), _pt(end), color, thick, cv2.LINE_AA)
        return end

    if prop == "chair":
        chair = (40, 40, 40)
        seat = hip + [facing * 0.05 * h, 0.02 * h]
        cv2.line(img, _pt(seat - [facing * 0.2 * h, 0]), _pt(seat + [facing * 0.15 * h, 0]), chair, thick + 1)
        cv2.line(img, _pt(seat - [facing * 0.2 * h, 0]), _pt(seat - [facing * 0.2 * h, 0.35 * h]), chair, thick + 1)
        cv2.line(img, _pt(seat - [facing * 0.2 * h, 0]), _pt(seat - [facing * 0.2 * h, -0.22 * h]), chair,
                 thick + 1)
        cv2.line(img, _pt(seat + [facing * 0.15 * h, 0]), _pt([seat[0] + facing * 0.15 * h, ground]), chair,
                 thick + 1)
    cv2.line(img, _pt(hip), _pt(neck), color, thick, cv2.LINE_AA)
    cv2.circle(img, _pt(neck - [0, head_r]), int(head_r), color, thick, cv2.LINE_AA)
    limb(hip, pose["thigh_back"], pose["shin_back"], 0.22 * h, 0.22 * h)
    limb(hip, pose["thigh_front"], pose["shin_front"], 0.22 * h, 0.22 * h)
    shoulder = neck + [0, 0.03 * h]
    hand_back = limb(shoulder, pose["upper_back"], pose["fore_back"], 0.17 * h, 0.15 * h)
    hand_front = limb(shoulder, pose["upper_front"], pose["fore_front"], 0.17 * h, 0.15 * h)
    if prop == "book":
        centre = (hand_front + hand_back) / 2
        size = np.array([0.09 * h, 0.12 * h])
        cv2.rectangle(img, _pt(centre - size), _pt(centre + size), (30, 30, 160), -1)
    elif prop == "phone":
        size = np.array([0.025 * h, 0.045 * h])
        cv2.rectangle(img, _pt(hand_front - size), _pt(hand_front + size), (20, 20, 20), -1)


def _pt(p) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))
