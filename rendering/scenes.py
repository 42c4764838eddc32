"""Procedurally rendered indoor scenes with exact metric depth: the built-in sample data.

A room (floor, walls, ceiling; pictures, windows, doors and baseboards on the
walls) is furnished with pieces built from boxes, cylinders and spheres (beds,
sofas, tables, chairs, shelves of books, lamps, plants, boxes), lit by two
ceiling lights (one casting shadows), and ray-cast through a pinhole camera with
the NYU Depth v2 intrinsics. The depth of every pixel is exact (z-depth along
the optical axis, in metres, as NYU's). The pictures carry the cues a network
learns depth from: perspective, texture gradients, occlusion, shading and
cast shadows. Everything is drawn from a seeded numpy Generator, so the same
arguments give the same pictures.
"""

import itertools
import math

import numpy as np

from data import scaled_intrinsics
from densedepth.depth import NYU_DEPTH_RANGE

EPS = 1e-4

# ----------------------------------------------------------------------------- procedural textures


def hash01(*coords, seed=0):
    """Deterministic pseudo-random values in [0, 1) for integer lattice coordinates."""
    h = np.full(np.shape(coords[0]), (seed * 0x9E3779B1) & 0xFFFFFFFF, dtype=np.uint32)
    for index, c in enumerate(coords):
        h ^= np.asarray(c).astype(np.int64).astype(np.uint32) * np.uint32(
            (0x85EBCA6B + 0x632BE5AB * index) & 0xFFFFFFFF
        )
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)


def value_noise(u, v, seed):
    """Smooth 2-D value noise in [0, 1)."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    a, b = hash01(iu, iv, seed=seed), hash01(iu + 1, iv, seed=seed)
    c, d = hash01(iu, iv + 1, seed=seed), hash01(iu + 1, iv + 1, seed=seed)
    return (a + (b - a) * fu) + ((c + (d - c) * fu) - (a + (b - a) * fu)) * fv


def surface_uv(points, normals):
    """Planar texture coordinates on the plane the normal mostly faces."""
    axis = np.abs(normals).argmax(axis=1)
    u = np.where(axis == 0, points[:, 2], points[:, 0])
    v = np.where(axis == 1, points[:, 2], points[:, 1])
    return u, v, axis


class Material:
    """A procedural albedo: kind in paint, wood, tiles, fabric, books, leaves, cardboard, metal."""

    def __init__(self, kind, color, rng, scale=1.0):
        self.kind = kind
        self.color = np.asarray(color, dtype=np.float32)
        self.scale = scale
        self.seed = int(rng.integers(1 << 30))
        self.alt_color = np.clip(self.color * rng.uniform(0.6, 1.3, 3), 0.02, 0.95).astype(np.float32)

    def albedo(self, points, normals):
        u, v, axis = surface_uv(points, normals)
        tint = getattr(self, f"_{self.kind}")(u, v, axis, points, normals)
        if tint.ndim == 1:
            tint = tint[:, None] * self.color
        return np.clip(tint, 0.0, 1.0)

    def _paint(self, u, v, axis, points, normals):
        return 1 + 0.06 * (value_noise(u * 2.5, v * 2.5, self.seed) - 0.5)

    def _metal(self, u, v, axis, points, normals):
        return 1 + 0.1 * (value_noise(u * 40, v * 2, self.seed) - 0.5)

    def _fabric(self, u, v, axis, points, normals):
        coarse = value_noise(u * 6, v * 6, self.seed)
        fine = value_noise(u * 40, v * 40, self.seed + 1)
        return 0.85 + 0.2 * coarse + 0.08 * fine

    def _leaves(self, u, v, axis, points, normals):
        blotch = value_noise(u * 25, v * 25, self.seed)
        return 0.5 + 0.8 * blotch

    def _wood(self, u, v, axis, points, normals):
        width = 0.14 * self.scale
        along, across = np.where(axis == 1, u, v), np.where(axis == 1, v, u)
        plank = np.floor(across / width)
        length = 1.2 * self.scale
        segment = np.floor(along / length + hash01(plank, seed=self.seed))
        shade = 0.78 + 0.34 * hash01(plank, segment, seed=self.seed)
        grain = 1 + 0.07 * np.sin(2 * np.pi * (along * 1.5 + 3 * value_noise(across * 30, along * 2, self.seed + 2)))
        gap = np.minimum(across / width - plank, 1 - (across / width - plank)) < 0.035
        return np.where(gap, 0.45, shade * grain)

    def _tiles(self, u, v, axis, points, normals):
        size = 0.45 * self.scale
        iu, iv = np.floor(u / size), np.floor(v / size)
        fu, fv = u / size - iu, v / size - iv
        checker = ((iu + iv) % 2 == 0)[:, None]
        base = np.where(checker, self.color, self.alt_color)
        tint = base * (0.94 + 0.1 * hash01(iu, iv, seed=self.seed))[:, None]
        grout = (np.minimum(fu, 1 - fu) < 0.03) | (np.minimum(fv, 1 - fv) < 0.03)
        return np.where(grout[:, None], 0.8 * np.float32(0.85), tint)

    def _cardboard(self, u, v, axis, points, normals):
        tape = np.abs(u - np.round(u / 0.6) * 0.6) < 0.025
        return np.where(tape, 1.25, 0.9 + 0.15 * value_noise(u * 10, v * 10, self.seed))

    def _books(self, u, v, axis, points, normals):
        """A bookshelf front (the local +z face): shelves of coloured spines; other faces plain wood."""
        shelf_height = 0.36
        shelf = np.floor(points[:, 1] / shelf_height)
        height_in_shelf = points[:, 1] / shelf_height - shelf
        cell = np.floor(points[:, 0] / 0.035)
        book_top = 0.55 + 0.38 * hash01(cell, shelf, seed=self.seed)
        spine = PALETTE[(hash01(cell, shelf, seed=self.seed + 1) * len(PALETTE)).astype(int)]
        spine = spine * (0.8 + 0.2 * hash01(cell, shelf, seed=self.seed + 2))[:, None]
        board = height_in_shelf < 0.07
        behind = height_in_shelf > book_top
        front = normals[:, 2] > 0.5
        wood = np.broadcast_to(self.color, spine.shape)
        out = np.where((board | behind)[:, None], wood * np.where(behind, 0.45, 1.0)[:, None], spine)
        return np.where(front[:, None], out, wood)


PALETTE = np.array(
    [
        [0.55, 0.1, 0.1],
        [0.1, 0.25, 0.5],
        [0.15, 0.4, 0.2],
        [0.75, 0.6, 0.2],
        [0.85, 0.85, 0.8],
        [0.2, 0.2, 0.22],
        [0.5, 0.3, 0.55],
        [0.8, 0.4, 0.15],
        [0.3, 0.55, 0.6],
    ],
    dtype=np.float32,
)
WOOD_COLORS = [(0.55, 0.36, 0.2), (0.7, 0.52, 0.32), (0.38, 0.23, 0.13), (0.8, 0.66, 0.46), (0.28, 0.18, 0.12)]
WALL_COLORS = [
    (0.85, 0.83, 0.78),
    (0.78, 0.8, 0.82),
    (0.8, 0.72, 0.6),
    (0.65, 0.72, 0.66),
    (0.88, 0.86, 0.84),
    (0.7, 0.62, 0.68),
    (0.62, 0.7, 0.78),
]
FABRIC_COLORS = [
    (0.35, 0.38, 0.5),
    (0.6, 0.3, 0.25),
    (0.5, 0.5, 0.48),
    (0.25, 0.35, 0.3),
    (0.75, 0.7, 0.6),
    (0.2, 0.2, 0.25),
    (0.55, 0.45, 0.6),
]


def pick(rng, choices):
    return choices[int(rng.integers(len(choices)))]


def jitter(rng, color, amount=0.08):
    return np.clip(np.asarray(color) * rng.uniform(1 - amount, 1 + amount, 3), 0.02, 0.95)


# ----------------------------------------------------------------------------- geometry
# Rays are stored as component arrays: origins (3,) or (3, N), directions (3, N).


def rotation_y(angle):
    """World-from-local rotation about the vertical (y) axis."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)


