"""Endoscopy sample frames and video: a rendered colon lumen with haustral folds, vessels and a polyp.

The scene is a tube of radius about 1 seen from a camera inside it that carries its own light (a
headlight, as in a colonoscope). A wall point seen at image radius r from the lumen centre lies at depth
z = R / r; its surface coordinates are the arc length a = R * phi round the tube and s = z + advance along
it. Textures (colour, vessels, folds, fine bumps) live in those surface coordinates, so they move and
scale correctly as the camera advances, rolls and drifts. Shading is Lambertian with inverse-square
fall-off plus a Blinn-Phong highlight (light and view share a direction, so highlights sit where the
wet surface faces the lens). The polyp is a dome on the wall; its mask is where the dome is.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

_TEXTURE_PHI = 512  # samples round the tube
_TEXTURE_S = 1024  # samples along the tube
_TEXTURE_S_LENGTH = 2 * np.pi * _TEXTURE_S / _TEXTURE_PHI  # same sample pitch along and round (R = 1)
_SUPERSAMPLE = 2
_MAX_DEPTH = 9.0


@dataclass(frozen=True)
class Polyp:
    """A sessile polyp: a dome on the wall, in surface coordinates (units of the tube radius)."""

    phi: float  # angle round the tube, radians
    s: float  # position along the tube
    radius_a: float  # semi-axis round the tube
    radius_s: float  # semi-axis along the tube
    height: float  # dome height above the wall
    tilt: float  # rotation of the ellipse in the surface, radians
    lobes: tuple[float, ...]  # boundary irregularity: cosine amplitudes of harmonics 2, 3, 4, ...
    lobe_phase: tuple[float, ...]


@dataclass(frozen=True)
class Camera:
    """Where the camera is and how it looks down the lumen."""

    advance: float  # position along the tube
    roll: float  # rotation about the tube axis, radians
    lumen_x: float  # lumen centre in normalised image coordinates (-1..1)
    lumen_y: float
    wall_offset: float  # how much closer the camera is to one wall (0 = on the axis)
    wall_offset_phi: float
    exposure: float


class Textures:
    """Periodic noise fields on the (phi, s) surface grid, built once per scene from a seed."""

    def __init__(self, rng: np.random.Generator):
        shape = (_TEXTURE_PHI, _TEXTURE_S)

        def noise(sigma: float) -> np.ndarray:
            field = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
            return field / field.std()

        self.colour = noise(24.0)  # slow albedo variation
        self.tint = noise(10.0)
        self.vessels = np.exp(-((noise(7.0) / 0.09) ** 2)) + 0.6 * np.exp(-((noise(3.5) / 0.12) ** 2))
        bumps = noise(3.0)  # fine mucosal relief: its slopes make the wet surface glint
        pitch = _TEXTURE_S_LENGTH / _TEXTURE_S
        self.bump_slope_a = (np.roll(bumps, -1, 0) - np.roll(bumps, 1, 0)) / (2 * pitch)
        self.bump_slope_s = (np.roll(bumps, -1, 1) - np.roll(bumps, 1, 1)) / (2 * pitch)
        self.bump_slope_a /= self.bump_slope_a.std()
        self.bump_slope_s /= self.bump_slope_s.std()
        self.fold_phase = noise(40.0)  # makes haustral folds wander along the tube
        self.fold_strength = noise(30.0)
        self.fold_period = rng.uniform(1.2, 1.7)
        self.base_colour = np.array([0.95, 0.36, 0.26]) * rng.uniform(0.92, 1.08, size=3)

    def sample(self, field: np.ndarray, phi: np.ndarray, s: np.ndarray) -> np.ndarray:
        coords = np.stack([phi / (2 * np.pi) * _TEXTURE_PHI, s / _TEXTURE_S_LENGTH * _TEXTURE_S])
        return ndimage.map_coordinates(field, coords, order=1, mode="grid-wrap")


def random_polyp(rng: np.random.Generator, s: float, phi: float) -> Polyp:
    """A polyp of random size, elongation and lobulation at a given place on the wall."""
    size = rng.uniform(0.24, 0.42)
    elongation = rng.uniform(0.8, 1.25)
    return Polyp(
        phi=phi,
        s=s,
        radius_a=size * elongation,
        radius_s=size / elongation,
        height=size * rng.uniform(0.5, 0.8),
        tilt=rng.uniform(0, np.pi),
        lobes=tuple(rng.uniform(0.0, 0.08, size=4)),
        lobe_phase=tuple(rng.uniform(0, 2 * np.pi, size=4)),
    )


def _polyp_shape(polyp: Polyp, a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Normalised polyp radius at surface points: < 1 inside the polyp."""
    da = (a - polyp.phi + np.pi) % (2 * np.pi) - np.pi  # arc length with R = 1, wrapped round the tube
    ds = s - polyp.s
    u = (np.cos(polyp.tilt) * da + np.sin(polyp.tilt) * ds) / polyp.radius_a
    v = (-np.sin(polyp.tilt) * da + np.cos(polyp.tilt) * ds) / polyp.radius_s
    angle = np.arctan2(v, u)
    boundary = 1.0 + sum(
        amp * np.cos((n + 2) * angle + ph)
        for n, (amp, ph) in enumerate(zip(polyp.lobes, polyp.lobe_phase, strict=True))
    )
    return np.hypot(u, v) / boundary


