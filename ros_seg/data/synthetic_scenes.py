"""Procedural Cityscapes-like street scenes with exact ground truth.

A scene is a small 3-D street seen by a forward-looking camera: a road with
lanes, markings and sometimes a bike lane or crosswalk, sidewalks, verges of
terrain, building blocks with windows, vegetation, walls and fences between
them, a far skyline, street lamps, traffic signs and lights, trees, parked and
moving cars (sometimes trucks, buses or a tram, which has what tells it from a
bus: articulation, roof equipment, a pantograph), pedestrians (alone or in a
crowd), cyclists and motorcyclists (rider and vehicle are separate instances;
a motorcycle has a tail lamp, plate, silencer and engine a bicycle lacks) and
parked two-wheelers. Everything is drawn with OpenCV polygons in painter's
order (far to near), so occlusions in the image and the label maps agree.
Textures come from noise fields whose strength depends on the class; lighting
(brightness, contrast, tint, haze), camera height, focal length and horizon
vary per drive.

A `StreetDrive` is one generated street; `StreetDrive.render(i)` draws frame
`i` of a drive at 17 Hz (the Cityscapes camera rate) with the camera and the
moving objects advanced, so consecutive frames form a smooth sequence.
`write_dataset` writes frames in the exact Cityscapes layout, including the
panoptic ground truth of createPanopticImgs (see `cityscapes_layout`).

World coordinates: x to the right, y up from the ground, z forward, in metres;
the camera sits at x = 0, height `Camera.mount_height`, z = ego position.
"""
from __future__ import annotations

import functools
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ros_seg.data import cityscapes_layout as layout
from ros_seg.models.class_metadata import CITYSCAPES, ClassMetadata

FRAME_RATE_HZ = 17.0
MIN_INSTANCE_AREA = 12  # visible pixels; smaller objects become unlabeled
Z_NEAR = 0.5  # m, polygons are clipped here
Z_FAR = 160.0  # m, the skyline and the end of the road

