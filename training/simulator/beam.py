"""Image formation: tissue scatterers through a phased-array beam model in polar coordinates.

A convolution model (as in COLE-type simulators), evaluated in beam coordinates (depth ``r``,
angle ``theta``):
- scatterers are a fixed random cloud (positions in the ED reference configuration, complex
  Gaussian amplitudes) that moves with the tissue's displacement field; their echogenicity is read
  from the current frame's echogenicity map, so speckle moves with the tissue while the brightness
  follows the exact geometry that the labels come from. Blood scatterers get a fresh phase each frame
  (blood speckle decorrelates), tissue a small out-of-plane phase jitter;
- each scatterer adds ``a exp(i 4 pi r / lambda)`` (the baseband IQ phase) to its polar sample;
- the IQ image is convolved with the pulse (axial Gaussian, sigma from the pulse length) and a
  depth-dependent lateral beam profile (narrowest at the transmit focus, widening with distance
  from it; applied row by row as a transfer function along the lines), plus weak side lobes;
- round-trip attenuation ``exp(-2 alpha f r)`` with a time-gain compensation that undoes it only
  partly, additive thermal noise, envelope ``|IQ|``, log compression to a dynamic range, a grey map;
- scan conversion to a Cartesian grid (bilinear in the polar image, zero outside the sector).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.fft import fft, ifft, next_fast_len

SOUND_MM_PER_US = 1.54


@dataclass
class Probe:
    """Acquisition settings of one cine (lengths in mm, angles in radians, frequency in MHz)."""

    depth: float = 150.0            # imaging depth from the virtual apex
    r_min: float = 0.0              # first imaged depth (curved/truncated sector top)
    sector: float = np.deg2rad(75)  # full opening angle
    f0: float = 2.5                 # centre frequency
    n_lines: int = 128
    n_samples: int = 320
    focus: float = 80.0             # transmit focus depth
    aperture: float = 18.0          # active aperture width (mm): angular resolution ~ lambda / aperture
    pulse_cycles: float = 2.0
    atten_db: float = 0.5           # dB / cm / MHz
    tgc_comp: float = 0.85          # share of the attenuation compensated by TGC
    gain_db: float = 0.0
    dyn_range: float = 55.0
    gamma: float = 1.0              # grey map exponent
    noise_db: float = -50.0         # thermal noise, re the brightest tissue
    side_lobe: float = 0.03         # side lobe amplitude relative to the main lobe
    density: float = 6.0            # scatterers per (axial sigma x lateral sigma at focus) cell

    @property
    def wavelength(self) -> float:
        return SOUND_MM_PER_US / self.f0


def polar_axes(p: Probe) -> tuple[np.ndarray, np.ndarray]:
    r = np.linspace(p.r_min, p.depth, p.n_samples)
    th = np.linspace(-p.sector / 2, p.sector / 2, p.n_lines)
    return r, th


def to_polar(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.hypot(xy[..., 0], xy[..., 1]), np.arctan2(xy[..., 0], xy[..., 1])


def sample_scatterers(p: Probe, rng: np.random.Generator, margin: float = 1.1) -> np.ndarray:
    """Reference positions (N, 2) uniformly over the sector's area (plus a margin for motion)."""
    area = 0.5 * p.sector * margin * ((p.depth * 1.03) ** 2 - max(p.r_min - 5, 0) ** 2)
    sig_ax = p.pulse_cycles * p.wavelength / 2.0 / 2.355 * 2
    sig_lat = 0.45 * p.wavelength * p.focus / p.aperture
    n = int(area / (sig_ax * sig_lat) * p.density)
    n = int(np.clip(n, 20000, 400000))
    r0, r1 = max(p.r_min - 5, 0.0), p.depth * 1.03
    r = np.sqrt(rng.uniform(r0 ** 2, r1 ** 2, n))
    th = rng.uniform(-p.sector / 2 * margin, p.sector / 2 * margin, n)
    return np.stack([r * np.sin(th), r * np.cos(th)], axis=1)