def slab_distances(origins, dirs, low, high):
    """Entry and exit distances of rays through the axis-aligned box [low, high]."""
    t_near, t_far = -np.inf, np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        for axis in range(3):
            inv = 1.0 / dirs[axis]
            t1 = (low[axis] - origins[axis]) * inv
            t2 = (high[axis] - origins[axis]) * inv
            t_near = np.maximum(t_near, np.minimum(t1, t2))
            t_far = np.minimum(t_far, np.maximum(t1, t2))
    return t_near, t_far


class Box:
    """An oriented box: centre, half extents, rotated by `yaw` about the vertical axis."""

    def __init__(self, center, half, yaw, material):
        self.center = np.asarray(center, dtype=np.float32)
        self.half = np.asarray(half, dtype=np.float32)
        self.cos, self.sin = math.cos(yaw), math.sin(yaw)
        self.rotation = rotation_y(yaw)
        self.material = material

    def bounds(self):
        corners = np.array(list(itertools.product((-1, 1), repeat=3)), dtype=np.float32) * self.half
        corners = self.center + corners @ self.rotation.T
        return corners.min(axis=0), corners.max(axis=0)

    def intersect(self, origins, dirs):
        """Distance along each ray to the first hit, inf where there is none."""
        c, s = self.cos, self.sin
        px, py, pz = (origins[i] - self.center[i] for i in range(3))
        local_o = (c * px - s * pz, py, s * px + c * pz)
        local_d = (c * dirs[0] - s * dirs[2], dirs[1], s * dirs[0] + c * dirs[2])
        t_near, t_far = slab_distances(local_o, local_d, -self.half, self.half)
        return np.where((t_near <= t_far) & (t_near > EPS), t_near, np.inf)

    def surface(self, points):
        """(world normals, local points, local normals) at (M, 3) points on the surface."""
        local = (points - self.center) @ self.rotation
        axis = np.abs(local / self.half).argmax(axis=1)
        local_normals = np.zeros_like(local)
        rows = np.arange(len(local))
        local_normals[rows, axis] = np.sign(local[rows, axis])
        return local_normals @ self.rotation.T, local, local_normals


