"""Numpy rasteriser for the two camera views of the tabletop.

* third-person: a fixed oblique camera; a point at height ``h`` appears ``HEIGHT_SHIFT * h``
  further up the image than its footprint, objects in the air cast a dark shadow straight down,
  and the arm is drawn as a column above the gripper, so height is visible;
* wrist: a down-looking pinhole camera mounted on the gripper, rotating with its yaw; the scene
  grows as the gripper descends and the two fingers are visible at the sides.

Each object is painted by mapping every pixel back to the object's plane (exact inverse of the
projection) and testing whether it falls inside the object's rotated square.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from foretell.specprune.sim.task import BLOCK_HALF, BLOCK_HEIGHT, COLOURS, PAD_HALF, TABLE_HALF

X_RANGE = (-1.15, 1.15)          # third-person view: world x across the image
YAPP_RANGE = (-1.15, 1.45)       # apparent y (y + HEIGHT_SHIFT * h) down the image
HEIGHT_SHIFT = 0.5
WRIST_CAM_ABOVE = 0.15           # wrist camera height above the fingertips
WRIST_TAN = 0.9                  # tan(half field of view)
TABLE_RGB = np.array([0.78, 0.70, 0.58])
FLOOR_RGB = np.array([0.28, 0.28, 0.31])
ARM_RGB = np.array([0.62, 0.62, 0.66])
PALM_RGB = np.array([0.30, 0.30, 0.33])
FINGER_RGB = np.array([0.16, 0.16, 0.18])
SHADOW = 0.55


@lru_cache(maxsize=8)
def _unit_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres in [0, 1] (column fraction, row fraction)."""
    c = (np.arange(size) + 0.5) / size
    return np.meshgrid(c, c, indexing="xy")


def _third_plane(size: int, h: float) -> tuple[np.ndarray, np.ndarray]:
    """World (x, y) seen by each third-person pixel on the horizontal plane at height ``h``."""
    fu, fv = _unit_grid(size)
    x = X_RANGE[0] + fu * (X_RANGE[1] - X_RANGE[0])
    y = YAPP_RANGE[1] - fv * (YAPP_RANGE[1] - YAPP_RANGE[0]) - HEIGHT_SHIFT * h
    return x, y


def _wrist_local(size: int, d: float) -> tuple[np.ndarray, np.ndarray]:
    """Gripper-frame offsets seen by each wrist pixel on a plane ``d`` below the camera."""
    fu, fv = _unit_grid(size)
    return (fu - 0.5) * 2 * WRIST_TAN * d, (0.5 - fv) * 2 * WRIST_TAN * d


def _wrist_plane(size: int, h: float, gxyz: np.ndarray, yaw: float):
    d = gxyz[2] + WRIST_CAM_ABOVE - h
    lx, ly = _wrist_local(size, max(d, 1e-3))
    c, s = np.cos(yaw), np.sin(yaw)
    return gxyz[0] + c * lx - s * ly, gxyz[1] + s * lx + c * ly


def _in_square(x, y, cx, cy, yaw, half_x, half_y=None) -> np.ndarray:
    half_y = half_x if half_y is None else half_y
    dx, dy = x - cx, y - cy
    c, s = np.cos(yaw), np.sin(yaw)
    return (np.abs(c * dx + s * dy) <= half_x) & (np.abs(-s * dx + c * dy) <= half_y)


def _background(x, y) -> np.ndarray:
    on_table = (np.abs(x) <= TABLE_HALF) & (np.abs(y) <= TABLE_HALF)
    shade = 0.86 + 0.14 * (np.clip(y, -1, 1) + 1) / 2
    img = np.where(on_table[..., None], TABLE_RGB * shade[..., None], FLOOR_RGB)
    return img


def _paint_pads(img, plane, state):
    x, y = plane
    lay = state.layout
    for xy, name in zip(lay.pad_xy, lay.pad_colours):
        rgb = np.array(COLOURS[name])
        outer = _in_square(x, y, xy[0], xy[1], 0.0, PAD_HALF)
        inner = _in_square(x, y, xy[0], xy[1], 0.0, PAD_HALF - 0.025)
        img[outer] = rgb * 0.65
        img[inner] = rgb * 0.5 + 0.5


def _block_top(state, i: int) -> float:
    return state.gripper_xyz[2] + 0.02 if i == state.held else BLOCK_HEIGHT


def _order(state) -> list[int]:
    """Blocks painted back to front (resting ones by depth, the held one last)."""
    idx = [i for i in range(len(state.block_xy)) if i != state.held]
    idx.sort(key=lambda i: -state.block_xy[i, 1])
    return idx + ([state.held] if state.held >= 0 else [])


