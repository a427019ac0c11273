"""loss.memory_zoom: MemSAM trains with the masks it writes to memory resized at random (training.memory_jitter)."""
import numpy as np
import pytest
import torch

from echosam.errors import ConfigError
from echosam.models.registry import build_model
from training.losses import build_loss
from training.memory_jitter import memory_zoom_transform, zoom_about_centroid


def _disk_logits(size=64, cy=40, cx=20, r=10):
    yy, xx = np.mgrid[:size, :size]
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2) < r ** 2
    return torch.from_numpy(np.where(disk, 10.0, -10.0)).float()[None, None], disk


def _centroid(mask):
    yy, xx = np.nonzero(mask)
    return yy.mean(), xx.mean()


@pytest.mark.parametrize("factor", [0.8, 1.2])
def test_zoom_scales_the_area_by_factor_squared_about_the_mask_centroid(factor):
    logits, disk = _disk_logits()
    out = zoom_about_centroid(logits, torch.tensor([factor]))[0, 0].numpy() > 0
    assert out.sum() / disk.sum() == pytest.approx(factor ** 2, rel=0.06)
    assert np.allclose(_centroid(out), _centroid(disk), atol=0.5)   # off-centre disk: it stays where it was


def test_zoom_by_one_is_identity_and_passes_gradients():
    logits, _ = _disk_logits()
    logits.requires_grad_(True)
    same = zoom_about_centroid(logits, torch.tensor([1.0]))
    assert torch.allclose(same, logits, atol=1e-4)
    zoom_about_centroid(logits, torch.tensor([1.1])).sum().backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0


def test_memory_zoom_setting_is_checked():
    assert memory_zoom_transform(0.0) is None
    for bad in (-0.1, 0.5, 2, "ten %", None):
        with pytest.raises(ConfigError, match="memory_zoom must be in"):
            memory_zoom_transform(bad)
    with pytest.raises(ConfigError, match="prompt-free"):
        build_loss({"name": "dice_ce", "memory_zoom": 0.15})
    build_loss({"name": "memsam", "memory_zoom": 0.15})      # accepted, not passed to the loss function


@torch.no_grad()
def test_memsam_writes_transformed_masks_to_memory_but_outputs_its_own():
    """The hook sees each propagated frame's logits once (not the last frame's: nothing follows it); frame 0's
    output (read from the prompt's memory) is unchanged, later frames read the transformed masks."""
    torch.manual_seed(0)
    model = build_model("memsam", preset="tiny").eval()
    g = torch.Generator().manual_seed(3)
    frames = torch.rand(4, 64, 64, generator=g) * 255
    imgs = model.prepare_frames(frames)[None]
    pts, lab = torch.tensor([[[32.0, 30.0]]]), torch.ones(1, 1)
    seen = []

    def empty_memory(logits):
        seen.append(logits.clone())
        return torch.full_like(logits, -10.0)

    plain = model(imgs, pts, lab)
    hooked = model(imgs, pts, lab, memory_mask_transform=empty_memory)
    assert len(seen) == imgs.shape[1] - 1
    assert torch.allclose(seen[0], plain[:, 0], atol=1e-5)       # the hook got frame 0's own output
    assert torch.equal(hooked[:, 0], plain[:, 0])
    assert (hooked[:, 1:] - plain[:, 1:]).abs().max() > 1e-4
