"""Heart geometry of an apical four- or two-chamber view, per frame, in millimetres.

Coordinates: the probe's virtual apex at (0, 0), ``x`` lateral (mm, + = screen right), ``y`` depth
(mm, down). The LV is described in its own frame: ``d`` the long-axis unit vector from apex to the
mitral-annulus midpoint, ``n`` the lateral normal (screen right in A4C: the LV lateral wall; in
A2C: the anterior wall). The endocardium is a closed-at-the-base curve parameterised by
``phi`` in [-pi/2, pi/2] (septal/inferior base -> apex -> lateral/anterior base) with axial position
``a = L cos(phi)`` measured from the base and half-width ``hw(s) = W (1 - s^alpha)^beta (1 + g sin(pi s))``
at ``s = a / L``. Contraction follows the normalised volume ``v``: the long axis scales by
``v**gamma_l`` (the base descends, the apex stays), widths by ``v**((1 - gamma_l) / 2)``, except in a
hypokinetic segment, and the wall thickens where it shortens (``h = h0 / lambda**kappa``, area kept).

Labels follow CAMUS: LV cavity closed by the straight mitral-annulus line (papillary muscles and
trabeculations count as cavity), myocardium = the LV wall between endo- and epicardium closed at
the base, LA = the atrial cavity closed by the same annulus line.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

N_CONTOUR = 96


@dataclass
class HeartShape:
    """Random anatomy of one case (all lengths in mm, angles in radians)."""

    view: str                       # "a4c" | "a2c"
    apex: np.ndarray                # (2,) LV endocardial apex (x, y)
    tilt: float                     # long axis angle from the beam centre line (+ = base to the right)
    length: float                   # ED long axis (apex -> annulus midpoint)
    width: float                    # ED maximal half-width
    asym: float                     # lateral half-width = W (1 + asym), septal W (1 - asym)
    alpha: float
    beta: float
    bulge: float
    thick: float                    # ED wall thickness at mid level
    apex_thin: float                # thickness factor at the apex
    base_septum: float              # extra septal basal thickness (sigmoid septum), mm
    gamma_l: float                  # share of volume change taken by the long axis
    kappa: float                    # thickening exponent
    hypo_side: int                  # -1 septal/inferior, +1 lateral/anterior, 0 none
    hypo_center: float              # in s (0 base .. 1 apex)
    hypo_width: float
    hypo_depth: float               # 0 normal .. 1 akinetic
    la_depth: float                 # LA long semi-axis
    la_width: float                 # LA maximal half-width
    la_gain: float                  # LA volume change vs LV stroke volume
    rv_width: float                 # tricuspid annulus width
    rv_len: float                   # 0..1: where the RV apex meets the septum (s)
    rv_ef: float
    ra_depth: float
    ra_width: float
    pap: list = field(default_factory=list)    # papillary muscles: (side, s, length, width)
    trab: int = 0                   # trabeculation count
    seed: int = 0


def sample_shape(rng: np.random.Generator, view: str, dilated: bool = False) -> HeartShape:
    length = rng.uniform(72, 98) * (1.1 if dilated else 1.0)
    width = rng.uniform(19, 27) * (1.25 if dilated else 1.0)
    tilt = np.deg2rad(rng.uniform(-6, 18) if view == "a4c" else rng.uniform(-10, 10))
    apex_depth = rng.uniform(14, 34)
    apex_x = rng.uniform(-2, 12) if view == "a4c" else rng.uniform(-6, 6)
    paps = []
    if rng.random() < 0.85:
        paps.append((1, rng.uniform(0.35, 0.55), rng.uniform(12, 20), rng.uniform(5, 9)))
    if rng.random() < 0.4:
        paps.append((-1, rng.uniform(0.4, 0.6), rng.uniform(9, 15), rng.uniform(4, 7)))
    hypo = rng.random() < 0.35
    return HeartShape(
        view=view, apex=np.array([apex_x, apex_depth]), tilt=tilt, length=length, width=width,
        asym=rng.uniform(-0.08, 0.14), alpha=rng.uniform(1.7, 2.6), beta=rng.uniform(0.42, 0.62),
        bulge=rng.uniform(0.0, 0.16), thick=rng.uniform(6.5, 12.0) * (0.8 if dilated else 1.0),
        apex_thin=rng.uniform(0.55, 0.85), base_septum=rng.uniform(0, 4) if rng.random() < 0.3 else 0.0,
        gamma_l=rng.uniform(0.18, 0.34), kappa=rng.uniform(0.6, 1.0),
        hypo_side=int(rng.choice([-1, 1])) if hypo else 0, hypo_center=rng.uniform(0.3, 0.95),
        hypo_width=rng.uniform(0.12, 0.3), hypo_depth=rng.uniform(0.5, 1.0) if hypo else 0.0,
        la_depth=rng.uniform(30, 52), la_width=rng.uniform(17, 27), la_gain=rng.uniform(0.4, 0.9),
        rv_width=rng.uniform(26, 40), rv_len=rng.uniform(0.62, 0.85), rv_ef=rng.uniform(0.3, 0.6),
        ra_depth=rng.uniform(28, 45), ra_width=rng.uniform(15, 23), pap=paps, trab=int(rng.integers(0, 10)),
        seed=int(rng.integers(2**31)))


@dataclass
class HeartFrame:
    """The geometry of one frame; closed polygons are (N, 2) arrays of (x, y) mm."""

    lv: np.ndarray                  # LV cavity (closed by the annulus line)
    myo: np.ndarray                 # LV wall polygon
    la: np.ndarray                  # LA cavity
    endo: np.ndarray                # open endocardial curve, septal base -> apex -> lateral base
    epi: np.ndarray                 # open epicardial curve, same order
    la_wall: np.ndarray             # open LA contour (lateral annulus -> roof -> septal annulus)
    rv: np.ndarray | None = None    # RV cavity
    rv_wall: np.ndarray | None = None   # open RV free-wall endocardial curve
    ra: np.ndarray | None = None
    ra_wall: np.ndarray | None = None
    valves: list = field(default_factory=list)     # line segments [(p0, p1), ...]
    papillary: list = field(default_factory=list)  # closed polygons (tissue inside the cavity)
    trabeculae: np.ndarray | None = None           # (K, 2) small tissue specks
    annulus: tuple = ()                             # (septal point, lateral point) of the mitral annulus
    control: np.ndarray | None = None               # (N, 2) tissue points in a fixed order (motion field)


def _rot(d: np.ndarray) -> np.ndarray:
    return np.array([d[1], -d[0]])


def _normals(curve: np.ndarray) -> np.ndarray:
    g = np.gradient(curve, axis=0)
    n = np.stack([g[:, 1], -g[:, 0]], axis=1)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)


def _local_scale(shape: HeartShape, s: np.ndarray, side: np.ndarray, f_w: float) -> np.ndarray:
    """Width scale per contour point: the global ``f_w`` except in the hypokinetic segment."""
    if shape.hypo_side == 0:
        return np.full_like(s, f_w)
    bump = np.exp(-0.5 * ((s - shape.hypo_center) / shape.hypo_width) ** 2) * (side == shape.hypo_side)
    # the apex is shared by both sides: let a hypokinetic apex affect both
    bump = np.maximum(bump, np.exp(-0.5 * ((s - shape.hypo_center) / shape.hypo_width) ** 2) * (s > 0.85)
                      * (shape.hypo_center > 0.8))
    return 1.0 - (1.0 - f_w) * (1.0 - shape.hypo_depth * bump)


def _ellipse_cap(base_mid, d, n, half_annulus, depth, width, n_pts=48, skew=0.0):
    """Open curve from the lateral annulus point (+n) round the chamber roof to the septal one (-n)."""
    tau = np.linspace(0.0, np.pi, n_pts)
    v = np.cos(tau) * (half_annulus + (width - half_annulus) * np.sin(tau) ** 0.8)
    u = depth * np.sin(tau) * (1.0 + skew * np.cos(tau))
    return base_mid[None] + u[:, None] * d[None] + v[:, None] * n[None]


def heart_frame(shape: HeartShape, v: float, la_v: float, valve_open: float, ef_nominal: float) -> HeartFrame:
    """Geometry at normalised LV volume ``v`` (1 = ED), LA volume factor ``la_v`` and mitral opening
    ``valve_open`` in 0..1."""
    rng = np.random.default_rng(shape.seed)         # fixed per case: the same trabeculae every frame
    d = np.array([np.sin(shape.tilt), np.cos(shape.tilt)])
    n = np.array([np.cos(shape.tilt), -np.sin(shape.tilt)])   # lateral normal (d rotated by -90 deg)
    f_l = v ** shape.gamma_l
    f_w = v ** ((1.0 - shape.gamma_l) / 2.0)
    L = shape.length * f_l
    phi = np.linspace(-np.pi / 2, np.pi / 2, N_CONTOUR)
    side = np.sign(phi)
    side[side == 0] = 1
    s_apex = np.cos(phi)                            # 1 at the apex, 0 at the base
    a_from_base = L * s_apex                        # axial distance from the base
    w_side = shape.width * (1.0 + shape.asym * side)
    hw0 = w_side * np.clip(1.0 - s_apex ** shape.alpha, 0, 1) ** shape.beta * (1.0 + shape.bulge * np.sin(np.pi * s_apex))
    lam = _local_scale(shape, s_apex, side, f_w)
    hw = hw0 * lam
    base_mid = shape.apex + d * L
    endo = base_mid[None] - a_from_base[:, None] * d[None] + (side * hw)[:, None] * n[None]
    endo[N_CONTOUR // 2] = shape.apex if N_CONTOUR % 2 else endo[N_CONTOUR // 2]
    # wall thickness: thinner apex, thicker where the wall shortens
    h0 = shape.thick * (1.0 - (1.0 - shape.apex_thin) * s_apex ** 2)
    h0 = h0 + shape.base_septum * (side < 0) * np.clip(1.0 - s_apex / 0.35, 0, 1)
    lam_ref = np.maximum(lam, 0.3)
    h = h0 / lam_ref ** shape.kappa
    nrm = _normals(endo)
    # outward normal: away from the cavity centre line
    centre = base_mid[None] - a_from_base[:, None] * d[None]
    out = np.sign(np.sum((endo - centre) * nrm, axis=1, keepdims=True))
    out[out == 0] = 1
    apex_dir = -d
    nrm = nrm * out
    nrm[np.abs(side * hw) < 1e-6] = apex_dir
    epi = endo + h[:, None] * nrm
    # the apex: outward is -d
    lv = np.concatenate([endo, endo[:1]], axis=0)
    myo = np.concatenate([endo, epi[::-1]], axis=0)
    sept_pt, lat_pt = endo[0], endo[-1]
    half_ann = 0.5 * np.linalg.norm(lat_pt - sept_pt)
    ann_mid = 0.5 * (sept_pt + lat_pt)
    la_scale = la_v ** 0.5
    la_wall = _ellipse_cap(ann_mid, d, n, half_ann, shape.la_depth * la_scale, shape.la_width * la_scale)
    la = np.concatenate([la_wall, la_wall[:1]], axis=0)
    valves = []
    # mitral leaflets: anterior (septal side) longer; open -> pointing into the LV, closed -> meet mid-annulus
    for p_att, length, sgn in ((sept_pt, 0.62 * 2 * half_ann, 1.0), (lat_pt, 0.45 * 2 * half_ann, -1.0)):
        closed_tip = ann_mid + 0.08 * half_ann * d            # coaptation slightly toward the LA
        to_mid = closed_tip - p_att
        closed = p_att + to_mid / max(np.linalg.norm(to_mid), 1e-6) * min(length, np.linalg.norm(to_mid) * 1.02)
        open_dir = -d * 0.92 + sgn * n * 0.39
        open_tip = p_att + open_dir / np.linalg.norm(open_dir) * length
        tip = (1 - valve_open) * closed + valve_open * open_tip
        mid = 0.5 * (p_att + tip) + (0.06 * length) * d * (1 - valve_open)
        valves.append(np.stack([p_att, mid, tip]))
    paps = []
    for pside, ps, plen, pwid in shape.pap:
        i = int(np.argmin(np.abs(phi - pside * np.arccos(np.clip(ps, 0, 1)))))
        root = endo[i]
        inward = -nrm[i]
        axis = (0.55 * -d + 0.45 * inward)
        axis /= np.linalg.norm(axis)
        ortho = _rot(axis)
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        plen_t = plen * (0.85 + 0.15 * f_w)
        pts = root[None] + (0.5 * plen_t * (1 + np.cos(t)))[:, None] * axis[None] * 0.9 \
            + (0.5 * pwid * np.sin(t) / lam_ref[i] ** 0.5)[:, None] * ortho[None]
        paps.append(pts)
    trab = None
    if shape.trab:
        k = rng.uniform(0.6, 0.97, shape.trab)
        sidek = rng.choice([-1.0, 1.0], shape.trab)
        idx = np.array([int(np.argmin(np.abs(phi - sk * np.arccos(kk)))) for kk, sk in zip(k, sidek)])
        depth = rng.uniform(0.8, 3.0, shape.trab)
        trab = endo[idx] - nrm[idx] * depth[:, None]
    frame = HeartFrame(lv=lv, myo=myo, la=la, endo=endo, epi=epi, la_wall=la_wall, valves=valves,
                       papillary=paps, trabeculae=trab, annulus=(sept_pt, lat_pt))
    controls = [endo, epi, la_wall]
    if shape.view == "a4c":
        _right_heart(shape, frame, d, n, v, ef_nominal, epi, phi, la_scale, valve_open)
        controls += [frame.rv_wall, frame.ra_wall]
    frame.control = np.concatenate(controls, axis=0)
    return frame


def _right_heart(shape, frame, d, n, v, ef_nominal, epi, phi, la_scale, valve_open):
    """RV cavity left of the septum (A4C), its free wall, the RA and the tricuspid leaflets."""
    rv_scale = 1.0 - shape.rv_ef * (1.0 - v) / max(ef_nominal, 0.05)
    rv_scale = float(np.clip(rv_scale, 0.35, 1.0))
    sept_epi = epi[: N_CONTOUR // 2 + 1]            # septal side, base -> apex
    s_idx = int(np.argmin(np.abs(np.cos(phi[: N_CONTOUR // 2 + 1]) - shape.rv_len)))
    rv_apex = sept_epi[s_idx]
    tv_sept = sept_epi[0] - d * 6.0 * (0.6 + 0.4 * rv_scale)
    tv_lat = tv_sept - n * shape.rv_width * (0.82 + 0.18 * rv_scale)
    # free wall: quadratic Bezier from the TV lateral point to the RV apex, bulging to the left
    mid = 0.5 * (tv_lat + rv_apex) - n * (8.0 + 10.0 * rv_scale)
    t = np.linspace(0, 1, 40)[:, None]
    free = (1 - t) ** 2 * tv_lat + 2 * (1 - t) * t * mid + t ** 2 * rv_apex
    septal = sept_epi[: s_idx + 1][::-1]            # apex junction -> septal base
    rv = np.concatenate([free, septal, tv_sept[None], free[:1]], axis=0)
    frame.rv, frame.rv_wall = rv, free
    half = 0.5 * np.linalg.norm(tv_lat - tv_sept)
    mid_tv = 0.5 * (tv_sept + tv_lat)
    ra_wall = _ellipse_cap(mid_tv, d, -n, half, shape.ra_depth * (1.0 + 0.25 * (1 - rv_scale)) * la_scale ** 0.3,
                           shape.ra_width)
    frame.ra_wall = ra_wall
    frame.ra = np.concatenate([ra_wall, ra_wall[:1]], axis=0)
    for p_att, length, sgn in ((tv_sept, 0.5 * 2 * half, -1.0), (tv_lat, 0.55 * 2 * half, 1.0)):
        closed_tip = p_att + (mid_tv + 0.05 * half * d - p_att) * 0.98
        open_dir = -d * 0.9 + sgn * n * 0.44
        open_tip = p_att + open_dir / np.linalg.norm(open_dir) * length
        tip = (1 - valve_open) * closed_tip + valve_open * open_tip
        frame.valves.append(np.stack([p_att, 0.5 * (p_att + tip), tip]))