def _finger_offset(state) -> float:
    if not state.closed:
        return 0.095
    return BLOCK_HALF + 0.012 if state.held >= 0 else 0.03


def render_third(state, size: int) -> np.ndarray:
    """The fixed third-person view, float RGB in [0, 1], shape (size, size, 3)."""
    img = _background(*_third_plane(size, 0.0))
    _paint_pads(img, _third_plane(size, 0.0), state)
    g, yaw = state.gripper_xyz, state.gripper_yaw
    held = state.held
    for i in _order(state):
        if i == held:
            continue
        rgb = np.array(COLOURS[state.layout.block_colours[i]])
        cx, cy = state.block_xy[i]
        img[_in_square(*_third_plane(size, 0.0), cx, cy, state.block_yaw[i], BLOCK_HALF)] = rgb * 0.5
        img[_in_square(*_third_plane(size, BLOCK_HEIGHT), cx, cy, state.block_yaw[i], BLOCK_HALF)] = rgb
    # shadows of the gripper (and its block) straight down on the table
    x0, y0 = _third_plane(size, BLOCK_HEIGHT if _over_block(state) else 0.0)
    shadow = _in_square(x0, y0, g[0], g[1], yaw, 0.11, 0.045)
    if held >= 0:
        shadow |= _in_square(x0, y0, g[0], g[1], state.block_yaw[held], BLOCK_HALF)
    img[shadow] *= SHADOW
    # arm column from the palm up, then the held block, fingers and palm
    fu, fv = _unit_grid(size)
    xa = X_RANGE[0] + fu * (X_RANGE[1] - X_RANGE[0])
    ya = YAPP_RANGE[1] - fv * (YAPP_RANGE[1] - YAPP_RANGE[0])
    top_app, bottom_app = g[1] + HEIGHT_SHIFT * 1.2, g[1] + HEIGHT_SHIFT * (g[2] + 0.06)
    img[(np.abs(xa - g[0]) <= 0.03) & (ya >= bottom_app) & (ya <= top_app)] = ARM_RGB
    if held >= 0:
        rgb = np.array(COLOURS[state.layout.block_colours[held]])
        top = _block_top(state, held)
        img[_in_square(*_third_plane(size, top - BLOCK_HEIGHT), g[0], g[1], state.block_yaw[held],
                       BLOCK_HALF)] = rgb * 0.5
        img[_in_square(*_third_plane(size, top), g[0], g[1], state.block_yaw[held], BLOCK_HALF)] = rgb
    w = _finger_offset(state)
    xf, yf = _third_plane(size, g[2] + 0.03)
    c, s = np.cos(yaw), np.sin(yaw)
    for sign in (-1, 1):
        img[_in_square(xf, yf, g[0] + sign * w * c, g[1] + sign * w * s, yaw, 0.018, 0.03)] = FINGER_RGB
    img[_in_square(*_third_plane(size, g[2] + 0.06), g[0], g[1], yaw, 0.115, 0.035)] = PALM_RGB
    return img


def _over_block(state) -> bool:
    g = state.gripper_xyz
    others = [i for i in range(len(state.block_xy)) if i != state.held]
    return any(np.all(np.abs(state.block_xy[i] - g[:2]) <= BLOCK_HALF) for i in others)


def render_wrist(state, size: int) -> np.ndarray:
    """The gripper-mounted downward view, float RGB in [0, 1], shape (size, size, 3)."""
    g, yaw = state.gripper_xyz, state.gripper_yaw
    table = _wrist_plane(size, 0.0, g, yaw)
    img = _background(*table)
    _paint_pads(img, table, state)
    for i in _order(state):
        rgb = np.array(COLOURS[state.layout.block_colours[i]])
        top = _block_top(state, i)
        cx, cy = state.block_xy[i]
        bottom = top - BLOCK_HEIGHT
        img[_in_square(*_wrist_plane(size, bottom, g, yaw), cx, cy, state.block_yaw[i], BLOCK_HALF)] = rgb * 0.5
        img[_in_square(*_wrist_plane(size, top, g, yaw), cx, cy, state.block_yaw[i], BLOCK_HALF)] = rgb
    lx, ly = _wrist_local(size, WRIST_CAM_ABOVE - 0.03)
    w = _finger_offset(state)
    for sign in (-1, 1):
        img[(np.abs(lx - sign * w) <= 0.018) & (np.abs(ly) <= 0.03)] = FINGER_RGB
    return img


def render_views(state, size: int) -> dict[str, np.ndarray]:
    """Both views of ``state`` as uint8 RGB arrays of shape (size, size, 3)."""
    return {name: (np.clip(fn(state, size), 0, 1) * 255 + 0.5).astype(np.uint8)
            for name, fn in (("third", render_third), ("wrist", render_wrist))}