class Sphere:
    def __init__(self, center, radius, material):
        self.center = np.asarray(center, dtype=np.float32)
        self.radius = float(radius)
        self.material = material

    def bounds(self):
        return self.center - self.radius, self.center + self.radius

    def intersect(self, origins, dirs):
        ox, oy, oz = (origins[i] - self.center[i] for i in range(3))
        a = dirs[0] ** 2 + dirs[1] ** 2 + dirs[2] ** 2
        b = ox * dirs[0] + oy * dirs[1] + oz * dirs[2]
        c = ox**2 + oy**2 + oz**2 - self.radius**2
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        return np.where((disc > 0) & (t > EPS), t, np.inf)

    def surface(self, points):
        local = points - self.center
        normals = local / self.radius
        return normals, local, normals


class Cylinder:
    """A vertical cylinder from height y0 to y1 around (x, z)."""

    def __init__(self, x, z, y0, y1, radius, material):
        self.center = np.array([x, (y0 + y1) / 2, z], dtype=np.float32)
        self.half_height = (y1 - y0) / 2
        self.r = float(radius)
        self.material = material

    def bounds(self):
        extent = np.array([self.r, self.half_height, self.r], dtype=np.float32)
        return self.center - extent, self.center + extent

    def intersect(self, origins, dirs):
        ox, oy, oz = (origins[i] - self.center[i] for i in range(3))
        a = dirs[0] ** 2 + dirs[2] ** 2
        b = ox * dirs[0] + oz * dirs[2]
        c = ox**2 + oz**2 - self.r**2
        disc = b * b - a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0))) / a
            side_ok = (disc > 0) & (t_side > EPS) & (np.abs(oy + t_side * dirs[1]) <= self.half_height)
            cap_y = np.where(dirs[1] < 0, self.half_height, -self.half_height)
            t_cap = (cap_y - oy) / dirs[1]
            cap_ok = (t_cap > EPS) & ((ox + t_cap * dirs[0]) ** 2 + (oz + t_cap * dirs[2]) ** 2 <= self.r**2)
        return np.minimum(np.where(side_ok, t_side, np.inf), np.where(cap_ok, t_cap, np.inf))

    def surface(self, points):
        local = points - self.center
        on_cap = np.abs(np.abs(local[:, 1]) - self.half_height) < 1e-3
        radial = local * np.array([1, 0, 1], dtype=np.float32) / self.r
        up = np.array([0, 1, 0], dtype=np.float32) * np.sign(local[:, 1:2])
        normals = np.where(on_cap[:, None], up, radial)
        return normals, local, normals


class Piece:
    """A piece of furniture: its parts and their common bounding box, so rays that miss it skip the parts."""

    def __init__(self, parts):
        self.parts = parts
        lows, highs = zip(*(part.bounds() for part in parts))
        self.low = np.min(lows, axis=0) - 1e-3
        self.high = np.max(highs, axis=0) + 1e-3

    def corners(self):
        return np.array(list(itertools.product(*zip(self.low, self.high))), dtype=np.float32)


class Room:
    """The inside of the box [0, width] x [0, height] x [0, depth] (x, y up, z), with decorated walls."""

    def __init__(self, size, floor, walls, ceiling, decorations, baseboard_color):
        self.size = np.asarray(size, dtype=np.float32)
        self.floor, self.walls, self.ceiling = floor, walls, ceiling
        self.decorations = decorations
        self.baseboard_color = np.asarray(baseboard_color, dtype=np.float32)

    def intersect(self, origin, dirs):
        """Distance from a point inside the room to the wall, floor or ceiling each ray meets."""
        with np.errstate(divide="ignore", invalid="ignore"):
            exits = [(np.where(dirs[i] > 0, self.size[i], 0.0) - origin[i]) / dirs[i] for i in range(3)]
        # A ray parallel to a pair of walls never meets them (x / 0 would give -inf there).
        exits = [np.where(dirs[i] == 0, np.inf, exit_t) for i, exit_t in enumerate(exits)]
        return np.minimum(np.minimum(exits[0], exits[1]), exits[2])

    def shade_inputs(self, points):
        """(normals, albedo, emission) at (M, 3) points on the room's inner surface."""
        distance_to_planes = np.concatenate([points, self.size - points], axis=1)
        plane = distance_to_planes.argmin(axis=1)  # 0: x=0, 1: floor, 2: z=0, 3: x=W, 4: ceiling, 5: z=D
        axis = plane % 3
        normals = np.zeros_like(points)
        normals[np.arange(len(points)), axis] = np.where(plane < 3, 1.0, -1.0)
        albedo = np.empty_like(points)
        for mask, material in ((plane == 1, self.floor), (plane == 4, self.ceiling), (axis != 1, self.walls)):
            if mask.any():
                albedo[mask] = material.albedo(points[mask], normals[mask])
        emission = np.zeros_like(points)
        self._decorate(points, plane, albedo, emission)
        # Darken near edges and corners: a cheap stand-in for ambient occlusion.
        nearest_other = np.partition(distance_to_planes, 1, axis=1)[:, 1]
        occlusion = 1 - 0.35 * np.exp(-nearest_other / 0.3)
        return normals, albedo * occlusion[:, None], emission

    def _decorate(self, points, plane, albedo, emission):
        along = np.where(plane % 3 == 0, points[:, 2], points[:, 0])
        height = points[:, 1]
        is_wall = plane % 3 != 1
        albedo[is_wall & (height < 0.09)] = self.baseboard_color
        for deco in self.decorations:
            inside = (
                (plane == deco["plane"])
                & (np.abs(along - deco["s"]) < deco["w"] / 2)
                & (np.abs(height - deco["y"]) < deco["h"] / 2)
            )
            if not inside.any():
                continue
            du = (along[inside] - deco["s"]) / deco["w"] + 0.5
            dv = (height[inside] - deco["y"]) / deco["h"] + 0.5
            border = np.minimum(np.minimum(du, 1 - du) * deco["w"], np.minimum(dv, 1 - dv) * deco["h"]) < deco["frame"]
            content, glow = deco["paint"](du, dv)
            albedo[inside] = np.where(border[:, None], deco["frame_color"], content)
            emission[inside] = np.where(border[:, None], 0.0, glow)