UNLABELED = 0
EGO_VEHICLE = 1
_LABEL = dict(zip(CITYSCAPES.names, CITYSCAPES.label_ids))
ROAD, SIDEWALK, BUILDING, WALL, FENCE = (_LABEL[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = (_LABEL[n] for n in ("pole", "traffic light", "traffic sign"))
VEGETATION, TERRAIN, SKY = (_LABEL[n] for n in ("vegetation", "terrain", "sky"))
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN = (_LABEL[n] for n in ("person", "rider", "car", "truck", "bus", "train"))
MOTORCYCLE, BICYCLE = _LABEL["motorcycle"], _LABEL["bicycle"]

_SPLIT_CODES = {"train": 0, "val": 1}
_CITIES = {"train": ("ashford", "bramwick", "corwen"), "val": ("dunmore", "elmstead")}

Color = tuple[int, int, int]

_CAR_COLORS: tuple[Color, ...] = (
    (235, 235, 235), (25, 25, 28), (160, 163, 168), (95, 98, 104), (150, 20, 25),
    (30, 55, 120), (35, 70, 50), (200, 185, 150), (110, 20, 30), (230, 200, 40),
)
_BUS_COLORS: tuple[Color, ...] = ((225, 190, 30), (200, 30, 35), (235, 235, 230), (40, 80, 160))
_CLOTHES: tuple[Color, ...] = (
    (30, 30, 35), (60, 60, 70), (20, 40, 90), (120, 20, 30), (200, 200, 200),
    (90, 70, 50), (40, 90, 60), (170, 120, 60), (210, 80, 40), (70, 90, 140),
)
_SKIN: tuple[Color, ...] = ((240, 200, 170), (205, 160, 120), (160, 110, 75), (100, 70, 50))
_FACADES: tuple[Color, ...] = (
    (200, 190, 170), (170, 165, 160), (150, 95, 75), (225, 220, 205), (120, 120, 125),
    (190, 160, 120), (215, 200, 160), (100, 90, 85),
)
_GREENS: tuple[Color, ...] = ((70, 105, 35), (95, 125, 45), (55, 85, 40), (120, 140, 60))
_CHROME: Color = (178, 178, 184)  # motorcycle silencers, exhausts and forks
_ENGINE: Color = (62, 62, 66)


@dataclass(frozen=True)
class Camera:
    """Pinhole camera looking along +z, its optical axis parallel to the ground.

    Args:
        width: image width in pixels.
        height: image height in pixels.
        focal: focal length in pixels.
        horizon: image row of the horizon.
        mount_height: height of the camera above the ground in metres.
    """

    width: int
    height: int
    focal: float
    horizon: float
    mount_height: float

    def project(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) points (x, y, z relative to the camera's ground point) -> (..., 2) pixels (u, v)."""
        z = points[..., 2]
        u = self.width / 2 + self.focal * points[..., 0] / z
        v = self.horizon + self.focal * (self.mount_height - points[..., 1]) / z
        return np.stack([u, v], axis=-1)

    def project_billboard(self, x: float, z: float, offsets: np.ndarray) -> np.ndarray:
        """(N, 2) offsets (dx, y) in metres on the upright plane at depth z -> (N, 2) pixels."""
        points = np.column_stack([x + offsets[:, 0], offsets[:, 1], np.full(len(offsets), z)])
        return self.project(points)


def _clip_near(polygon: np.ndarray) -> np.ndarray:
    """Clip a planar (N, 3) polygon to z >= Z_NEAR (Sutherland-Hodgman for one plane)."""
    inside = polygon[:, 2] >= Z_NEAR
    if inside.all():
        return polygon
    out = []
    for i in range(len(polygon)):
        a, b = polygon[i], polygon[(i + 1) % len(polygon)]
        a_in, b_in = a[2] >= Z_NEAR, b[2] >= Z_NEAR
        if a_in:
            out.append(a)
        if a_in != b_in:
            out.append(a + (b - a) * (Z_NEAR - a[2]) / (b[2] - a[2]))
    return np.array(out).reshape(-1, 3)


def _fixed(points: np.ndarray) -> np.ndarray:
    """Pixels -> int32 with 4 fractional bits (OpenCV `shift=4`)."""
    return np.round(np.clip(points, -1e7, 1e7) * 16).astype(np.int32)


def _shade(color: Color, factor: float) -> Color:
    return tuple(int(min(255, max(0, c * factor))) for c in color)


class _Canvas:
    """The image and the Cityscapes instanceIds map of one frame, drawn together.

    Every shape is drawn into the image and, with `segment_id` given, into the
    id map (label id for stuff and crowds, label id * 1000 + index for objects).
    """

    def __init__(self, camera: Camera, background: np.ndarray) -> None:
        self.camera = camera
        self.image = np.ascontiguousarray(np.broadcast_to(background[:, None, :], (camera.height, camera.width, 3)))
        self.ids = np.full((camera.height, camera.width), SKY, dtype=np.int32)
        self._used: dict[int, set[int]] = {}

    def instance_id(self, label: int, track: int) -> int:
        """Id of object `track` of class `label`: label * 1000 + track % 1000, unique in the frame."""
        used = self._used.setdefault(label, set())
        index = track % layout.INSTANCE_OFFSET
        while index in used:
            index = (index + 1) % layout.INSTANCE_OFFSET
        used.add(index)
        return label * layout.INSTANCE_OFFSET + index

    def polygon(self, pixels: np.ndarray, color: Color, segment_id: int | None) -> None:
        """Fill one (N, 2) polygon given in pixels."""
        if len(pixels) < 3:
            return
        pts = [_fixed(pixels)]
        cv2.fillPoly(self.image, pts, color, cv2.LINE_8, 4)
        if segment_id is not None:
            cv2.fillPoly(self.ids, pts, segment_id, cv2.LINE_8, 4)

    def polygon3d(self, points: np.ndarray, color: Color, segment_id: int | None) -> None:
        """Fill one planar (N, 3) polygon given in camera-relative metres."""
        clipped = _clip_near(points)
        if len(clipped) >= 3:
            self.polygon(self.camera.project(clipped), color, segment_id)

    def quads(self, quads: np.ndarray, color: Color) -> None:
        """Fill many non-overlapping (K, 4, 3) quads, image only (windows, markings)."""
        quads = quads[(quads[:, :, 2] >= Z_NEAR).all(axis=1)]
        if len(quads):
            cv2.fillPoly(self.image, list(_fixed(self.camera.project(quads))), color, cv2.LINE_8, 4)

    def ellipse(self, center: np.ndarray, axes: tuple[float, float], color: Color, segment_id: int | None,
                thickness: int = -1) -> None:
        """Ellipse at a pixel centre with pixel semi-axes (filled unless `thickness` > 0)."""
        c = tuple(int(v) for v in _fixed(center))
        a = tuple(int(v) for v in _fixed(np.maximum(axes, 0.5)))
        cv2.ellipse(self.image, c, a, 0, 0, 360, color, thickness, cv2.LINE_8, 4)
        if segment_id is not None:
            cv2.ellipse(self.ids, c, a, 0, 0, 360, segment_id, thickness, cv2.LINE_8, 4)

    def line(self, p: np.ndarray, q: np.ndarray, color: Color, segment_id: int | None, thickness: float) -> None:
        """Line between two pixel positions, at least 1 px thick."""
        a, b = tuple(int(v) for v in _fixed(p)), tuple(int(v) for v in _fixed(q))
        t = max(1, int(round(thickness)))
        cv2.line(self.image, a, b, color, t, cv2.LINE_8, 4)
        if segment_id is not None:
            cv2.line(self.ids, a, b, segment_id, t, cv2.LINE_8, 4)

    def cuboid(self, box: tuple[float, float, float, float, float, float], color: Color,
               segment_id: int | None) -> None:
        """Axis-aligned box (x0, x1, y0, y1, z0, z1): fill its faces turned to the camera, shaded."""
        x0, x1, y0, y1, z0, z1 = box
        eye = self.camera.mount_height
        corners = {
            "front": [(x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0)],
            "left": [(x0, y0, z0), (x0, y0, z1), (x0, y1, z1), (x0, y1, z0)],
            "right": [(x1, y0, z0), (x1, y0, z1), (x1, y1, z1), (x1, y1, z0)],
            "top": [(x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1)],
            "bottom": [(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)],
        }
        visible = {"front": z0 > Z_NEAR, "left": x0 > 0, "right": x1 < 0, "top": y1 < eye, "bottom": y0 > eye}
        shades = {"front": 1.0, "left": 0.8, "right": 0.8, "top": 1.12, "bottom": 0.6}
        for face, points in corners.items():
            if visible[face]:
                self.polygon3d(np.array(points, dtype=np.float64), _shade(color, shades[face]), segment_id)


# ---------------------------------------------------------------------------
# Static structures along the block lines (drawn before free-standing objects).
# ---------------------------------------------------------------------------


@dataclass
class _Building:
    """A building block: facade on the plane x = `face`, extending away from the road."""

    side: int
    face: float
    z0: float
    z1: float
    height: float
    depth: float
    color: Color
    windows: np.ndarray  # (K, 4): z start, y start, width, height on the facade
    window_groups: np.ndarray  # (K,) index into window_colors
    window_colors: tuple[Color, ...]

    def draw(self, canvas: _Canvas, cam_z: float, light: float) -> None:
        x_far = self.face + self.side * self.depth
        box = (min(self.face, x_far), max(self.face, x_far), 0.0, self.height, self.z0 - cam_z, self.z1 - cam_z)
        canvas.cuboid(box, _shade(self.color, light), BUILDING)
        x = self.face - self.side * 0.02
        z, y, w, h = (self.windows[:, k] for k in range(4))
        z = z - cam_z
        quads = np.stack(
            [
                np.stack([np.full_like(z, x), y, z], -1),
                np.stack([np.full_like(z, x), y, z + w], -1),
                np.stack([np.full_like(z, x), y + h, z + w], -1),
                np.stack([np.full_like(z, x), y + h, z], -1),
            ],
            axis=1,
        )  # (K, 4, 3)
        for g, color in enumerate(self.window_colors):
            canvas.quads(quads[self.window_groups == g], _shade(color, light))


@dataclass
class _Backdrop:
    """Vegetation behind a lot, on the plane x = `face`, with an uneven top."""

    face: float
    z: np.ndarray  # (N,) world depths of the top profile
    heights: np.ndarray  # (N,)
    color: Color

    @property
    def z0(self) -> float:
        return float(self.z[0])

    def draw(self, canvas: _Canvas, cam_z: float, light: float) -> None:
        top = np.column_stack([np.full(len(self.z), self.face), self.heights, self.z - cam_z])
        bottom = np.array([[self.face, 0.0, self.z[-1] - cam_z], [self.face, 0.0, self.z[0] - cam_z]])
        canvas.polygon3d(np.vstack([top, bottom]), _shade(self.color, light), VEGETATION)


@dataclass
class _Barrier:
    """A wall or a fence along a block line."""

    label: int
    face: float
    z0: float
    z1: float
    height: float
    color: Color

    def draw(self, canvas: _Canvas, cam_z: float, light: float) -> None:
        z0, z1 = self.z0 - cam_z, self.z1 - cam_z
        box = (self.face - 0.1, self.face + 0.1, 0.0, self.height, z0, z1)
        canvas.cuboid(box, _shade(self.color, light), self.label)
        if self.label == FENCE:
            zs = np.arange(math.ceil(max(z0, 1.0) / 2.0) * 2.0, z1, 2.0)
            if len(zs):
                x = self.face - np.sign(self.face) * 0.12
                top = canvas.camera.project(np.column_stack([np.full(len(zs), x), np.full(len(zs), self.height), zs]))
                bottom = canvas.camera.project(np.column_stack([np.full(len(zs), x), np.zeros(len(zs)), zs]))
                post = _shade(self.color, 0.55 * light)
                for p, q, zz in zip(top, bottom, zs):
                    canvas.line(p, q, post, None, 0.08 * canvas.camera.focal / zz)


# ---------------------------------------------------------------------------
# Free-standing objects, sorted by depth every frame.
# ---------------------------------------------------------------------------


@dataclass
class _Actor:
    """Something at lateral position `x` whose near end is at world depth `z` at time 0."""

    x: float
    z: float
    speed: float = 0.0  # m/s along +z
    length: float = 0.5  # extent along z, to keep objects that reach past the camera
    track: int = 0  # persistent index, the instance number

    def depth(self, time: float, cam_z: float) -> float:
        return self.z + self.speed * time - cam_z

    def draw(self, canvas: _Canvas, z: float, time: float, light: float) -> None:
        raise NotImplementedError


@dataclass
class _Vehicle(_Actor):
    """Car, truck, bus or tram: cuboids for body, cabin and wheels, with windows and lights."""

    label: int = CAR
    width: float = 1.8
    height: float = 1.5
    color: Color = (128, 128, 128)
    oncoming: bool = False

    def draw(self, canvas: _Canvas, z: float, time: float, light: float) -> None:
        seg = canvas.instance_id(self.label, self.track)
        w, h, length = self.width, self.height, self.length
        x0, x1 = self.x - w / 2, self.x + w / 2
        color = _shade(self.color, light)
        glass = _shade((45, 55, 65), light)
        tire = (20, 20, 22)
        for wz in (z + length - 0.8, z + 0.8):
            for wx in (x0 + 0.02, x1 - 0.24):
                canvas.cuboid((wx, wx + 0.22, 0.0, 0.66, wz - 0.33, wz + 0.33), tire, seg)
        if self.label == CAR:
            belt = 0.55 * h
            cabin = (x0 + 0.09 * w, x1 - 0.09 * w, belt, h, z + 0.24 * length, z + 0.78 * length)
            canvas.cuboid(cabin, color, seg)
            self._paint_faces(canvas, cabin, glass, 0.08)
            canvas.cuboid((x0, x1, 0.3, belt, z, z + length), color, seg)
            lamp_y = belt - 0.2
        elif self.label == TRUCK:
            cab_len = 0.28 * length
            cab_z = z if self.oncoming else z + length - cab_len
            box_z = z + cab_len if self.oncoming else z
            canvas.cuboid((x0 + 0.05, x1 - 0.05, 0.45, 0.8 * h, cab_z, cab_z + cab_len), _shade(color, 0.9), seg)
            cargo = (x0, x1, 0.55, h, box_z, box_z + length - cab_len)
            canvas.cuboid(cargo, _shade((225, 225, 220), light) if self.track % 2 else color, seg)
            if self.oncoming:
                self._paint_faces(canvas, (x0 + 0.05, x1 - 0.05, 0.45 * h, 0.8 * h, z, z + cab_len), glass, 0.1)
            lamp_y = 0.8
        elif self.label == TRAIN:
            self._draw_tram(canvas, z, light, glass, seg)
            lamp_y = 0.55
        else:
            body = (x0, x1, 0.35, h, z, z + length)
            canvas.cuboid(body, color, seg)
            self._paint_faces(canvas, (x0, x1, 0.42 * h, 0.85 * h, z, z + length), glass, 0.05)
            lamp_y = 0.7
        lamp = (255, 250, 230) if self.oncoming else (200, 20, 20)
        for lx in (x0 + 0.08, x1 - 0.33):
            canvas.polygon3d(
                np.array([[lx, lamp_y, z - 0.01], [lx + 0.25, lamp_y, z - 0.01], [lx + 0.25, lamp_y + 0.12, z - 0.01],
                          [lx, lamp_y + 0.12, z - 0.01]]),
                lamp, None,
            )

    def _draw_tram(self, canvas: _Canvas, z: float, light: float, glass: Color, seg: int) -> None:
        """An articulated tram: sections joined by dark bellows, roof equipment and a pantograph on top,
        a low dark skirt, a livery stripe in the other tram colour and window bays split by pillars.

        What sits on the roof is drawn first: from below the roof, the body hides all of it that it covers.
        """
        w, h, length = self.width, self.height, self.length
        x0, x1 = self.x - w / 2, self.x + w / 2
        color = _shade(self.color, light)
        sections = max(2, round(length / 8.0))
        bay = length / sections
        equipment = _shade((70, 72, 75), light)
        for k in range(sections):
            canvas.cuboid((x0 + 0.45, x1 - 0.45, h, h + 0.35, z + k * bay + 1.5, z + k * bay + 4.5), equipment, seg)
        self._pantograph(canvas, self.x, h + 0.35, z + 0.5 * bay, _shade((35, 35, 38), light), seg)
        canvas.cuboid((x0, x1, 0.3, h, z, z + length), color, seg)
        white = (235, 235, 230)
        stripe = _shade((200, 30, 35) if self.color == white else white, light)
        skirt = _shade((45, 45, 48), light)
        bellows = _shade((30, 30, 32), light)
        self._paint_faces(canvas, (x0, x1, 0.3, 0.75, z, z + length), skirt, 0.02, 0.8)
        self._paint_faces(canvas, (x0, x1, 0.3 * h, 0.36 * h, z, z + length), stripe, 0.02, 0.8)
        self._paint_faces(canvas, (x0, x1, 0.4 * h, 0.86 * h, z, z + length), glass, 0.05)
        pillar = 0.25
        for k in range(sections):
            for j in range(1, 4):
                zp = z + k * bay + j * bay / 4
                pillar_box = (x0, x1, 0.4 * h, 0.86 * h, zp - pillar / 2, zp + pillar / 2)
                self._paint_faces(canvas, pillar_box, color, 0.02, 0.8, front=False)
            if k:
                joint = (x0, x1, 0.3, h, z + k * bay - 0.3, z + k * bay + 0.3)
                self._paint_faces(canvas, joint, bellows, 0.02, 0.8, front=False)

    @staticmethod
    def _pantograph(canvas: _Canvas, x: float, roof: float, zc: float, color: Color, seg: int) -> None:
        """A pantograph seen side-on: two arms folding up from the roof to a wide collector bar."""
        if zc - 0.7 <= Z_NEAR:
            return
        cam = canvas.camera
        knee, top = roof + 0.5, roof + 1.0
        points = cam.project(np.array([[x, roof, zc - 0.6], [x, knee, zc + 0.3], [x, top, zc - 0.1],
                                       [x - 0.8, top, zc - 0.1], [x + 0.8, top, zc - 0.1]]))
        thick = cam.focal * 0.06 / zc
        for a, b in ((0, 1), (1, 2), (3, 4)):
            canvas.line(points[a], points[b], color, seg, thick)

    @staticmethod
    def _paint_faces(canvas: _Canvas, box: tuple[float, ...], color: Color, inset: float, side_shade: float = 1.0,
                     front: bool = True) -> None:
        """Paint (image only) a box's visible side face and, when `front`, its front face, inset by `inset`
        metres from the box's edges (so that no paint spills off the outline); the side face in `color`
        shaded by `side_shade`. Glass (shade 1) and paint bands (shade 0.8, as the cuboid shades sides)."""
        x0, x1, y0, y1, z0, z1 = box
        ya, yb = y0 + inset, y1 - inset
        if front and z0 > Z_NEAR:
            z = z0 - 0.01
            face = [[x0 + inset, ya, z], [x1 - inset, ya, z], [x1 - inset, yb, z], [x0 + inset, yb, z]]
            canvas.polygon3d(np.array(face), color, None)
        side = _shade(color, side_shade)
        for x, visible in ((x0 - 0.01, x0 > 0), (x1 + 0.01, x1 < 0)):
            if visible:
                face = [[x, ya, z0 + inset], [x, ya, z1 - inset], [x, yb, z1 - inset], [x, yb, z0 + inset]]
                canvas.polygon3d(np.array(face), side, None)


def _person_parts(phase: float, seated: bool) -> dict[str, np.ndarray]:
    """Body parts of a 1.75 m person as (N, 2) (dx, y) polygons in metres."""
    swing = 0.16 * math.sin(phase)
    hip = 0.95 if seated else 0.92
    parts = {
        "torso": np.array([[-0.19, 1.47], [0.19, 1.47], [0.16, hip], [-0.16, hip]]),
        "arm_l": np.array([[-0.23, 1.44], [-0.15, 1.44], [-0.2 - swing * 0.5, 0.88], [-0.28 - swing * 0.5, 0.88]]),
        "arm_r": np.array([[0.15, 1.44], [0.23, 1.44], [0.28 + swing * 0.5, 0.88], [0.2 + swing * 0.5, 0.88]]),
        "neck": np.array([[-0.05, 1.52], [0.05, 1.52], [0.05, 1.45], [-0.05, 1.45]]),
    }
    if seated:
        pedal = 0.12 * math.sin(phase)
        parts["leg_l"] = np.array([[-0.15, hip], [-0.03, hip], [-0.1, 0.35 + pedal], [-0.2, 0.35 + pedal]])
        parts["leg_r"] = np.array([[0.03, hip], [0.15, hip], [0.2, 0.35 - pedal], [0.1, 0.35 - pedal]])
        parts["arm_l"] = np.array([[-0.23, 1.44], [-0.15, 1.44], [-0.26, 1.02], [-0.34, 1.02]])
        parts["arm_r"] = np.array([[0.15, 1.44], [0.23, 1.44], [0.34, 1.02], [0.26, 1.02]])
    else:
        parts["leg_l"] = np.array([[-0.16, hip], [-0.01, hip], [-0.04 - swing, 0.0], [-0.17 - swing, 0.0]])
        parts["leg_r"] = np.array([[0.01, hip], [0.16, hip], [0.17 + swing, 0.0], [0.04 + swing, 0.0]])
    return parts


def _draw_person(canvas: _Canvas, x: float, z: float, lift: float, scale: float, phase: float, seated: bool,
                 colors: tuple[Color, Color, Color, Color], seg: int) -> None:
    """A person billboard at depth z, feet `lift` metres above the ground; colors: shirt, pants, skin, hair."""
    shirt, pants, skin, hair = colors
    cam = canvas.camera
    for name, part in _person_parts(phase, seated).items():
        color = pants if name.startswith("leg") else skin if name == "neck" else shirt
        pts = part * scale + np.array([0.0, lift])
        canvas.polygon(cam.project_billboard(x, z, pts), color, seg)
    head = cam.project_billboard(x, z, np.array([[0.0, 1.62 * scale + lift]]))[0]
    r = cam.focal * 0.11 * scale / z
    canvas.ellipse(head, (r, 1.2 * r), skin, seg)
    canvas.ellipse(head - np.array([0.0, 0.45 * r]), (r, 0.8 * r), hair, seg)


@dataclass
class _Pedestrian(_Actor):
    """A walking or standing person; `crowd` draws it as part of a crowd region (one id for all)."""

    scale: float = 1.0
    phase: float = 0.0
    colors: tuple[Color, Color, Color, Color] = ((90, 90, 90), (40, 40, 40), (220, 180, 150), (40, 30, 20))
    crowd: bool = False

    def draw(self, canvas: _Canvas, z: float, time: float, light: float) -> None:
        seg = PERSON if self.crowd else canvas.instance_id(PERSON, self.track)
        phase = self.phase + (2 * math.pi * 1.8 * time if self.speed else 0.0)
        colors = tuple(_shade(c, light) for c in self.colors)
        _draw_person(canvas, self.x, z, 0.0, self.scale, phase, False, colors, seg)


@dataclass
class _Cyclist(_Actor):
    """A rider on a bicycle or motorcycle riding along the road, seen from behind or the front."""

    motorcycle: bool = False
    rider_track: int = 0
    phase: float = 0.0
    colors: tuple[Color, Color, Color, Color] = ((90, 90, 90), (40, 40, 40), (220, 180, 150), (40, 30, 20))
    frame_color: Color = (30, 30, 30)

    def draw(self, canvas: _Canvas, z: float, time: float, light: float) -> None:
        vehicle = canvas.instance_id(MOTORCYCLE if self.motorcycle else BICYCLE, self.track)
        rider = canvas.instance_id(RIDER, self.rider_track)
        x, tire = self.x, (18, 18, 20)
        frame = _shade(self.frame_color, light)
        half = 0.09 if self.motorcycle else 0.025
        radius = 0.31 if self.motorcycle else 0.34
        far_wheel = z + self.length - radius
        canvas.cuboid((x - half, x + half, 0.0, 2 * radius, far_wheel - radius, far_wheel + radius), tire, vehicle)
        bar = 0.38 if self.motorcycle else 0.3
        bar_z = z + self.length - 0.45
        canvas.cuboid((x - bar, x + bar, 1.0, 1.05, bar_z, bar_z + 0.05), frame, vehicle)
        if self.motorcycle:
            self._motorcycle_front(canvas, x, z, bar_z, frame, light, vehicle)
        else:
            canvas.cuboid((x - 0.02, x + 0.02, 0.45, 0.9, z + 0.3, z + self.length - 0.4), frame, vehicle)
        phase = self.phase + 2 * math.pi * 1.2 * time
        colors = tuple(_shade(c, light) for c in self.colors)
        _draw_person(canvas, x, z + 0.45, 0.1 if self.motorcycle else 0.05, 0.95, phase, True, colors, rider)
        canvas.cuboid((x - half, x + half, 0.0, 2 * radius, z, z + 2 * radius), tire, vehicle)
        if self.motorcycle:
            self._motorcycle_rear(canvas, x, z, frame, light, vehicle)

    def _motorcycle_front(self, canvas: _Canvas, x: float, z: float, bar_z: float, body: Color, light: float,
                          seg: int) -> None:
        """What lies beyond the rider, up to the handlebar at depth `bar_z`: mirrors on stalks, a fairing over
        the front wheel, the tank, and the engine block between the rider's knees (wider than the tank and
        darker)."""
        dark = _shade((28, 28, 30), light)
        for side in (-1, 1):
            stalk = x + side * 0.33
            canvas.cuboid((stalk - 0.015, stalk + 0.015, 1.05, 1.22, bar_z, bar_z + 0.03), dark, seg)
            mirror = x + side * 0.37
            canvas.cuboid((mirror - 0.06, mirror + 0.06, 1.18, 1.27, bar_z, bar_z + 0.03), dark, seg)
        canvas.cuboid((x - 0.2, x + 0.2, 0.62, 1.12, bar_z - 0.05, bar_z + 0.3), body, seg)
        canvas.cuboid((x - 0.26, x + 0.26, 0.25, 0.62, z + 0.5, z + self.length - 0.5), _shade(_ENGINE, light), seg)
        canvas.cuboid((x - 0.2, x + 0.2, 0.72, 1.0, z + 0.85, bar_z - 0.05), body, seg)

    @staticmethod
    def _motorcycle_rear(canvas: _Canvas, x: float, z: float, body: Color, light: float, seg: int) -> None:
        """What lies before the rider, seen from behind: a chrome silencer on the right, the tail section under
        the seat in the body colour with a red tail lamp, and the number plate on a bracket over the wheel."""
        canvas.cuboid((x + 0.15, x + 0.27, 0.3, 0.44, z + 0.12, z + 1.0), _shade(_CHROME, light), seg)
        canvas.cuboid((x - 0.17, x + 0.17, 0.72, 0.95, z + 0.05, z + 0.55), body, seg)
        canvas.cuboid((x - 0.08, x + 0.08, 0.76, 0.83, z + 0.02, z + 0.05), (210, 25, 25), seg)
        canvas.cuboid((x - 0.11, x + 0.11, 0.52, 0.68, z - 0.02, z), _shade((232, 232, 222), light), seg)


@dataclass
class _ParkedTwoWheeler(_Actor):
    """A bicycle or motorcycle standing on the sidewalk, its axis at `angle` to the image plane."""

    motorcycle: bool = False
    angle: float = 0.0
    color: Color = (30, 30, 30)

    def draw(self, canvas: _Canvas, z: float, time: float, light: float) -> None:
        seg = canvas.instance_id(MOTORCYCLE if self.motorcycle else BICYCLE, self.track)
        cam = canvas.camera
        c, s = math.cos(self.angle), math.sin(self.angle)
        centre = z + 0.6  # depth of the point between the wheels

        def at(along: np.ndarray, y: np.ndarray) -> np.ndarray:
            along, y = np.asarray(along, dtype=np.float64), np.asarray(y, dtype=np.float64)
            return cam.project(np.stack([self.x + along * c, y, centre + along * s], axis=-1))

        color = _shade(self.color, light)
        radius, axle = (0.3, 0.7) if self.motorcycle else (0.34, 0.52)
        centres = at(np.array([-axle, axle]), np.array([radius, radius]))
        for k, along in enumerate((-axle, axle)):
            depth = centre + along * s
            axes = (cam.focal * radius * max(abs(c), 0.15) / depth, cam.focal * radius / depth)
            thickness = -1 if self.motorcycle else max(1, int(round(cam.focal * 0.05 / depth)))
            canvas.ellipse(centres[k], axes, (20, 20, 22), seg, thickness)
        if self.motorcycle:
            body = at([-0.6, 0.55, 0.65, 0.1, -0.75], [0.35, 0.35, 0.9, 1.0, 0.8])
            canvas.polygon(body, color, seg)
            canvas.polygon(at([-0.35, 0.3, 0.3, -0.35], [0.3, 0.3, 0.6, 0.6]), _shade(_ENGINE, light), seg)
            chrome = _shade(_CHROME, light)
            canvas.line(*at([-0.75, 0.05], [0.33, 0.3]), chrome, seg, cam.focal * 0.07 / centre)
            canvas.line(*at([-0.72, 0.02], [0.84, 0.97]), _shade((25, 25, 28), light), seg, cam.focal * 0.06 / centre)
            canvas.line(*at([0.55, 0.62], [0.4, 1.1]), chrome, seg, cam.focal * 0.05 / centre)
            head = at(np.array([0.68]), np.array([0.92]))[0]
            canvas.ellipse(head, (cam.focal * 0.06 * max(abs(c), 0.3) / centre, cam.focal * 0.06 / centre),
                           _shade((240, 236, 215), light), seg)
        else:
            keys = at([-0.52, -0.12, 0.0, 0.42, 0.52, 0.45, -0.12], [0.34, 0.88, 0.3, 0.88, 0.34, 1.0, 0.92])
            thick = cam.focal * 0.035 / centre
            for a, b in ((0, 1), (1, 2), (2, 0), (1, 3), (2, 3), (3, 4), (3, 5), (1, 6)):
                canvas.line(keys[a], keys[b], color, seg, thick)


@dataclass
class _Tree(_Actor):
    """A tree (trunk and a crown of overlapping lobes) or, with no trunk, a bush."""

    trunk: float = 3.0
    lobes: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (K, 3): dx, y, radius
    colors: tuple[Color, ...] = _GREENS

    def draw(self, canvas: _Canvas, z: float, time: float, light: float) -> None:
        cam = canvas.camera
        if self.trunk > 0:
            trunk = (self.x - 0.14, self.x + 0.14, 0.0, self.trunk + 0.5, z, z + 0.28)
            canvas.cuboid(trunk, _shade((85, 65, 45), light), VEGETATION)
        centres = cam.project_billboard(self.x, z, self.lobes[:, :2])
        for k, (centre, r) in enumerate(zip(centres, self.lobes[:, 2])):
            px = cam.focal * r / z
            canvas.ellipse(centre, (px, 0.85 * px), _shade(self.colors[k % len(self.colors)], light), VEGETATION)


@dataclass
class _StreetPole(_Actor):
    """A pole with a street lamp, a traffic sign, a traffic light or an overhead traffic light.

    `toward_road` is +1 or -1: the direction of the road from the pole.
    """

    kind: str = "lamp"
    height: float = 7.0
    toward_road: int = 1
    arm: float = 2.0
    sign_shape: str = "circle"
    lit: int = 0

    def draw(self, canvas: _Canvas, z: float, time: float, light: float) -> None:
        cam = canvas.camera
        gray = _shade((120, 122, 125), light)
        x, h, d = self.x, self.height, self.toward_road
        half = 0.05 if self.kind == "sign" else 0.08
        canvas.cuboid((x - half, x + half, 0.0, h, z, z + 2 * half), gray, POLE)
        if self.kind in ("lamp", "overhead"):
            xa, xb = sorted((x, x + d * self.arm))
            canvas.cuboid((xa, xb, h - 0.25, h - 0.12, z, z + 0.12), gray, POLE)
        if self.kind == "lamp":
            xe = x + d * self.arm
            head = (xe - 0.3, xe + 0.3, h - 0.4, h - 0.22, z - 0.1, z + 0.2)
            canvas.cuboid(head, _shade((170, 170, 165), light), POLE)
        elif self.kind == "sign":
            self._sign(canvas, x, h - 0.35, z - 0.02, light)
        else:
            xl = x + d * self.arm if self.kind == "overhead" else x
            top = h - 0.1 if self.kind == "overhead" else h + 0.9
            box = (xl - 0.18, xl + 0.18, top - 0.95, top, z - 0.16, z + 0.14)
            canvas.cuboid(box, _shade((30, 32, 30), light), TRAFFIC_LIGHT)
            lamps = ((230, 30, 20), (240, 180, 20), (40, 220, 90))
            for k, color in enumerate(lamps):
                centre = cam.project(np.array([xl, top - 0.17 - 0.3 * k, z - 0.17]))
                r = cam.focal * 0.1 / (z - 0.17) if z - 0.17 > Z_NEAR else 0.0
                if r > 0:
                    canvas.ellipse(centre, (r, r), color if k == self.lit else (40, 40, 38), None)

    def _sign(self, canvas: _Canvas, x: float, y: float, z: float, light: float) -> None:
        """A sign face of about 0.65 m centred at (x, y) on depth z."""
        cam = canvas.camera
        r = 0.32
        if self.sign_shape == "circle":
            centre = cam.project(np.array([x, y, z]))
            px = cam.focal * r / z
            canvas.ellipse(centre, (px, px), _shade((200, 20, 25), light), TRAFFIC_SIGN)
            canvas.ellipse(centre, (0.75 * px, 0.75 * px), _shade((235, 235, 235), light), None)
            return
        shapes = {
            "triangle": (np.array([[-r, -0.8 * r], [r, -0.8 * r], [0.0, r]]), (235, 235, 230), (200, 20, 25)),
            "square": (np.array([[-r, -r], [r, -r], [r, r], [-r, r]]), (30, 70, 170), (240, 240, 240)),
            "diamond": (np.array([[0.0, -r], [r, 0.0], [0.0, r], [-r, 0.0]]), (245, 200, 20), (240, 240, 240)),
        }
        outline, face, border = shapes[self.sign_shape]
        pts = outline + np.array([0.0, y])
        canvas.polygon(cam.project_billboard(x, z, pts), _shade(border, light), TRAFFIC_SIGN)
        inner = outline * 0.78 + np.array([0.0, y])
        canvas.polygon(cam.project_billboard(x, z - 0.005, inner), _shade(face, light), None)


# ---------------------------------------------------------------------------
# The drive: world generation and rendering.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticFrame:
    """One rendered frame.

    Args:
        image: (H, W, 3) uint8 RGB.
        instance_ids: (H, W) int32 in the Cityscapes instanceIds convention:
            label_id * 1000 + instance for objects, label id for stuff and crowds,
            0 unlabeled, 1 ego vehicle.
    """

    image: np.ndarray
    instance_ids: np.ndarray

    @property
    def label_ids(self) -> np.ndarray:
        """(H, W) uint8 Cityscapes label ids."""
        ids = self.instance_ids
        return np.where(ids >= layout.INSTANCE_OFFSET, ids // layout.INSTANCE_OFFSET, ids).astype(np.uint8)


@dataclass
class _GroundStrip:
    x0: float
    x1: float
    label: int | None  # None: marking, image only
    color: Color
    period: float = 0.0  # dashed markings: dash every `period` metres
    dash: float = 0.0


@dataclass
class StreetDrive:
    """A generated street and everything on it; `render(i)` draws frame i.

    Build one with `synthesize_drive`.
    """

    camera: Camera
    ego_speed: float
    ground: list[_GroundStrip]
    crosswalks: list[tuple[float, float, float]]  # (world z, x0, x1)
    skyline: list[tuple[np.ndarray, int, Color]]  # (N, 3) polygon, label, color
    structures: list[_Building | _Backdrop | _Barrier]
    actors: list[_Actor]
    sky: np.ndarray  # (H, 3) uint8 background colour per row
    hood: np.ndarray | None  # (N, 2) pixel polygon of the ego vehicle's hood
    light: dict[str, float]
    texture: tuple[np.ndarray, np.ndarray]  # low- and mid-frequency noise, (H, W) float32
    noise_seed: int

    def render(self, index: int) -> SyntheticFrame:
        """Frame `index` (0-based) of the drive, 1/17 s after frame `index - 1`."""
        time = index / FRAME_RATE_HZ
        cam_z = self.ego_speed * time
        cam = self.camera
        canvas = _Canvas(cam, self.sky)
        shade = self.light["shade"]
        for polygon, label, color in self.skyline:
            canvas.polygon3d(polygon, color, label)
        self._draw_ground(canvas, cam_z)
        for structure in self.structures:
            structure.draw(canvas, cam_z, shade)
        visible = []
        for actor in self.actors:
            z = actor.depth(time, cam_z)
            if Z_NEAR < z + actor.length and z < Z_FAR and (z > 1.0 or actor.length > 2.0):
                visible.append((z, actor))
        for z, actor in sorted(visible, key=lambda item: -item[0]):
            actor.draw(canvas, z, time, shade)
        if self.hood is not None:
            canvas.polygon(self.hood, (28, 30, 34), EGO_VEHICLE)
        ids = _drop_small_instances(canvas.ids)
        image = self._finish(canvas.image, ids, np.random.default_rng([self.noise_seed, index]))
        return SyntheticFrame(image=image, instance_ids=ids)

    def _draw_ground(self, canvas: _Canvas, cam_z: float) -> None:
        for strip in self.ground:
            if strip.period == 0.0:
                quad = _ground_quads(strip.x0, strip.x1, np.array([Z_NEAR]), np.array([Z_FAR]))[0]
                canvas.polygon3d(quad, strip.color, strip.label)
                continue
            first = math.floor((cam_z + Z_NEAR) / strip.period) * strip.period - cam_z
            starts = np.arange(first, Z_FAR, strip.period)
            canvas.quads(_ground_quads(strip.x0, strip.x1, starts, starts + strip.dash), strip.color)
        for z, x0, x1 in self.crosswalks:
            xs = np.arange(x0 + 0.2, x1 - 0.5, 1.0)
            near = np.full(len(xs), z - cam_z)
            canvas.quads(_ground_quads(xs, xs + 0.5, near, near + 3.0), (215, 215, 210))

    def _finish(self, image: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Texture by class, haze, lighting, sensor noise and a slight blur -> uint8 RGB."""
        labels = np.where(ids >= layout.INSTANCE_OFFSET, ids // layout.INSTANCE_OFFSET, ids)
        low, mid = self.texture
        fine = rng.standard_normal(ids.shape, dtype=np.float32)
        amp = _TEXTURE_AMPLITUDE[labels]  # (H, W, 3)
        factor = 1.0 + amp[..., 0] * low + amp[..., 1] * mid + amp[..., 2] * fine
        out = image.astype(np.float32) * factor[..., None]
        rows = np.arange(self.camera.height, dtype=np.float32)
        haze = self.light["haze"] * np.exp(-np.abs(rows - self.camera.horizon) / (0.12 * self.camera.height))
        haze_color = self.sky[int(np.clip(self.camera.horizon, 0, self.camera.height - 1))].astype(np.float32)
        out = out * (1 - haze[:, None, None]) + haze_color * haze[:, None, None]
        tint = np.array([self.light["tint_r"], 1.0, self.light["tint_b"]], dtype=np.float32)
        out = (out * tint * self.light["brightness"] - 128.0) * self.light["contrast"] + 128.0
        out += rng.standard_normal(out.shape[:2], dtype=np.float32)[..., None] * 2.0
        out = cv2.GaussianBlur(np.clip(out, 0, 255), (3, 3), 0.6)
        return out.astype(np.uint8)


def _ground_quads(x0: float | np.ndarray, x1: float | np.ndarray, z0: np.ndarray, z1: np.ndarray) -> np.ndarray:
    """(K, 4, 3) ground rectangles [x0, x1] x [z0, z1], near ends clamped to Z_NEAR."""
    z0 = np.maximum(z0, Z_NEAR)
    z1 = np.maximum(z1, Z_NEAR)
    x0 = np.broadcast_to(x0, z0.shape)
    x1 = np.broadcast_to(x1, z0.shape)
    zero = np.zeros_like(z0)
    return np.stack(
        [np.stack(corner, -1) for corner in ((x0, zero, z0), (x1, zero, z0), (x1, zero, z1), (x0, zero, z1))], axis=1
    )


def _texture_amplitudes() -> np.ndarray:
    """(256, 3) noise amplitude per label id: low-, mid- and pixel-frequency."""
    table = np.tile(np.array([0.03, 0.03, 0.02], dtype=np.float32), (256, 1))
    table[ROAD] = (0.07, 0.05, 0.05)
    table[SIDEWALK] = (0.07, 0.08, 0.05)
    table[BUILDING] = (0.1, 0.06, 0.03)
    table[WALL] = (0.1, 0.08, 0.04)
    table[FENCE] = (0.05, 0.1, 0.06)
    table[VEGETATION] = (0.18, 0.25, 0.12)
    table[TERRAIN] = (0.16, 0.15, 0.08)
    table[SKY] = (0.12, 0.01, 0.0)
    return table


_TEXTURE_AMPLITUDE = _texture_amplitudes()


def _drop_small_instances(ids: np.ndarray) -> np.ndarray:
    """Set objects and crowds with fewer than MIN_INSTANCE_AREA visible pixels to unlabeled."""
    counts = np.bincount(ids.ravel())
    values = np.arange(len(counts))
    thing_labels = np.zeros(len(counts), dtype=bool)
    thing_labels[[i for i, t in zip(CITYSCAPES.label_ids, CITYSCAPES.is_thing) if t and i < len(counts)]] = True
    small = (counts > 0) & (counts < MIN_INSTANCE_AREA) & ((values >= layout.INSTANCE_OFFSET) | thing_labels)
    return np.where(small[ids], UNLABELED, ids).astype(np.int32)


def _spawn_range(speed: float, ego_speed: float, duration: float) -> tuple[float, float]:
    """World depths at time 0 from which an object of `speed` is in view at some time of the drive."""
    drift = (speed - ego_speed) * duration
    return min(-15.0, -15.0 - drift), max(Z_FAR, Z_FAR - drift)


def _place_along(rng: np.random.Generator, z0: float, z1: float, gap: tuple[float, float]) -> np.ndarray:
    """Depths from z0 to z1 with random spacing in `gap` (vectorized draw)."""
    count = int((z1 - z0) / gap[0]) + 2
    steps = rng.uniform(gap[0], gap[1], count)
    zs = z0 + rng.uniform(0, gap[1]) + np.cumsum(steps) - steps[0]
    return zs[zs < z1]


def _pick(rng: np.random.Generator, options: tuple) -> object:
    return options[int(rng.integers(len(options)))]


class _Tracks:
    """Next instance number per class, so every object keeps its number through a drive."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def __call__(self, label: int) -> int:
        n = self._next.get(label, 0)
        self._next[label] = n + 1
        return n


def _person_colors(rng: np.random.Generator) -> tuple[Color, Color, Color, Color]:
    hair = _pick(rng, ((30, 25, 20), (70, 50, 30), (150, 120, 80), (120, 120, 120)))
    return _pick(rng, _CLOTHES), _pick(rng, _CLOTHES), _pick(rng, _SKIN), hair


def synthesize_drive(rng: np.random.Generator, size: tuple[int, int] = (512, 1024), frames: int = 1) -> StreetDrive:
    """Generate a street for a drive of `frames` frames.

    Args:
        rng: source of all randomness (the drive is a function of its state).
        size: (height, width) of the frames in pixels.
        frames: number of frames the street must be long enough for.
    """
    height, width = size
    if height < 16 or width < 16:
        raise ValueError(f"frame size {height}x{width} is too small: use at least 16x16")
    camera = Camera(
        width=width,
        height=height,
        focal=width * rng.uniform(0.95, 1.2),
        horizon=height * rng.uniform(0.38, 0.5),
        mount_height=rng.uniform(1.2, 1.8),
    )
    ego_speed = rng.uniform(5.0, 12.0)
    duration = max(frames - 1, 0) / FRAME_RATE_HZ
    street_end = Z_FAR + ego_speed * duration + 20.0
    tracks = _Tracks()

    lane = rng.uniform(3.0, 3.6)
    lanes_ahead, lanes_oncoming = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    ego_lane = int(rng.integers(lanes_ahead))
    right_lanes_edge = (lanes_ahead - ego_lane - 0.5) * lane
    left_lanes_edge = -(ego_lane + 0.5 + lanes_oncoming) * lane
    bike_lane = rng.uniform() < 0.4
    park = {side: rng.uniform() < 0.65 for side in (-1, 1)}
    road_right = right_lanes_edge + (1.5 if bike_lane else 0.0) + (2.2 if park[1] else 0.3)
    road_left = left_lanes_edge - (2.2 if park[-1] else 0.3)
    edges = {-1: road_left, 1: road_right}
    sidewalk = {side: rng.uniform(2.0, 4.5) for side in (-1, 1)}
    verge = {side: rng.uniform(0.0, 3.0) if rng.uniform() < 0.4 else 0.0 for side in (-1, 1)}
    block_line = {side: edges[side] + side * (sidewalk[side] + verge[side]) for side in (-1, 1)}

    asphalt = int(rng.integers(60, 100))
    paving = _pick(rng, ((150, 145, 140), (175, 165, 160), (130, 130, 135), (165, 140, 140)))
    ground = [
        _GroundStrip(-300.0, 300.0, TERRAIN, _pick(rng, ((110, 120, 70), (130, 125, 85), (95, 115, 60)))),
        _GroundStrip(road_left - sidewalk[-1], road_left, SIDEWALK, paving),
        _GroundStrip(road_right, road_right + sidewalk[1], SIDEWALK, paving),
        _GroundStrip(road_left, road_right, ROAD, (asphalt, asphalt, asphalt + 4)),
        _GroundStrip(road_left - 0.25, road_left, SIDEWALK, _shade(paving, 1.15)),
        _GroundStrip(road_right, road_right + 0.25, SIDEWALK, _shade(paving, 1.15)),
    ]
    white = (225, 225, 220)
    for k in range(1, lanes_ahead + lanes_oncoming):
        boundary = left_lanes_edge + k * lane
        solid = k == lanes_oncoming
        ground.append(_GroundStrip(boundary - 0.07, boundary + 0.07, None, white, 0.0 if solid else 9.0, 3.0))
    for boundary in (left_lanes_edge, right_lanes_edge):
        ground.append(_GroundStrip(boundary - 0.07, boundary + 0.07, None, white))
    if bike_lane:
        ground.append(_GroundStrip(right_lanes_edge + 1.4, right_lanes_edge + 1.5, None, white, 4.0, 2.0))
    crosswalk_z = _place_along(rng, 12.0, street_end, (60.0, 140.0))
    crosswalks = [(float(z), left_lanes_edge, right_lanes_edge) for z in crosswalk_z]

    structures: list = []
    actors: list[_Actor] = []
    for side in (-1, 1):
        structures += _block_line(rng, side, block_line[side], street_end)
        actors += _street_furniture(rng, side, edges[side], sidewalk[side], verge[side], street_end, tracks)
        actors += _pedestrians(rng, side, edges[side], sidewalk[side], ego_speed, duration, tracks)
        if park[side]:
            actors += _parked_cars(rng, edges[side] - side * 1.15, street_end, tracks)
    structures.sort(key=lambda s: -s.z0)  # far to near; stable, so a backdrop stays behind its barrier
    actors += _traffic(rng, lanes_ahead, lanes_oncoming, ego_lane, lane, ego_speed, duration, tracks)
    if bike_lane:
        actors += _cyclists(rng, right_lanes_edge + 0.75, ego_speed, duration, tracks)

    sky_top = np.array(_pick(rng, ((70, 120, 190), (120, 150, 190), (170, 180, 195), (95, 135, 185))), dtype=np.float32)
    sky_low = np.minimum(sky_top + rng.uniform(40, 90), 255)
    t = np.clip(np.arange(height, dtype=np.float32) / max(camera.horizon, 1.0), 0, 1)[:, None]
    sky = (sky_top * (1 - t) + sky_low * t).astype(np.uint8)
    light = {
        "brightness": rng.uniform(0.75, 1.2),
        "contrast": rng.uniform(0.8, 1.15),
        "tint_r": rng.uniform(0.92, 1.08),
        "tint_b": rng.uniform(0.92, 1.08),
        "haze": rng.uniform(0.05, 0.35),
        "shade": rng.uniform(0.85, 1.1),
    }
    return StreetDrive(
        camera=camera,
        ego_speed=ego_speed,
        ground=ground,
        crosswalks=crosswalks,
        skyline=_skyline(rng, camera, sky_low),
        structures=structures,
        actors=actors,
        sky=sky,
        hood=_hood(rng, camera) if rng.uniform() < 0.5 else None,
        light=light,
        texture=(_noise(rng, size, 48, cv2.INTER_CUBIC), _noise(rng, size, 5, cv2.INTER_LINEAR)),
        noise_seed=int(rng.integers(2**31)),
    )


def _noise(rng: np.random.Generator, size: tuple[int, int], cell: int, interpolation: int) -> np.ndarray:
    """(H, W) float32 smooth noise, unit-ish variance, features of about `cell` pixels."""
    height, width = size
    small = rng.standard_normal((height // cell + 2, width // cell + 2), dtype=np.float32)
    return cv2.resize(small, (width, height), interpolation=interpolation)


def _hood(rng: np.random.Generator, camera: Camera) -> np.ndarray:
    """Pixel polygon of the ego vehicle's bonnet along the bottom of the image."""
    w, h = camera.width, camera.height
    rise = h * rng.uniform(0.06, 0.14)
    xs = np.linspace(0, w, 17)
    top = h - rise * (1 - 0.45 * ((xs - w / 2) / (w / 2)) ** 2)
    return np.vstack([np.column_stack([xs, top]), [[w, h + 2], [0, h + 2]]])


def _skyline(rng: np.random.Generator, camera: Camera, haze: np.ndarray) -> list[tuple[np.ndarray, int, Color]]:
    """Far buildings and tree lines at Z_FAR, across the whole view."""
    reach = Z_FAR * camera.width / camera.focal
    parts = []
    x = -reach
    while x < reach:
        w = rng.uniform(8.0, 30.0)
        if rng.uniform() < 0.25:
            xs = np.linspace(x, x + w, 9)
            top = rng.uniform(6.0, 14.0, len(xs))
            label, base = VEGETATION, np.array(_pick(rng, _GREENS), dtype=np.float32)
        else:
            xs = np.array([x, x + w])
            top = np.full(2, rng.uniform(8.0, 45.0))
            label, base = BUILDING, np.array(_pick(rng, _FACADES), dtype=np.float32)
        color = tuple(int(v) for v in 0.45 * base + 0.55 * haze)
        polygon = np.vstack(
            [np.column_stack([xs, top, np.full(len(xs), Z_FAR)]), [[x + w, 0.0, Z_FAR], [x, 0.0, Z_FAR]]]
        )
        parts.append((polygon, label, color))
        x += w
    return parts


def _block_line(rng: np.random.Generator, side: int, face: float, street_end: float) -> list:
    """Buildings, and between them vegetation backdrops, walls and fences, along one side."""
    items: list = []
    z = -40.0
    while z < street_end:
        if rng.uniform() < 0.75:
            length = rng.uniform(10.0, 40.0)
            height = rng.uniform(7.0, 28.0)
            floor, spacing = rng.uniform(2.9, 3.6), rng.uniform(2.2, 3.6)
            win_w, win_h = rng.uniform(0.9, min(1.7, spacing - 0.5)), rng.uniform(1.2, 1.8)
            col = np.arange(z + 1.0, z + length - win_w - 0.8, spacing)
            row = np.arange(1.0, height - win_h - 0.5, floor)
            zz, yy = np.meshgrid(col, row)
            windows = np.column_stack([zz.ravel(), yy.ravel(), np.full(zz.size, win_w), np.full(zz.size, win_h)])
            if rng.uniform() < 0.4 and len(row):  # shop windows on the ground floor
                shop = windows[:, 1] == row[0]
                windows[shop, 1], windows[shop, 3] = 0.5, 2.3
            items.append(
                _Building(
                    side=side,
                    face=face + side * rng.uniform(0.0, 1.0),
                    z0=z,
                    z1=z + length,
                    height=height,
                    depth=rng.uniform(10.0, 20.0),
                    color=_pick(rng, _FACADES),
                    windows=windows,
                    window_groups=rng.integers(0, 3, len(windows)),
                    window_colors=((40, 50, 60), (70, 80, 95), (120, 130, 140)),
                )
            )
        else:
            length = rng.uniform(6.0, 25.0)
            zs = np.linspace(z, z + length, max(3, int(length / 1.5)))
            if rng.uniform() < 0.7:
                items.append(_Backdrop(face + side * 2.0, zs, rng.uniform(3.0, 10.0) + rng.uniform(-1.0, 1.0, len(zs)),
                                       _pick(rng, _GREENS)))
            kind = rng.uniform()
            if kind < 0.35:
                items.append(_Barrier(WALL, face, z, z + length, rng.uniform(0.8, 2.8), _pick(rng, _FACADES)))
            elif kind < 0.75:
                items.append(_Barrier(FENCE, face, z, z + length, rng.uniform(1.0, 2.0),
                                      _pick(rng, ((150, 140, 130), (110, 100, 90), (170, 170, 165)))))
        z += length
    return items


def _street_furniture(rng: np.random.Generator, side: int, edge: float, sidewalk: float, verge: float,
                      street_end: float, tracks: _Tracks) -> list[_Actor]:
    """Lamps, signs, traffic lights near the kerb; trees and bushes; parked two-wheelers."""
    actors: list[_Actor] = []
    kerb = edge + side * 0.5
    for z in _place_along(rng, -10.0, street_end, (18.0, 40.0)):
        roll = rng.uniform()
        if roll < 0.5:
            actors.append(_StreetPole(kerb, z, kind="lamp", height=rng.uniform(6.0, 9.0), toward_road=-side,
                                      arm=rng.uniform(1.0, 2.5)))
        elif roll < 0.8:
            actors.append(_StreetPole(kerb, z, kind="sign", height=rng.uniform(2.4, 3.3), toward_road=-side,
                                      sign_shape=str(_pick(rng, ("circle", "triangle", "square", "diamond")))))
        else:
            kind = str(_pick(rng, ("light", "overhead")))
            actors.append(_StreetPole(kerb, z, kind=kind, height=rng.uniform(3.0, 5.5), toward_road=-side,
                                      arm=rng.uniform(2.5, 5.0), lit=int(rng.integers(3))))
    if rng.uniform() < 0.6:
        x_tree = edge + side * (sidewalk + verge / 2 if verge > 1.0 else 1.0)
        for z in _place_along(rng, -10.0, street_end, (7.0, 20.0)):
            bush = verge > 1.0 and rng.uniform() < 0.3
            radius = rng.uniform(0.5, 1.0) if bush else rng.uniform(1.4, 3.2)
            trunk = 0.0 if bush else rng.uniform(2.0, 4.5)
            lobes = rng.uniform(-0.6, 0.6, (int(rng.integers(4, 8)), 3)) * radius
            lobes[:, 1] += trunk + radius
            lobes[:, 2] = radius * rng.uniform(0.55, 0.85, len(lobes))
            actors.append(_Tree(x_tree + rng.uniform(-0.3, 0.3), z, trunk=trunk, lobes=lobes,
                                colors=tuple(_pick(rng, _GREENS) for _ in range(3))))
    if rng.uniform() < 0.5:
        x_bikes = edge + side * (sidewalk - 0.8)
        for z in _place_along(rng, 3.0, street_end, (15.0, 60.0)):
            motor = rng.uniform() < 0.3
            actors.append(_ParkedTwoWheeler(x_bikes, z, length=1.2, track=tracks(MOTORCYCLE if motor else BICYCLE),
                                            motorcycle=motor, angle=rng.uniform(-1.2, 1.2),
                                            color=_pick(rng, _CAR_COLORS if motor else _CLOTHES)))
    return actors


def _pedestrians(rng: np.random.Generator, side: int, edge: float, sidewalk: float, ego_speed: float,
                 duration: float, tracks: _Tracks) -> list[_Actor]:
    """People on one sidewalk, walking or standing, and sometimes a crowd."""
    actors: list[_Actor] = []
    walking = 0.0 if rng.uniform() < 0.3 else rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.6)
    lo, hi = _spawn_range(walking, ego_speed, duration)
    for _ in range(int(rng.poisson(rng.uniform(0.02, 0.1) * (hi - lo)))):
        speed = 0.0 if rng.uniform() < 0.3 else walking * rng.uniform(0.7, 1.2)
        actors.append(
            _Pedestrian(edge + side * rng.uniform(0.6, sidewalk - 0.3), rng.uniform(max(lo, 3.0), hi),
                        speed=speed, track=tracks(PERSON), scale=rng.uniform(0.85, 1.1),
                        phase=rng.uniform(0, 2 * math.pi), colors=_person_colors(rng))
        )
    if rng.uniform() < 0.2:
        centre, speed = rng.uniform(25.0, 80.0), 0.0 if rng.uniform() < 0.5 else rng.uniform(0.8, 1.4)
        for _ in range(int(rng.integers(4, 10))):
            actors.append(
                _Pedestrian(edge + side * rng.uniform(0.5, sidewalk - 0.3), centre + rng.uniform(-1.5, 1.5),
                            speed=speed, scale=rng.uniform(0.85, 1.1), phase=rng.uniform(0, 2 * math.pi),
                            colors=_person_colors(rng), crowd=True)
            )
    return actors


def _vehicle(rng: np.random.Generator, x: float, z: float, speed: float, oncoming: bool, tracks: _Tracks,
             heavy: bool) -> _Vehicle:
    """A random car, or (when `heavy` may apply) a truck, bus or tram."""
    roll = rng.uniform() if heavy else 1.0
    if roll < 0.03 and oncoming:
        label, w, h, length = TRAIN, 2.4, 3.4, rng.uniform(20.0, 30.0)
        color = _pick(rng, ((235, 235, 230), (200, 30, 35)))
    elif roll < 0.1:
        label, w, h, length, color = BUS, 2.55, rng.uniform(3.0, 3.3), 12.0, _pick(rng, _BUS_COLORS)
    elif roll < 0.2:
        label, w, h, length, color = TRUCK, 2.45, rng.uniform(3.0, 3.7), rng.uniform(6.0, 9.0), _pick(rng, _CAR_COLORS)
    else:
        label, w, h, length = CAR, rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.6), rng.uniform(4.0, 4.8)
        color = _pick(rng, _CAR_COLORS)
    return _Vehicle(x, z, speed=speed, length=length, track=tracks(label), label=label, width=w, height=h, color=color,
                    oncoming=oncoming)


def _parked_cars(rng: np.random.Generator, x: float, street_end: float, tracks: _Tracks) -> list[_Actor]:
    """Cars parked nose to tail along a parking lane, with gaps."""
    cars = []
    z = rng.uniform(-20.0, 5.0)
    while z < street_end:
        car = _vehicle(rng, x + rng.uniform(-0.15, 0.15), z, 0.0, False, tracks, heavy=False)
        if rng.uniform() < 0.8:
            cars.append(car)
        z += car.length + rng.uniform(0.8, 4.0) + (rng.uniform(5.0, 20.0) if rng.uniform() < 0.2 else 0.0)
    return cars


def _traffic(rng: np.random.Generator, lanes_ahead: int, lanes_oncoming: int, ego_lane: int, lane: float,
             ego_speed: float, duration: float, tracks: _Tracks) -> list[_Actor]:
    """Moving vehicles: one speed per lane, so vehicles of a lane never collide."""
    actors: list[_Actor] = []
    for k in range(lanes_ahead + lanes_oncoming):
        oncoming = k < lanes_oncoming
        x = (k - lanes_oncoming - ego_lane) * lane
        if oncoming:
            speed = -rng.uniform(6.0, 14.0)
        elif k - lanes_oncoming == ego_lane:
            speed = ego_speed
        else:
            speed = ego_speed + rng.uniform(-3.0, 3.0)
        lo, hi = _spawn_range(speed, ego_speed, duration)
        if speed == ego_speed:
            lo = 8.0
        z = lo + rng.uniform(0.0, 25.0)
        while z < hi:
            vehicle = _vehicle(rng, x + rng.uniform(-0.3, 0.3), z, speed, oncoming, tracks, heavy=True)
            actors.append(vehicle)
            z += vehicle.length + rng.uniform(8.0, 45.0)
    return actors


def _cyclists(rng: np.random.Generator, x: float, ego_speed: float, duration: float, tracks: _Tracks) -> list[_Actor]:
    """Riders on bicycles or motorcycles in the bike lane, all at one speed."""
    speed = rng.uniform(3.0, 7.0)
    lo, hi = _spawn_range(speed, ego_speed, duration)
    actors: list[_Actor] = []
    for z in _place_along(rng, max(lo, 4.0), hi, (6.0, 40.0)):
        motor = rng.uniform() < 0.25
        actors.append(
            _Cyclist(x + rng.uniform(-0.2, 0.2), z, speed=speed, length=2.0 if motor else 1.7,
                     track=tracks(MOTORCYCLE if motor else BICYCLE), motorcycle=motor, rider_track=tracks(RIDER),
                     phase=rng.uniform(0, 2 * math.pi), colors=_person_colors(rng),
                     frame_color=_pick(rng, _CAR_COLORS))
        )
    return actors


# ---------------------------------------------------------------------------
# Writing a data set in the Cityscapes layout.
# ---------------------------------------------------------------------------


def frame_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of drive `index` of `split`; independent of how many drives are made."""
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


@dataclass(frozen=True)
class _DatasetJob:
    """What every frame of one `write_dataset` call shares (sent once to each worker process)."""

    out: Path
    n: int
    split: str
    size: tuple[int, int]
    seed: int
    sequence: bool
    metadata: ClassMetadata


@functools.lru_cache(maxsize=1)
def _sequence_drive(job: _DatasetJob) -> StreetDrive:
    """The one drive of a sequence job, synthesized once per process."""
    return synthesize_drive(frame_rng(job.seed, job.split, 0), job.size, job.n)


def _write_frame(job: _DatasetJob, index: int, colors: np.ndarray) -> tuple[layout.FrameName, dict, dict]:
    """Write frame `index` of `job` (image and every ground-truth file but the panoptic json).

    `colors` maps label ids to the color image's RGB. Returns the frame's name and
    its panoptic json entries (image, annotation). A pure function of (job, index):
    any process may write any frame.
    """
    if job.sequence:
        name, frame = layout.FrameName(_CITIES[job.split][0], 0, index), _sequence_drive(job).render(index)
    else:
        cities = _CITIES[job.split]
        name = layout.FrameName(cities[index % len(cities)], index, 19)
        frame = synthesize_drive(frame_rng(job.seed, job.split, index), job.size, 1).render(0)
    out, split, metadata = job.out, job.split, job.metadata
    label_ids = frame.label_ids
    layout.write_png(layout.image_path(out, split, name), frame.image)
    layout.write_png(layout.gt_path(out, split, name, layout.LABEL_IDS_SUFFIX), label_ids)
    layout.write_png(layout.gt_path(out, split, name, layout.INSTANCE_IDS_SUFFIX), frame.instance_ids.astype(np.uint16))
    layout.write_png(layout.gt_path(out, split, name, layout.COLOR_SUFFIX), colors[label_ids])
    panoptic, segments = layout.panoptic_from_instance_ids(frame.instance_ids, metadata)
    annotation = layout.panoptic_annotation_entry(name, segments)
    layout.write_png(layout.panoptic_png_dir(out, split) / annotation["file_name"], layout.id_to_rgb(panoptic))
    return name, layout.panoptic_image_entry(name, *job.size), annotation


def _write_frames(job: _DatasetJob, indices: range) -> list[tuple[layout.FrameName, dict, dict]]:
    colors = np.zeros((layout.LABEL_ID_TABLE_SIZE, 3), dtype=np.uint8)
    colors[list(job.metadata.label_ids)] = job.metadata.colors
    return [_write_frame(job, i, colors) for i in indices]


def write_dataset(out: Path, n: int, split: str = "train", size: tuple[int, int] = (512, 1024), seed: int = 0,
                  sequence: bool = False, metadata: ClassMetadata = CITYSCAPES,
                  workers: int = 1) -> list[layout.FrameName]:
    """Write `n` synthetic frames of `split` under `out` in the Cityscapes layout.

    Independent scenes are frames ``{city}_{i:06d}_000019`` of several cities
    (like the annotated frames of Cityscapes); with `sequence` the frames are
    ``{city}_000000_{i:06d}``, consecutive 17 Hz frames of one drive. Writes the
    image, labelIds, instanceIds (16 bit), color and the panoptic json + PNGs.
    With `workers` > 1 the frames are rendered by that many processes, in
    contiguous blocks; the files are the same byte for byte as with one.

    Raises:
        ValueError: for a bad split, count, size or number of workers.
        FileExistsError: when `out` already holds images of `split`.
    """
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}: choose one of {sorted(_SPLIT_CODES)}")
    if n < 1:
        raise ValueError(f"number of frames must be at least 1, got {n}")
    if workers < 1:
        raise ValueError(f"number of worker processes must be at least 1, got {workers}")
    out = Path(out)
    image_dir = out / "leftImg8bit" / split
    if image_dir.is_dir() and any(image_dir.iterdir()):
        raise FileExistsError(f"{image_dir} already holds images: write split {split!r} into an empty directory")
    job = _DatasetJob(out, n, split, tuple(size), seed, sequence, metadata)
    workers = min(workers, n)
    if workers == 1:
        frames = _write_frames(job, range(n))
    else:
        # Contiguous blocks: a sequence's drive is synthesized once per worker, not once per frame.
        bounds = np.linspace(0, n, workers + 1).round().astype(int)
        blocks = [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        # spawn: a fresh interpreter per worker, safe whatever threads the caller runs (torch, ROS 2).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            frames = [frame for block in pool.map(_write_frames, [job] * workers, blocks) for frame in block]
    names = [name for name, _, _ in frames]
    order = np.argsort([name.stem for name in names], kind="stable")  # file order, as createPanopticImgs lists them
    layout.write_panoptic_json(layout.panoptic_json_path(out, split), [frames[i][1] for i in order],
                               [frames[i][2] for i in order], metadata)
    return names
