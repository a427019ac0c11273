"""One simulated cine: random case parameters, the echogenicity map of each frame, motion of the
scatterers, image formation and exact labels from the same geometry.

``simulate(params)`` is deterministic for a given ``SimParams`` (which ``sample_params(seed)``
draws), so a case is reproduced from its seed alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.path import Path as MplPath
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.interpolate import RBFInterpolator

from .anatomy import HeartShape, heart_frame, sample_shape
from .beam import BeamModel, Probe, sample_scatterers, scan_convert, sector_mask
from .motion import loop_timing

MAP_MM = 0.6          # echogenicity-map resolution
VALVE_MM = 1.6        # leaflet thickness as drawn (thin leaflets still show: the PSF spreads them)
ANNULUS_MM = 1.8      # radius of the fibrous mitral-annulus hinge points (bright in real echoes)


@dataclass
class Ranges:
    """Parameter ranges; the held-out 'outside' set widens some of them."""

    ef: tuple = (0.20, 0.75)
    heart_rate: tuple = (50.0, 120.0)
    beats: tuple = (1, 3)
    fps: tuple = (25.0, 60.0)
    depth: tuple = (120.0, 190.0)
    sector_deg: tuple = (60.0, 90.0)
    f0: tuple = (1.8, 3.4)
    dyn_range: tuple = (45.0, 70.0)
    height: tuple = (160, 256)          # output image rows (the fan's bounding box)
    max_frames: int = 64
    dilated_p: float = 0.2
    views: tuple = ("a4c", "a2c")
    headroom_db: tuple = (8.0, 22.0)     # display top above typical tissue: more = a darker image
    dark_background_p: float = 0.0
    dark_background: tuple = (0.01, 0.12)   # a dark background's echogenicity, relative to the myocardium
    valve: tuple = (1.2, 4.0)           # leaflets' and annulus' echogenicity, relative to the myocardium


@dataclass
class SimParams:
    seed: int
    view: str
    shape: HeartShape
    probe: Probe
    ef: float
    heart_rate: float
    fps: float
    n_frames: int
    start_phase: float
    height: int
    look: dict = field(default_factory=dict)      # echogenicities and artefact switches


def sample_params(seed: int, ranges: Ranges | None = None) -> SimParams:
    r = ranges or Ranges()
    rng = np.random.default_rng([int(seed), 20261201])
    view = str(rng.choice(list(r.views)))
    shape = sample_shape(rng, view, dilated=bool(rng.random() < r.dilated_p))
    ef = float(rng.uniform(*r.ef))
    if shape.width > 27 and ef > 0.45:           # dilated ventricles eject less
        ef = float(rng.uniform(r.ef[0], 0.45))
    hr = float(rng.uniform(*r.heart_rate))
    fps = float(rng.uniform(*r.fps))
    beats = float(rng.uniform(r.beats[0], r.beats[1]))
    # long loops: fewer beats first (at least one whole cycle), then a lower frame rate
    beats = max(1.05, min(beats, r.max_frames * hr / 60.0 / fps))
    fps = min(fps, r.max_frames * hr / 60.0 / beats)
    n_frames = int(np.clip(round(beats * 60.0 / hr * fps), 12, r.max_frames))
    depth_needed = shape.apex[1] + shape.length + shape.la_depth * 0.9
    depth = float(np.clip(rng.uniform(*r.depth), depth_needed * rng.uniform(0.9, 1.15), 230.0))
    sector = np.deg2rad(rng.uniform(*r.sector_deg))
    f0 = float(rng.uniform(*r.f0))
    height = int(rng.integers(r.height[0], r.height[1] + 1))
    probe = Probe(depth=depth, r_min=float(rng.uniform(0, 8) if rng.random() < 0.6 else 0.0), sector=float(sector),
                  f0=f0, n_lines=int(rng.integers(96, 176)), n_samples=int(height * rng.uniform(1.3, 1.8)),
                  focus=float(rng.uniform(0.4, 0.8) * depth), aperture=float(rng.uniform(14.0, 22.0)),
                  pulse_cycles=float(rng.uniform(1.5, 3.0)), atten_db=float(rng.uniform(0.4, 0.8)),
                  tgc_comp=float(rng.uniform(0.6, 1.0)), gain_db=float(rng.uniform(-6, 6)),
                  dyn_range=float(rng.uniform(*r.dyn_range)), gamma=float(rng.uniform(0.7, 1.5)),
                  noise_db=float(rng.uniform(-68, -46)), side_lobe=float(rng.uniform(0.0, 0.04)),
                  density=float(rng.uniform(3.0, 6.0)))
    look = dict(
        myo=float(rng.uniform(0.4, 1.0)), blood=float(10 ** rng.uniform(-5.0, -3.3)),
        smoke=float(10 ** rng.uniform(-3.3, -2.0)) if rng.random() < 0.35 else 0.0,
        background=float(rng.uniform(0.04, 0.6)) * 0.8, peri=float(rng.uniform(3.0, 12.0)),
        valve=float(rng.uniform(*r.valve)), wall_thin=float(rng.uniform(0.3, 1.0)),
        dropout=float(rng.uniform(0.05, 0.5)) if rng.random() < 0.6 else 1.0,
        dropout_center=float(rng.uniform(0.1, 0.7)), dropout_side=int(rng.choice([1, 1, -1])),
        clutter=float(10 ** rng.uniform(-1.5, -0.3)) if rng.random() < 0.4 else 0.0,
        clutter_depth=float(rng.uniform(20, 45)),
        reverb=float(rng.uniform(0.05, 0.25)) if rng.random() < 0.3 else 0.0,
        shadow=float(rng.uniform(0.15, 0.6)) if rng.random() < 0.25 else 1.0,
        shadow_theta=float(rng.uniform(-0.45, 0.45)), shadow_width=float(rng.uniform(0.05, 0.15)),
        shadow_depth=float(rng.uniform(20, 60)),
        jitter=float(rng.uniform(0.05, 0.35)), texture=float(rng.uniform(0.3, 0.9)),
        tint=float(rng.uniform(-0.05, 0.05)), headroom=float(rng.uniform(*r.headroom_db)))
    if r.dark_background_p and rng.random() < r.dark_background_p:
        # lung and fat beside the heart: the fan's sides nearly black, as on many real scanners
        look["background"] = float(look["myo"] * rng.uniform(*r.dark_background))
    return SimParams(seed=int(seed), view=view, shape=shape, probe=probe, ef=ef, heart_rate=hr, fps=fps,
                     n_frames=n_frames, start_phase=float(rng.uniform(0, 1)), height=height, look=look)


@dataclass
class SimCine:
    """A simulated cine: the fan's bounding box as a grey image, exact labels and the fan mask."""

    frames: np.ndarray           # (T, H, W) uint8
    labels: np.ndarray           # (T, H, W) uint8: 1 LV, 2 MYO, 3 LA (CAMUS), 0 elsewhere
    fan: np.ndarray              # (H, W) bool: the imaged sector
    spacing: tuple               # (row_mm, col_mm)
    fps: float
    ed_frames: list
    es_frames: list
    params: SimParams
    volume: np.ndarray           # (T,) normalised LV volume of the motion model