class BeamModel:
    """Precomputed PSF and depth profiles for one probe setting; ``render`` makes one frame."""

    def __init__(self, p: Probe):
        self.p = p
        self.r, self.th = polar_axes(p)
        self.dr = self.r[1] - self.r[0]
        self.dth = self.th[1] - self.th[0]
        lam = p.wavelength
        # axial: Gaussian envelope with FWHM = half the pulse length (two-way)
        self.sig_ax = max(p.pulse_cycles * lam / 2.0 / 2.355, 0.7 * self.dr) / self.dr
        # lateral beam width (mm) vs depth: dynamic receive focusing keeps the angular width near
        # lambda / aperture; the fixed transmit focus widens it away from the focal depth
        sig_mm = 0.45 * lam * self.r / p.aperture * (1.0 + 0.5 * ((self.r - p.focus) / p.focus) ** 2)
        sig_mm = np.maximum(sig_mm, 0.5)
        sig_th = np.minimum(sig_mm / np.maximum(self.r, 5.0) / self.dth, 4.0)   # in lines (near field capped)
        # lateral PSF per depth row as a transfer function along the (zero-padded) line axis: exact
        # depth dependence, one FFT pair per frame; side lobes are a weak 4x wider Gaussian
        self.n_pad = next_fast_len(int(p.n_lines + 3 * 4 * sig_th.max()))
        f = np.fft.fftfreq(self.n_pad)[None, :]
        sig = sig_th[:, None]
        self.lat_tf = np.exp(-2 * (np.pi * f * sig) ** 2) + p.side_lobe * np.exp(-2 * (np.pi * f * 4 * sig) ** 2)
        atten = np.exp(-2.0 * p.atten_db / 8.686 * p.f0 * self.r / 10.0)
        tgc = np.exp(2.0 * p.atten_db / 8.686 * p.f0 * self.r / 10.0 * p.tgc_comp)
        self.depth_gain = atten * tgc
        self.noise_gain = tgc

    def iq(self, xy: np.ndarray, amp: np.ndarray) -> np.ndarray:
        """Complex IQ image (n_samples, n_lines) of scatterers at ``xy`` (N, 2) with complex ``amp``."""
        p = self.p
        r, th = to_polar(xy)
        ir = np.rint((r - self.r[0]) / self.dr).astype(np.int64)
        it = np.rint((th - self.th[0]) / self.dth).astype(np.int64)
        ok = (ir >= 0) & (ir < p.n_samples) & (it >= 0) & (it < p.n_lines)
        idx = ir[ok] * p.n_lines + it[ok]
        a = amp[ok] * np.exp(1j * 4.0 * np.pi * r[ok] / p.wavelength)
        re = np.bincount(idx, weights=a.real, minlength=p.n_samples * p.n_lines)
        im = np.bincount(idx, weights=a.imag, minlength=p.n_samples * p.n_lines)
        return (re + 1j * im).reshape(p.n_samples, p.n_lines)

    def blur(self, iq: np.ndarray) -> np.ndarray:
        """Pulse (axial Gaussian) and depth-dependent beam (lateral, with side lobes) convolution."""
        ax = ndimage.gaussian_filter1d(iq.real, self.sig_ax, axis=0, mode="constant", truncate=3.0) \
            + 1j * ndimage.gaussian_filter1d(iq.imag, self.sig_ax, axis=0, mode="constant", truncate=3.0)
        spec = fft(ax, n=self.n_pad, axis=1)
        return ifft(spec * self.lat_tf, axis=1)[:, : self.p.n_lines]

    def envelope(self, iq: np.ndarray, rng: np.random.Generator, ref: float) -> np.ndarray:
        """Attenuation + TGC, thermal noise, envelope and log compression -> grey 0..255 (polar)."""
        p = self.p
        sig = iq * self.depth_gain[:, None]
        noise_amp = ref * 10 ** (p.noise_db / 20.0)
        noise = (rng.standard_normal(sig.shape) + 1j * rng.standard_normal(sig.shape)) * noise_amp
        env = np.abs(sig + noise * self.noise_gain[:, None] / self.noise_gain.max() * 3.0)
        db = 20.0 * np.log10(np.maximum(env, 1e-12) / ref) + p.gain_db
        g = np.clip((db + p.dyn_range) / p.dyn_range, 0.0, 1.0) ** p.gamma
        return g * 255.0


def scan_convert(polar: np.ndarray, p: Probe, grid_x: np.ndarray, grid_y: np.ndarray) -> np.ndarray:
    """Polar image (n_samples, n_lines) -> Cartesian at mm coordinates ``grid_x``/``grid_y`` (H, W);
    0 outside the sector."""
    r, th = np.hypot(grid_x, grid_y), np.arctan2(grid_x, grid_y)
    rr, tt = polar_axes(p)
    fr = (r - rr[0]) / (rr[1] - rr[0])
    ft = (th - tt[0]) / (tt[1] - tt[0])
    out = ndimage.map_coordinates(polar, [fr.ravel(), ft.ravel()], order=1, mode="constant", cval=0.0)
    out = out.reshape(r.shape)
    out[~sector_mask(p, grid_x, grid_y)] = 0.0
    return out


def sector_mask(p: Probe, grid_x: np.ndarray, grid_y: np.ndarray) -> np.ndarray:
    """The exact fan: pixel centres inside the imaged sector."""
    r, th = np.hypot(grid_x, grid_y), np.arctan2(grid_x, grid_y)
    return (r >= p.r_min) & (r <= p.depth) & (np.abs(th) <= p.sector / 2)