# ----------------------------------------------------------------------------- room layout


def random_painting(rng):
    colors = [jitter(rng, pick(rng, PALETTE), 0.2) for _ in range(3)]
    freq = rng.uniform(2, 7, 2)
    phase = rng.uniform(0, 2 * np.pi)

    def paint(du, dv):
        mix = (0.5 + 0.5 * np.sin(freq[0] * du * 2 * np.pi + phase) * np.cos(freq[1] * dv * np.pi))[:, None]
        base = np.where((dv > 0.45)[:, None], colors[0], colors[1])
        return base * (1 - mix * 0.5) + colors[2] * mix * 0.5, 0.0

    return paint


def window_pane(rng):
    sky = np.array([0.75, 0.85, 1.0], dtype=np.float32) * rng.uniform(0.9, 1.1)
    bars = int(rng.integers(1, 3))

    def paint(du, dv):
        bar = ((np.abs(du - 0.5) < 0.015) | (np.abs(dv * bars - np.round(dv * bars)) < 0.02))[:, None]
        return np.where(bar, np.float32(0.9), sky * 0.3), np.where(bar, 0.0, sky * (1.1 + 0.3 * dv[:, None]))

    return paint


def door_panel(rng, width, height):
    door = Material("wood", jitter(rng, pick(rng, WOOD_COLORS)), rng, scale=0.7)

    def paint(du, dv):
        # Texture the door as a vertical plank surface facing +z.
        points = np.stack([du * width, dv * height, np.zeros_like(du)], axis=1).astype(np.float32)
        return door.albedo(points, np.broadcast_to(np.float32([0, 0, 1]), points.shape)), 0.0

    return paint


def make_decorations(rng, size):
    """Pictures, windows and doors: framed rectangles painted on the walls."""
    decorations = []
    for plane in (0, 2, 3, 5):
        wall_length = size[2] if plane % 3 == 0 else size[0]
        for _ in range(int(rng.integers(0, 3))):
            kind = rng.choice(["painting", "window", "door"], p=[0.5, 0.3, 0.2])
            if kind == "painting":
                w, h, y = rng.uniform(0.4, 1.3), rng.uniform(0.3, 0.9), rng.uniform(1.3, 1.7)
                paint, frame, frame_color = random_painting(rng), 0.04, jitter(rng, pick(rng, WOOD_COLORS))
            elif kind == "window":
                w, h = rng.uniform(0.8, 1.6), rng.uniform(1.0, 1.4)
                y = rng.uniform(0.85, 1.0) + h / 2
                paint, frame, frame_color = window_pane(rng), 0.06, np.full(3, 0.9)
            else:
                w, h = rng.uniform(0.8, 0.95), rng.uniform(2.0, 2.1)
                y = h / 2
                paint, frame, frame_color = door_panel(rng, w, h), 0.05, np.full(3, 0.85)
            if w + 0.2 < wall_length and y + h / 2 < size[1] - 0.1:
                s = rng.uniform(w / 2 + 0.1, wall_length - w / 2 - 0.1)
                decorations.append(
                    dict(
                        plane=plane,
                        s=s,
                        w=w,
                        y=y,
                        h=h,
                        paint=paint,
                        frame=frame,
                        frame_color=np.asarray(frame_color, dtype=np.float32),
                    )
                )
    return decorations


def overlaps(a, b, gap):
    """Whether two (xmin, xmax, zmin, zmax) rectangles come closer than `gap`."""
    return a[0] < b[1] + gap and b[0] < a[1] + gap and a[2] < b[3] + gap and b[2] < a[3] + gap