def output_grid(p: Probe, height: int) -> tuple[np.ndarray, np.ndarray, float]:
    """mm coordinates (x, y) of pixel centres covering the sector's bounding box; square pixels."""
    half = p.sector / 2
    x1 = p.depth * np.sin(half)
    y0 = p.r_min * np.cos(half) if half < np.pi / 2 else 0.0
    y1 = p.depth
    px = (y1 - y0) / height
    width = int(round(2 * x1 / px))
    xs = -x1 + (np.arange(width) + 0.5) * px
    ys = y0 + (np.arange(height) + 0.5) * px
    gx, gy = np.meshgrid(xs, ys)
    return gx, gy, px


def rasterise(poly: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Pixel centres inside a closed polygon (exact test, restricted to its bounding box)."""
    out = np.zeros(gx.shape, dtype=bool)
    x0, y0 = gx[0, 0], gy[0, 0]
    px = gx[0, 1] - gx[0, 0]
    c0 = max(int(np.floor((poly[:, 0].min() - x0) / px)), 0)
    c1 = min(int(np.ceil((poly[:, 0].max() - x0) / px)) + 1, gx.shape[1])
    r0 = max(int(np.floor((poly[:, 1].min() - y0) / px)), 0)
    r1 = min(int(np.ceil((poly[:, 1].max() - y0) / px)) + 1, gx.shape[0])
    if c1 <= c0 or r1 <= r0:
        return out
    pts = np.stack([gx[r0:r1, c0:c1].ravel(), gy[r0:r1, c0:c1].ravel()], axis=1)
    out[r0:r1, c0:c1] = MplPath(poly).contains_points(pts).reshape(r1 - r0, c1 - c0)
    return out


def label_map(fr, gx, gy, fan) -> np.ndarray:
    lab = np.zeros(gx.shape, dtype=np.uint8)
    lab[rasterise(fr.la, gx, gy)] = 3
    lab[rasterise(fr.myo, gx, gy)] = 2
    lab[rasterise(fr.lv, gx, gy)] = 1
    lab[~fan] = 0
    return lab


class Canvas:
    """The echogenicity map on a MAP_MM grid over the sector's bounding box, drawn with PIL."""

    def __init__(self, p: Probe):
        half = p.sector / 2
        self.x0 = -p.depth * np.sin(half) * 1.1
        self.y0 = 0.0
        self.w = int(np.ceil(-2 * self.x0 / MAP_MM))
        self.h = int(np.ceil(p.depth * 1.05 / MAP_MM))

    def pix(self, xy: np.ndarray) -> list:
        q = (np.asarray(xy) - [self.x0, self.y0]) / MAP_MM
        return [tuple(v) for v in q.tolist()]

    def mask(self, draw_fn) -> np.ndarray:
        img = Image.new("L", (self.w, self.h), 0)
        draw_fn(ImageDraw.Draw(img))
        return np.asarray(img, dtype=np.float32) / 255.0

    def sample(self, field_: np.ndarray, xy: np.ndarray) -> np.ndarray:
        q = (xy - [self.x0, self.y0]) / MAP_MM
        return ndimage.map_coordinates(field_, [q[:, 1], q[:, 0]], order=1, mode="nearest")


def echo_map(fr, sp: SimParams, cv: Canvas, background: np.ndarray, rng: np.random.Generator):
    """(echogenicity, blood indicator) maps of one frame, drawn hard and smoothed once (soft edges)."""
    lk = sp.look
    cav = [fr.lv, fr.la] + ([fr.rv, fr.ra] if fr.rv is not None else [])
    blood_img = Image.new("L", (cv.w, cv.h), 0)
    db = ImageDraw.Draw(blood_img)
    for poly in cav:
        db.polygon(cv.pix(poly), fill=255)
    # tissue inside the cavities (papillary muscles, trabeculae) is not blood
    for poly in fr.papillary:
        db.polygon(cv.pix(poly), fill=0)
    if fr.trabeculae is not None:
        for t in cv.pix(fr.trabeculae):
            db.ellipse(_disc(t, 2.2), fill=0)
    # nor are the valve leaflets and the fibrous annulus: they lie inside the cavity outlines, and without
    # this the blood erased them, leaving the LV base (the annulus line of the labels) invisible
    _draw_valves(db, fr, cv, fill=0)
    blood = np.asarray(blood_img, dtype=np.float32) / 255.0
    # tissue levels, drawn in order (later wins) on a float image via a level-coded 8-bit canvas
    lev_img = Image.new("L", (cv.w, cv.h), 0)
    dl = ImageDraw.Draw(lev_img)
    dl.polygon(cv.pix(fr.myo), fill=1)
    for w in (fr.la_wall, fr.ra_wall):
        if w is not None:
            dl.line(cv.pix(w), fill=2, width=_line_px(2.5), joint="curve")
    if fr.rv_wall is not None:
        dl.line(cv.pix(fr.rv_wall), fill=1, width=_line_px(4.0), joint="curve")
    dl.line(cv.pix(fr.epi[len(fr.epi) // 3:] + 2.0 * _outward(fr)), fill=3, width=_line_px(2.5), joint="curve")
    _draw_valves(dl, fr, cv, fill=4)
    lev = np.asarray(lev_img)
    bg_rel = background / max(lk["background"], 1e-3)
    table = np.array([0.0, lk["myo"], lk["myo"] * lk["wall_thin"], lk["peri"], lk["valve"]], dtype=np.float32)
    tissue = table[lev] * (0.75 + 0.25 * bg_rel)
    E = np.where(lev > 0, tissue, background)
    E = E * (1.0 - blood) + blood * (lk["blood"] + lk["smoke"] * bg_rel)
    E = np.where((lev == 0) & (blood == 0) & _inside(cav, cv), lk["myo"] * 0.9, E)
    E = ndimage.gaussian_filter(E, 0.6)
    blood = ndimage.gaussian_filter(blood, 0.6)
    if lk["dropout"] < 1.0:
        # walls parallel to the beam reflect little: fade a stretch of the lateral (or septal) wall
        n = len(fr.endo)
        i = int(np.clip(n // 2 + lk["dropout_side"] * (1 - lk["dropout_center"]) * (n // 2), 0, n - 1))
        c = 0.5 * (fr.endo[i] + fr.epi[i])
        gx = cv.x0 + (np.arange(cv.w) + 0.5) * MAP_MM
        gy = cv.y0 + (np.arange(cv.h) + 0.5) * MAP_MM
        m = np.exp(-0.5 * ((gy[:, None] - c[1]) ** 2 + (gx[None, :] - c[0]) ** 2) / 14.0 ** 2)
        E = E * (1 - (1 - lk["dropout"]) * m)
    return E, blood


def _draw_valves(draw, fr, cv, fill: int) -> None:
    """The valve leaflets and the mitral annulus hinge points, with ``fill``, on a canvas-sized PIL drawing."""
    for v in fr.valves:
        draw.line(cv.pix(v), fill=fill, width=_line_px(VALVE_MM), joint="curve")
    for q in cv.pix(np.asarray(fr.annulus)):
        draw.ellipse(_disc(q, ANNULUS_MM / MAP_MM), fill=fill)


def _line_px(mm: float) -> int:
    """A line width in map pixels (at least one)."""
    return max(int(round(mm / MAP_MM)), 1)


def _disc(centre, radius: float) -> list:
    return [centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius]


def _inside(cav, cv):
    """Tissue inside a cavity outline (papillary muscles, trabeculae): any cavity polygon covers it."""
    img = Image.new("L", (cv.w, cv.h), 0)
    d = ImageDraw.Draw(img)
    for poly in cav[:1]:
        d.polygon(cv.pix(poly), fill=1)
    return np.asarray(img, dtype=bool)


def _outward(fr) -> np.ndarray:
    d = fr.epi[len(fr.epi) // 3:] - fr.endo[len(fr.endo) // 3:]
    return d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)


def background_map(cv: Canvas, sp: SimParams, rng: np.random.Generator) -> np.ndarray:
    lk = sp.look
    tex = ndimage.gaussian_filter(rng.standard_normal((cv.h, cv.w)), 6.0 / MAP_MM)
    tex = tex / (tex.std() + 1e-9)
    bg = lk["background"] * np.exp(lk["texture"] * 0.6 * tex)
    yy = (np.arange(cv.h) * MAP_MM)[:, None]
    bg = bg * (1.0 + 1.2 * np.exp(-yy / 12.0))        # chest wall: brighter near field
    return bg.astype(np.float32)


def loop_motion(sp: SimParams, rng: np.random.Generator):
    """Timing, LA curve and mitral opening of a case, plus the ED reference geometry."""
    timing = loop_timing(sp.n_frames, sp.fps, sp.heart_rate, sp.ef, sp.start_phase, beat_jitter=0.04, rng=rng)
    la_curve = 1.0 + sp.shape.la_gain * (1.0 - timing.volume) / max(sp.ef, 0.05) * 0.5
    # mitral valve: open while filling (not in systole). It closes over the frames before ED and is shut on
    # the ED frame itself (ED is mitral closure; a symmetric smoothing left it a quarter open there, and the
    # LV label's basal line ran between open leaflets), and opens after isovolumic relaxation over ~2 frames
    open_ = ~timing.systole
    open_[list(timing.ed_frames)] = False
    valve = np.minimum(ndimage.gaussian_filter1d(open_.astype(float), 0.8), open_)
    return timing, la_curve, valve, heart_frame(sp.shape, 1.0, la_curve.max(), 0.0, sp.ef)


def tissue_frames(sp: SimParams, xy0: np.ndarray, motion, cv, background, rng: np.random.Generator, frame_ids=None):
    """For each frame: (t, geometry, scatterer positions (N, 2) mm, echogenicity, blood indicator) of
    the scatterers ``xy0`` (ED reference positions) moved with the tissue. ``motion`` from
    `loop_motion`, ``background`` from `background_map` on the `Canvas` ``cv``. Shared by both image
    formation models (this convolution model and `simus`)."""
    p = sp.probe
    timing, la_curve, valve, ref_fr = motion
    c_ref = ref_fr.control
    # anchors: the tissue far from the heart does not move
    ang = np.linspace(-p.sector, p.sector, 13)
    anchors = np.concatenate([np.stack([rr * np.sin(ang), rr * np.cos(ang)], 1) for rr in (3.0, p.depth * 1.1, p.depth * 1.4)])
    for t in (range(sp.n_frames) if frame_ids is None else frame_ids):
        fr = heart_frame(sp.shape, float(timing.volume[t]), float(la_curve[t]), float(valve[t]), sp.ef)
        disp = np.concatenate([fr.control - c_ref, np.zeros_like(anchors)])
        rbf = RBFInterpolator(np.concatenate([c_ref, anchors]), disp, kernel="thin_plate_spline", smoothing=1.0,
                              degree=1)
        xy = xy0 + displacement_at(rbf, xy0, p)
        E, blood = echo_map(fr, sp, cv, background, rng)
        yield t, fr, xy, cv.sample(E, xy), cv.sample(blood, xy)


def simulate(sp: SimParams, progress=None) -> SimCine:
    rng = np.random.default_rng([sp.seed, 1])
    p = sp.probe
    motion = loop_motion(sp, rng)
    timing = motion[0]
    beam = BeamModel(p)
    cv = Canvas(p)
    background = background_map(cv, sp, rng)
    xy0 = sample_scatterers(p, rng)
    z = (rng.standard_normal(len(xy0)) + 1j * rng.standard_normal(len(xy0))) / np.sqrt(2)
    gx, gy, px = output_grid(p, sp.height)
    fan = sector_mask(p, gx, gy)
    frames = np.zeros((sp.n_frames,) + gx.shape, dtype=np.uint8)
    labels = np.zeros_like(frames)
    shadow = _shadow_map(beam, sp)
    ref_amp = None
    lk = sp.look
    for t, fr, xy, e, b in tissue_frames(sp, xy0, motion, cv, background, rng):
        phase = np.exp(1j * (lk["jitter"] * rng.standard_normal(len(xy)) * (1 - b)
                             + 2 * np.pi * rng.random(len(xy)) * b))
        amp = z * np.sqrt(np.maximum(e, 0)) * phase
        iq = beam.blur(beam.iq(xy, amp))
        iq = iq * shadow
        if lk["clutter"] > 0:
            iq = iq + _clutter(beam, sp, rng, t) * lk["clutter"]
        if lk["reverb"] > 0:
            iq = _reverb(iq, beam, lk["reverb"])
        if ref_amp is None:
            a = np.abs(iq * beam.depth_gain[:, None])
            # the display's top sits a random headroom above typical tissue (the 75th percentile)
            ref_amp = np.quantile(a[a > 0], 0.75) * 10 ** (lk["headroom"] / 20.0)
        polar = beam.envelope(iq, rng, ref_amp)
        img = scan_convert(polar, p, gx, gy)
        frames[t] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
        labels[t] = label_map(fr, gx, gy, fan)
        if progress:
            progress(t + 1, sp.n_frames)
    return SimCine(frames=frames, labels=labels, fan=fan, spacing=(px, px), fps=sp.fps, ed_frames=timing.ed_frames,
                   es_frames=timing.es_frames, params=sp, volume=timing.volume)


def displacement_at(rbf, xy0: np.ndarray, p: Probe, n: int = 48) -> np.ndarray:
    """The displacement field on a coarse grid, bilinear at the scatterers (far cheaper than per point)."""
    x1 = p.depth * 1.15
    xs = np.linspace(-x1, x1, n)
    ys = np.linspace(-5.0, p.depth * 1.1, n)
    g = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    d = rbf(g).reshape(n, n, 2)
    fx = (xy0[:, 0] - xs[0]) / (xs[1] - xs[0])
    fy = (xy0[:, 1] - ys[0]) / (ys[1] - ys[0])
    return np.stack([ndimage.map_coordinates(d[..., k], [fy, fx], order=1, mode="nearest") for k in range(2)], 1)


def _shadow_map(beam: BeamModel, sp: SimParams) -> np.ndarray:
    lk = sp.look
    if lk["shadow"] >= 1.0:
        return 1.0
    th = beam.th[None, :]
    r = beam.r[:, None]
    ang = np.exp(-0.5 * ((th - lk["shadow_theta"]) / lk["shadow_width"]) ** 2)
    deep = 1.0 / (1.0 + np.exp(-(r - lk["shadow_depth"]) / 3.0))
    return 1.0 - (1.0 - lk["shadow"]) * ang * deep


def _clutter(beam: BeamModel, sp: SimParams, rng: np.random.Generator, t: int) -> np.ndarray:
    """Near-field haze: slowly changing, spatially smooth complex noise in the first centimetres."""
    crng = np.random.default_rng([sp.seed, 3])
    shape = (len(beam.r), len(beam.th))
    base = crng.standard_normal(shape) + 1j * crng.standard_normal(shape)
    fresh = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    c = 0.85 * base + 0.5 * fresh
    c = ndimage.gaussian_filter(c.real, (1.5, 2.0)) + 1j * ndimage.gaussian_filter(c.imag, (1.5, 2.0))
    env = np.exp(-(beam.r / sp.look["clutter_depth"]) ** 2)[:, None]
    scale = np.sqrt(sp.look["myo"]) * 0.2
    return c * env * scale


def _reverb(iq: np.ndarray, beam: BeamModel, weight: float) -> np.ndarray:
    """A ghost of the near-field layer at twice its depth (multiple reflection chest wall <-> probe)."""
    n = iq.shape[0]
    k = max(int(0.12 * n), 2)
    ghost = np.zeros_like(iq)
    src = iq[:k]
    ghost[k:2 * k] = src * weight
    ghost[2 * k:3 * k] = src * weight * 0.4
    return iq + ghost