def _height(tex: Textures, polyp: Polyp, phi: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Smooth surface relief (units of R) at surface points: haustral folds and the polyp dome."""
    wander = tex.sample(tex.fold_phase, phi, s)
    strength = np.clip(0.7 + 0.5 * tex.sample(tex.fold_strength, phi, s), 0.0, 1.2)
    crest = np.cos(2 * np.pi * s / tex.fold_period + 0.8 * wander)
    folds = 0.12 * strength * np.clip(crest, 0, None) ** 1.5
    rho = _polyp_shape(polyp, phi, s)
    dome = polyp.height * np.clip(1.0 - rho**2, 0.0, None) ** 0.6
    return folds + dome


def render(tex: Textures, polyp: Polyp, camera: Camera, size: int, rng: np.random.Generator):
    """Render one RGB frame (uint8, size x size x 3) and its polyp mask (uint8 0/1, size x size)."""
    n = size * _SUPERSAMPLE
    v, u = np.mgrid[0:n, 0:n]
    u = (u + 0.5) / n * 2 - 1
    v = (v + 0.5) / n * 2 - 1
    dx, dy = u - camera.lumen_x, v - camera.lumen_y
    r = np.maximum(np.hypot(dx, dy), 1e-3)
    phi = (np.arctan2(dy, dx) + camera.roll) % (2 * np.pi)
    # Wall distance from the camera varies round the tube: off-axis camera, three-sided colon profile.
    radius = 1.0 - camera.wall_offset * np.cos(phi - camera.wall_offset_phi) + 0.06 * np.cos(3 * phi)
    z = np.minimum(radius / r, _MAX_DEPTH)
    s = z + camera.advance

    eps = 0.01
    height = _height(tex, polyp, phi, s)
    slope_s = (_height(tex, polyp, phi, s + eps) - _height(tex, polyp, phi, s - eps)) / (2 * eps)
    slope_a = (_height(tex, polyp, phi + eps, s) - _height(tex, polyp, phi - eps, s)) / (2 * eps)
    distance_sq = radius**2 + z**2

    def facing(extra_s, extra_a):
        """Cosine between the surface normal and the direction to the lens (= the light)."""
        ts, ta = slope_s + extra_s, slope_a + extra_a
        return np.clip((radius + z * ts) / (np.sqrt(distance_sq) * np.sqrt(1 + ts**2 + ta**2)), 0.0, 1.0)

    # Diffuse light sees the relief with faint bumps; the glints see the wet surface's stronger ripples.
    bump_s = tex.sample(tex.bump_slope_s, phi, s)
    bump_a = tex.sample(tex.bump_slope_a, phi, s)
    cos_light = facing(0.05 * bump_s, 0.05 * bump_a)
    cos_glint = facing(0.22 * bump_s, 0.22 * bump_a)
    falloff = np.exp(-z / 3.0) / distance_sq  # inverse square, and a little haze down the lumen

    inside = _polyp_shape(polyp, phi, s) < 1.0
    albedo = tex.base_colour * (1.0 + 0.10 * tex.sample(tex.colour, phi, s))[..., None]
    albedo[..., 1:] *= (1.0 + 0.06 * tex.sample(tex.tint, phi, s))[..., None]
    vessel = np.clip(tex.sample(tex.vessels, phi, s), 0, 1)[..., None] * np.where(inside, 0.2, 1.0)[..., None]
    albedo = albedo * (1.0 - vessel * np.array([0.22, 0.45, 0.38]))
    polyp_tint = np.array([1.05, 0.92, 0.95]) * (1.0 + 0.15 * (height - height.min()))[..., None]
    albedo = np.where(inside[..., None], albedo * polyp_tint, albedo)

    sheen = 0.12 * cos_light**8 * falloff
    radiance = albedo * ((0.04 + cos_light) * falloff)[..., None] + sheen[..., None]
    colour = 1.0 - np.exp(-camera.exposure * radiance)  # soft saturation like a camera's tone curve
    grey = colour.mean(axis=-1, keepdims=True)
    colour = np.clip(grey + 1.3 * (colour - grey), 0.0, 1.0)  # the vivid colour of endoscope processors
    # Vignetting, then glints: mirror reflections of the light saturate the sensor to white.
    rim = np.hypot(u, v)
    colour *= np.clip(1.0 - 0.30 * rim**2, 0, 1)[..., None]
    glint = np.clip(6.0 * cos_glint**60 * falloff, 0.0, 1.0)[..., None]
    colour = colour * (1.0 - glint) + glint
    frame = (np.abs(u) + np.abs(v) < 1.75) & (rim < 1.32)
    colour *= frame[..., None]

    colour = colour.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    colour = ndimage.gaussian_filter(colour, (0.5, 0.5, 0))
    colour = colour ** (1 / 2.0) + rng.normal(0.0, 0.012, size=colour.shape)
    rgb = np.clip(np.rint(colour * 255), 0, 255).astype(np.uint8)
    mask = (
        (inside & frame & (z < _MAX_DEPTH)).reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(1, 3))
    )
    return rgb, (mask >= 0.5).astype(np.uint8)


def _random_scene(rng: np.random.Generator) -> tuple[Textures, Polyp, Camera]:
    tex = Textures(rng)
    camera = Camera(
        advance=rng.uniform(0, 20), roll=rng.uniform(0, 2 * np.pi), lumen_x=rng.uniform(-0.3, 0.3),
        lumen_y=rng.uniform(-0.3, 0.3), wall_offset=rng.uniform(0.0, 0.25),
        wall_offset_phi=rng.uniform(0, 2 * np.pi), exposure=rng.uniform(2.6, 3.4),
    )  # fmt: skip
    # Place the polyp where the camera sees it: at an image radius of 0.45-0.85 from the lumen centre.
    angle = rng.uniform(0, 2 * np.pi)
    depth = 1.0 / rng.uniform(0.55, 0.95)
    polyp = random_polyp(rng, s=camera.advance + depth, phi=(angle + camera.roll) % (2 * np.pi))
    return tex, polyp, camera


def write_png(array: np.ndarray, path: Path) -> None:
    """PNG without time or text chunks, so the bytes depend on the pixels only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", optimize=True)


def write_frames(root: Path, count: int, size: int, seed: int) -> list[tuple[Path, Path]]:
    """Write `count` RGB frames to root/images/polyp_NNN.png and 0/1 masks to root/labels/polyp_NNN.png.

    Scenes whose polyp covers less than 1.5 % or more than 30 % of the frame are redrawn, so every
    frame shows one polyp a model can be asked to find.
    """
    rng = np.random.default_rng(seed)
    written = []
    for index in range(count):
        while True:
            tex, polyp, camera = _random_scene(rng)
            rgb, mask = render(tex, polyp, camera, size, rng)
            if 0.015 <= mask.mean() <= 0.30:
                break
        image_path = root / "images" / f"polyp_{index:03d}.png"
        label_path = root / "labels" / f"polyp_{index:03d}.png"
        write_png(rgb, image_path)
        write_png(mask, label_path)
        written.append((image_path, label_path))
    return written


def video_frames(frames: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A short withdrawal-like clip: the camera advances and rolls, the lumen drifts, a polyp passes by.

    Returns:
        (RGB frames uint8 (T, H, W, 3), polyp masks uint8 0/1 (T, H, W)).
    """
    rng = np.random.default_rng(seed)
    tex = Textures(rng)
    polyp = random_polyp(rng, s=2.9, phi=0.6)
    polyp = replace(polyp, radius_a=0.40, radius_s=0.34, height=0.24)
    start = Camera(advance=0.0, roll=0.3, lumen_x=0.1, lumen_y=-0.05, wall_offset=0.15, wall_offset_phi=2.0,
                   exposure=2.8)  # fmt: skip
    images, masks = [], []
    for t in np.linspace(0.0, 1.0, frames):
        camera = replace(
            start, advance=2.0 * t, roll=start.roll + 0.5 * t, lumen_x=0.1 - 0.25 * t + 0.05 * np.sin(6 * t),
            lumen_y=-0.05 + 0.12 * np.sin(3.5 * t), wall_offset=0.15 + 0.1 * t,
        )  # fmt: skip
        rgb, mask = render(tex, polyp, camera, size, rng)
        images.append(rgb)
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def write_video(frames: np.ndarray, path: Path, fps: int) -> None:
    """Encode RGB frames as H.264 (yuv420p) MP4 with PyAV; single-threaded so the bytes are reproducible."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = {"crf": "20", "preset": "medium"}
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Like np.savez_compressed, but with fixed zip timestamps so the bytes are reproducible."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())