class Layout:
    """Places furniture in a room without overlaps and collects the pieces."""

    def __init__(self, rng, size):
        self.rng = rng
        self.width, self.height, self.depth = size
        self.footprints = []  # (xmin, xmax, zmin, zmax)
        self.pieces = []

    def place(self, width, depth, against_wall, gap=0.08):
        """(x, z, yaw) for a width x depth footprint whose local +z faces into the room, or None."""
        rng = self.rng
        for _ in range(40):
            if against_wall:
                wall = int(rng.integers(4))
                yaw = wall * math.pi / 2  # its back to the wall z=0, x=0, z=D or x=W
                along_length = self.width if wall % 2 == 0 else self.depth
                if width + 0.1 > along_length:
                    continue
                along = rng.uniform(width / 2 + 0.05, along_length - width / 2 - 0.05)
                offset = depth / 2 + 0.02
                x, z = {
                    0: (along, offset),
                    1: (offset, along),
                    2: (along, self.depth - offset),
                    3: (self.width - offset, along),
                }[wall]
            else:
                yaw = rng.uniform(0, 2 * math.pi)
                x, z = rng.uniform(0.3, self.width - 0.3), rng.uniform(0.3, self.depth - 0.3)
            c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
            half_x, half_z = (width * c + depth * s) / 2, (width * s + depth * c) / 2
            rect = (x - half_x, x + half_x, z - half_z, z + half_z)
            inside = rect[0] > 0.01 and rect[1] < self.width - 0.01 and rect[2] > 0.01 and rect[3] < self.depth - 0.01
            if inside and not any(overlaps(rect, other, gap) for other in self.footprints):
                self.footprints.append(rect)
                return x, z, yaw
        return None

    def add_piece(self, parts):
        if parts:
            self.pieces.append(Piece(parts))

    def free_position(self, clearance):
        """A random (x, z) at least `clearance` from the walls and from every footprint, or None."""
        for _ in range(200):
            x = self.rng.uniform(clearance, self.width - clearance)
            z = self.rng.uniform(clearance, self.depth - clearance)
            if not any(overlaps((x, x, z, z), rect, clearance) for rect in self.footprints):
                return x, z
        return None


def box_part(spot, local_offset, size, material, y0=0.0):
    """A box of size (w, h, d) standing at height y0, offset in the local frame of the piece at spot."""
    x, z, yaw = spot
    offset = rotation_y(yaw) @ np.asarray(local_offset, dtype=np.float32)
    return Box((x + offset[0], y0 + size[1] / 2, z + offset[2]), np.asarray(size) / 2, yaw, material)


def wood(rng, scale=0.6):
    return Material("wood", jitter(rng, pick(rng, WOOD_COLORS)), rng, scale=scale)


def fabric(rng):
    return Material("fabric", jitter(rng, pick(rng, FABRIC_COLORS), 0.15), rng)


def small_item(rng, spot, top, width, depth):
    """A ball or a small box standing somewhere on a surface at height `top`."""
    x, z, yaw = spot
    offset = rotation_y(yaw) @ np.array([rng.uniform(-0.3, 0.3) * width, 0, rng.uniform(-0.2, 0.2) * depth])
    if rng.random() < 0.5:
        r = rng.uniform(0.06, 0.14)
        return Sphere((x + offset[0], top + r, z + offset[2]), r, Material("paint", pick(rng, PALETTE), rng))
    item_spot = (x + offset[0], z + offset[2], yaw + rng.uniform(-0.5, 0.5))
    return box_part(
        item_spot, (0, 0, 0), rng.uniform(0.1, 0.3, 3), Material("cardboard", (0.6, 0.45, 0.3), rng), y0=top
    )


def add_cabinet(layout, rng, height=None):
    w, d = rng.uniform(0.6, 1.6), rng.uniform(0.4, 0.6)
    h = height or rng.uniform(0.7, 2.0)
    spot = layout.place(w, d, against_wall=True)
    if spot:
        material = wood(rng) if rng.random() < 0.6 else Material("paint", jitter(rng, pick(rng, WALL_COLORS)), rng)
        parts = [box_part(spot, (0, 0, 0), (w, h, d), material)]
        if h < 1.3 and rng.random() < 0.6:
            parts.append(small_item(rng, spot, h, w, d))
        layout.add_piece(parts)


def add_bookshelf(layout, rng):
    w, d, h = rng.uniform(0.6, 1.3), rng.uniform(0.28, 0.4), rng.uniform(1.2, 2.1)
    spot = layout.place(w, d, against_wall=True)
    if spot:
        books = Material("books", jitter(rng, pick(rng, WOOD_COLORS)), rng)
        layout.add_piece([box_part(spot, (0, 0, 0), (w, h, d), books)])


def legs(spot, width, depth, height, thickness, material):
    return [
        box_part(
            spot,
            (sx * (width / 2 - thickness), 0, sz * (depth / 2 - thickness)),
            (thickness, height, thickness),
            material,
        )
        for sx in (-1, 1)
        for sz in (-1, 1)
    ]


def add_table(layout, rng, against_wall=False):
    w, d, h = rng.uniform(0.8, 1.8), rng.uniform(0.6, 1.0), rng.uniform(0.7, 0.78)
    spot = layout.place(w, d, against_wall)
    if spot:
        material = wood(rng)
        parts = [box_part(spot, (0, 0, 0), (w, 0.04, d), material, y0=h - 0.04)]
        parts += legs(spot, w, d, h - 0.04, rng.uniform(0.04, 0.07), material)
        if rng.random() < 0.7:
            parts.append(small_item(rng, spot, h, w, d))
        layout.add_piece(parts)


def add_chair(layout, rng):
    s = rng.uniform(0.4, 0.5)
    spot = layout.place(s, s, against_wall=False, gap=0.05)
    if spot:
        material, seat = (wood(rng) if rng.random() < 0.5 else fabric(rng)), rng.uniform(0.42, 0.48)
        parts = [box_part(spot, (0, 0, 0), (s, 0.05, s), material, y0=seat - 0.05)]
        parts += legs(spot, s, s, seat - 0.05, 0.04, material)
        parts.append(box_part(spot, (0, 0, -s / 2 + 0.02), (s, rng.uniform(0.4, 0.5), 0.04), material, y0=seat))
        layout.add_piece(parts)


def add_bed(layout, rng):
    w, d = rng.uniform(1.0, 1.8), rng.uniform(1.9, 2.1)
    spot = layout.place(w, d, against_wall=True)
    if spot:
        h = rng.uniform(0.45, 0.6)
        layout.add_piece(
            [
                box_part(spot, (0, 0, 0.03), (w, h, d - 0.06), fabric(rng)),
                box_part(spot, (0, 0, -d / 2 + 0.03), (w + 0.04, rng.uniform(0.9, 1.2), 0.06), wood(rng)),
                box_part(
                    spot, (0, 0, -d / 2 + 0.3), (w * 0.8, 0.12, 0.35), Material("fabric", (0.9, 0.9, 0.88), rng), y0=h
                ),
            ]
        )


def add_sofa(layout, rng):
    w, d = rng.uniform(1.5, 2.4), rng.uniform(0.8, 1.0)
    spot = layout.place(w, d, against_wall=rng.random() < 0.7)
    if spot:
        material, seat = fabric(rng), rng.uniform(0.4, 0.45)
        parts = [
            box_part(spot, (0, 0, 0.1), (w - 0.3, seat, d - 0.2), material),
            box_part(spot, (0, 0, -d / 2 + 0.1), (w, rng.uniform(0.75, 0.9), 0.2), material),
        ]
        parts += [
            box_part(spot, (side * (w / 2 - 0.075), 0, 0.1), (0.15, seat + 0.18, d - 0.2), material) for side in (-1, 1)
        ]
        layout.add_piece(parts)


def add_lamp(layout, rng):
    spot = layout.place(0.35, 0.35, against_wall=False)
    if spot:
        x, z, _ = spot
        metal = Material("metal", (0.3, 0.3, 0.32), rng)
        shade = Material("fabric", jitter(rng, (0.9, 0.85, 0.7)), rng)
        height = rng.uniform(1.3, 1.7)
        layout.add_piece(
            [
                Cylinder(x, z, 0.0, 0.03, 0.16, metal),
                Cylinder(x, z, 0.0, height, 0.015, metal),
                Cylinder(x, z, height - 0.05, height + 0.22, rng.uniform(0.15, 0.22), shade),
            ]
        )


def add_plant(layout, rng):
    r = rng.uniform(0.14, 0.24)
    spot = layout.place(2 * r, 2 * r, against_wall=rng.random() < 0.5)
    if spot:
        x, z, _ = spot
        pot_height, leaves = rng.uniform(0.25, 0.5), rng.uniform(0.25, 0.4)
        pot = Material("paint", jitter(rng, pick(rng, PALETTE)), rng)
        layout.add_piece(
            [
                Cylinder(x, z, 0.0, pot_height, r, pot),
                Sphere((x, pot_height + leaves * 0.8, z), leaves, Material("leaves", (0.2, 0.45, 0.15), rng)),
            ]
        )


def add_boxes(layout, rng):
    s = rng.uniform(0.3, 0.6)
    spot = layout.place(s, s, against_wall=rng.random() < 0.5)
    if spot:
        parts, y = [], 0.0
        for _ in range(int(rng.integers(1, 4))):
            size = (s * rng.uniform(0.7, 1.0), rng.uniform(0.2, 0.45), s * rng.uniform(0.7, 1.0))
            turned = (spot[0], spot[1], spot[2] + rng.uniform(-0.3, 0.3))
            parts.append(
                box_part(turned, (0, 0, 0), size, Material("cardboard", jitter(rng, (0.6, 0.45, 0.3)), rng), y0=y)
            )
            y += size[1]
        layout.add_piece(parts)


def add_ball(layout, rng):
    r = rng.uniform(0.1, 0.3)
    spot = layout.place(2 * r, 2 * r, against_wall=False)
    if spot:
        layout.add_piece([Sphere((spot[0], r, spot[1]), r, Material("paint", jitter(rng, pick(rng, PALETTE)), rng))])


def add_kitchen_counter(layout, rng):
    add_cabinet(layout, rng, height=0.9)


def add_desk(layout, rng):
    add_table(layout, rng, against_wall=True)


# Furniture per room type: (adder, fewest, most).
ROOM_TYPES = {
    "bedroom": [
        (add_bed, 1, 1),
        (add_cabinet, 1, 2),
        (add_lamp, 0, 1),
        (add_chair, 0, 1),
        (add_plant, 0, 1),
        (add_boxes, 0, 1),
    ],
    "living_room": [
        (add_sofa, 1, 2),
        (add_table, 1, 1),
        (add_bookshelf, 0, 2),
        (add_lamp, 0, 1),
        (add_plant, 0, 2),
        (add_chair, 0, 2),
        (add_ball, 0, 1),
    ],
    "office": [(add_table, 1, 3), (add_chair, 1, 3), (add_bookshelf, 0, 2), (add_cabinet, 0, 2), (add_boxes, 0, 2)],
    "dining_room": [(add_table, 1, 1), (add_chair, 2, 6), (add_cabinet, 0, 2), (add_plant, 0, 1), (add_lamp, 0, 1)],
    "kitchen": [(add_kitchen_counter, 2, 5), (add_table, 0, 1), (add_chair, 0, 2), (add_boxes, 0, 1)],
    "study": [(add_desk, 1, 1), (add_chair, 1, 1), (add_bookshelf, 1, 3), (add_lamp, 0, 1), (add_ball, 0, 1)],
}
ROOM_TYPE_NAMES = list(ROOM_TYPES)


class Scene:
    """A furnished room with its lights, to be rendered from several camera positions."""

    def __init__(self, rng, room_type):
        size = (rng.uniform(3.0, 6.8), rng.uniform(2.5, 3.0), rng.uniform(3.0, 6.8))
        floor_kind = pick(rng, ["wood", "wood", "tiles", "fabric"])
        floor_colors = WOOD_COLORS if floor_kind == "wood" else [(0.75, 0.72, 0.68), (0.45, 0.45, 0.5), (0.6, 0.5, 0.4)]
        self.room = Room(
            size,
            floor=Material(floor_kind, jitter(rng, pick(rng, floor_colors)), rng),
            walls=Material("paint", jitter(rng, pick(rng, WALL_COLORS), 0.05), rng),
            ceiling=Material("paint", (0.9, 0.9, 0.88), rng),
            decorations=make_decorations(rng, size),
            baseboard_color=pick(rng, [(0.9, 0.9, 0.88), (0.3, 0.22, 0.15), (0.5, 0.5, 0.5)]),
        )
        self.layout = Layout(rng, size)
        for adder, fewest, most in ROOM_TYPES[room_type]:
            for _ in range(int(rng.integers(fewest, most + 1))):
                adder(self.layout, rng)
        self.pieces = self.layout.pieces
        self.primitives = [part for piece in self.pieces for part in piece.parts]
        self.first_part_index = np.cumsum([0] + [len(piece.parts) for piece in self.pieces[:-1]])
        width, height, depth = size
        main = (rng.uniform(0.3, 0.7) * width, height - 0.05, rng.uniform(0.3, 0.7) * depth)
        fill = (rng.uniform(0.1, 0.9) * width, height - 0.05, rng.uniform(0.1, 0.9) * depth)
        self.lights = [
            (np.array(main, dtype=np.float32), height**2),
            (np.array(fill, dtype=np.float32), rng.uniform(0.2, 0.5) * height**2),
        ]
        self.ambient = rng.uniform(0.15, 0.3)


# ----------------------------------------------------------------------------- camera and rendering


class Camera:
    """A pinhole camera with the NYU intrinsics scaled to width x height; rotation is world-from-camera
    with camera axes x right, y down, z forward."""

    def __init__(self, position, rotation, width, height):
        self.position = np.asarray(position, dtype=np.float32)
        self.rotation = rotation
        self.width, self.height = width, height
        self.fx, self.fy, self.cx, self.cy = scaled_intrinsics(height, width)

    def rays(self):
        """(3, H*W) world directions with unit z in camera space, so a hit distance is the z-depth."""
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        camera_dirs = np.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, np.ones_like(u)]).reshape(3, -1)
        return self.rotation @ camera_dirs

    def pixels_covering(self, corners):
        """Flat indices of the pixels whose rays may meet the convex hull of the (8, 3) corners."""
        camera_points = (corners - self.position) @ self.rotation
        z = camera_points[:, 2]
        if (z <= 0.01).all():
            return np.empty(0, dtype=np.int64)
        if (z <= 0.01).any():  # straddles the image plane: no rectangle bounds it
            return np.arange(self.width * self.height)
        u = self.fx * camera_points[:, 0] / z + self.cx
        v = self.fy * camera_points[:, 1] / z + self.cy
        u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())), self.width - 1)
        v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())), self.height - 1)
        if u0 > u1 or v0 > v1:
            return np.empty(0, dtype=np.int64)
        return (np.arange(v0, v1 + 1)[:, None] * self.width + np.arange(u0, u1 + 1)).ravel()


def camera_pose(rng, scene, width, height):
    """A camera standing in free space and looking into the room, or None if there is no space."""
    spot = scene.layout.free_position(clearance=0.55)
    if spot is None:
        return None
    x, z = spot
    room_width, _, room_depth = scene.room.size
    position = (x, rng.uniform(1.0, 1.6), z)
    yaw = math.atan2(room_width / 2 - x, room_depth / 2 - z) + rng.uniform(-0.9, 0.9)
    pitch = math.radians(rng.uniform(-28, 3))
    roll = math.radians(rng.normal(0, 2))
    # Flip camera y (down) to world up, roll about the view axis, tilt the view up by
    # `pitch` (negative looks down), then turn by `yaw`.
    flip = np.diag([1.0, -1.0, 1.0]).astype(np.float32)
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    roll_m = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]], dtype=np.float32)
    tilt_up = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]], dtype=np.float32)  # (0,0,1) -> (0, sin, cos)
    return Camera(position, rotation_y(yaw) @ tilt_up @ roll_m @ flip, width, height)


def trace(scene, camera):
    """Nearest hit of every pixel's ray: (directions (3, N), distance (N,), primitive index (N,), -1 = room)."""
    dirs = camera.rays()
    t = scene.room.intersect(camera.position, dirs)
    hit_id = np.full(t.shape, -1)
    for piece, first_index in zip(scene.pieces, scene.first_part_index):
        pixels = camera.pixels_covering(piece.corners())
        if len(pixels) == 0:
            continue
        piece_dirs = dirs[:, pixels]
        for offset, part in enumerate(piece.parts):
            t_part = part.intersect(camera.position, piece_dirs)
            closer = t_part < t[pixels]
            t[pixels[closer]] = t_part[closer]
            hit_id[pixels[closer]] = first_index + offset
    return dirs, t, hit_id


def shadowed(scene, points, to_light):
    """True where furniture lies between a point and the light; points, to_light: (3, M)."""
    blocked = np.zeros(points.shape[1], dtype=bool)
    for piece in scene.pieces:
        t_near, t_far = slab_distances(points, to_light, piece.low, piece.high)
        rays = np.flatnonzero((t_near <= t_far) & (t_far > 0) & (t_near < 1) & ~blocked)
        if len(rays) == 0:
            continue
        origins, dirs = points[:, rays], to_light[:, rays]
        for part in piece.parts:
            blocked[rays] |= part.intersect(origins, dirs) < 1
    return blocked


def surface_properties(scene, points, hit_id):
    """(normals, albedo, emission), each (N, 3), at the hit points (N, 3)."""
    normals, albedo, emission = (np.zeros_like(points) for _ in range(3))
    on_room = hit_id == -1
    normals[on_room], albedo[on_room], emission[on_room] = scene.room.shade_inputs(points[on_room])
    for index in np.unique(hit_id[~on_room]):
        mask = hit_id == index
        primitive = scene.primitives[index]
        world_normals, local_points, local_normals = primitive.surface(points[mask])
        normals[mask] = world_normals
        albedo[mask] = primitive.material.albedo(local_points, local_normals)
    return normals, albedo, emission


def irradiance(scene, points, normals):
    """Light arriving at each point: ambient plus two ceiling lights, the first casting shadows."""
    # Ambient light, stronger on surfaces facing down: light bounced off the floor and walls.
    total = scene.ambient * (0.9 + 0.6 * np.maximum(-normals[:, 1], 0))
    for light_index, (light, power) in enumerate(scene.lights):
        to_light = light - points
        distance2 = (to_light**2).sum(axis=1)
        cosine = np.maximum((normals * to_light).sum(axis=1) / np.sqrt(distance2), 0)
        direct = power * cosine / (distance2 + 0.3)
        if light_index == 0:
            lit = np.flatnonzero(cosine > 0)
            start = points[lit] + normals[lit] * 1e-3
            direct[lit[shadowed(scene, start.T, to_light[lit].T)]] = 0
        total = total + direct
    return total


def render(scene, camera, rng):
    """One view: (rgb (H, W, 3) uint8, depth_m (H, W) float32)."""
    dirs, t, hit_id = trace(scene, camera)
    points = (camera.position[:, None] + dirs * t).T
    normals, albedo, emission = surface_properties(scene, points, hit_id)
    color = albedo * irradiance(scene, points, normals)[:, None]
    exposure = rng.uniform(0.32, 0.5) / max(float(np.median(color.mean(axis=1))), 1e-3)
    rgb = to_display((color * exposure + emission).reshape(camera.height, camera.width, 3), rng)
    depth_m = np.minimum(t.reshape(camera.height, camera.width), NYU_DEPTH_RANGE.max_m).astype(np.float32)
    return rgb, depth_m


def to_display(linear, rng):
    """Vignetting, a soft highlight shoulder, display gamma, sensor noise, 8 bits."""
    height, width = linear.shape[:2]
    v, u = np.mgrid[0:height, 0:width]
    radius2 = ((u - width / 2) / width) ** 2 + ((v - height / 2) / height) ** 2
    linear = linear * (1 - 0.35 * radius2)[..., None]
    display = (1.3 * linear / (1 + linear)) ** (1 / 2.2)
    display = display + rng.normal(0, 0.008, display.shape)
    return np.clip(np.rint(display * 255), 0, 255).astype(np.uint8)


def render_scene(seed, split, scene_index, views, width, height):
    """Render `views` pictures of one room: (room type, [(rgb, depth_m), ...]); deterministic."""
    rng = np.random.default_rng([seed, split, scene_index])
    room_type = ROOM_TYPE_NAMES[scene_index % len(ROOM_TYPE_NAMES)]
    scene = Scene(rng, room_type)
    frames = []
    while len(frames) < views:
        camera = camera_pose(rng, scene, width, height)
        if camera is None:  # a room too full to stand in: furnish another
            scene = Scene(rng, room_type)
            continue
        frames.append(render(scene, camera, rng))
    return room_type, frames
