"""Frames with their neighbours in time (MemSAM ``neighbour_channels``): the stacking, the session's
encoding in batches, the trainer's clips, and the model actually reading the neighbours.

Real tiny MemSAM models (random weights) on phantom cines.
"""
import dataclasses

import numpy as np
import pytest
import torch

from echosam.checkpoints import LoadedModel, load_checkpoint, save_checkpoint
from echosam.errors import ModelError
from echosam.models.frame_input import clip_neighbour_frames, frame_context, neighbour_frames
from echosam.models.memsam import MemSAMConfig
from echosam.models.registry import build_model, preset_config
from echosam.phantom import make_phantom
from echosam.session import Session
from training.steps import prepare_images


def _memsam(neighbours: bool, seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(preset_config("memsam", "tiny"), neighbour_channels=neighbours)
    return LoadedModel(build_model("memsam", cfg).eval(), "memsam", cfg, {}, None, "cpu")


def _frames(n=6, h=5, w=7):
    # frame t holds the value t everywhere: every channel says which frame it came from
    return torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, h, w).clone()


def test_neighbour_frames_stack_previous_current_next_and_repeat_the_ends():
    x = _frames()
    out = neighbour_frames(x, 0, 6, 1)
    assert out.shape == (6, 3, 5, 7)
    assert out[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [4, 5, 5]]
    assert neighbour_frames(x, 2, 4, 2)[:, :, 0, 0].tolist() == [[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]]
    assert torch.equal(neighbour_frames(x, 1, 3, 0), x[1:3])          # no context: the frames as they are


def test_training_clips_take_neighbours_within_each_clip_only():
    clips = torch.stack([_frames(4), _frames(4) + 10])                  # (B=2, T=4, H, W)
    out = clip_neighbour_frames(clips, 1)
    assert out.shape == (8, 3, 5, 7)
    assert out[:, :, 0, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3],
                                         [10, 10, 11], [10, 11, 12], [11, 12, 13], [12, 13, 13]]
    assert torch.equal(clip_neighbour_frames(clips, 0), clips.reshape(8, 5, 7))


def test_model_asks_for_neighbours_and_refuses_single_frames():
    grey, nb = _memsam(False).model, _memsam(True).model
    assert frame_context(grey) == 0 and frame_context(nb) == 1
    with pytest.raises(ModelError, match="neighbour_frames"):
        nb.prepare_frames(torch.zeros(2, 32, 32))
    # the switch travels with the checkpoint; older files without it keep one grey frame
    assert MemSAMConfig.from_dict(nb.config.to_dict()).neighbour_channels is True
    legacy = {k: v for k, v in grey.config.to_dict().items() if k != "neighbour_channels"}
    assert MemSAMConfig.from_dict(legacy).neighbour_channels is False


def test_trainer_feeds_the_clip_neighbours_as_channels():
    lm = _memsam(True)
    frames = torch.rand(1, 3, 40, 48) * 255
    images = prepare_images(lm.model, frames, "cpu")
    assert images.shape == (1, 3, 3, 64, 64)
    single = lm.model.prepare_frames(frames[0, [0, 1, 2]][None])       # frame 1 with frames 0 and 2
    assert torch.allclose(images[0, 1], single[0])


@pytest.fixture(scope="module")
def ph():
    return make_phantom(n_frames=9, seed=4, size=(56, 64), heart_rate=80)


def test_session_encodes_each_frame_with_its_loop_neighbours_in_any_batch_size(ph):
    lm = _memsam(True)
    ref = Session(ph.cine, lm, structures=["lv"], batch_size=100, cache_dtype="fp32")
    grey = torch.from_numpy(np.asarray(ref.grey, dtype=np.float32))
    for t in (0, 4, 8):                                                 # both ends repeat themselves
        expect = lm.model.prepare_frames(neighbour_frames(grey, t, t + 1, 1))
        assert torch.equal(ref.features.images(t, t + 1), expect)
    ref.encode()
    chunked = Session(ph.cine, lm, structures=["lv"], batch_size=2, cache_dtype="fp32")
    chunked.encode()                                                    # batches cut across neighbours
    for name, v in ref.features.features.tensors().items():
        assert torch.allclose(v, chunked.features.features.tensors()[name], atol=1e-5), name


def test_a_neighbour_model_reads_the_neighbouring_frames_and_propagates(ph, tmp_path):
    def run(lm, cine):
        s = Session(cine, lm, structures=["lv"], cache_dtype="fp32")
        yx = np.argwhere(ph.labels[0] == 1)
        s.add_points(0, "lv", [[float(yx[len(yx) // 2][1]), float(yx[len(yx) // 2][0])]], [1])
        s.propagate()
        return s.features.frame(4).embedding, np.asarray(s.labels)

    changed = ph.cine.frames.copy()
    changed[5] = changed[5][:, ::-1]                                    # only frame 5 differs
    altered = type(ph.cine).from_array(changed, spacing=ph.cine.spacing, fps=ph.cine.fps, name="altered")
    nb = _memsam(True)
    emb, labels = run(nb, ph.cine)
    assert labels.shape == ph.labels.shape and set(np.unique(labels)) <= {0, 1}
    assert not torch.allclose(emb, run(nb, altered)[0])                 # frame 4 sees frame 5
    grey = _memsam(False)
    assert torch.equal(run(grey, ph.cine)[0], run(grey, altered)[0])    # a grey model does not
    # a saved neighbour model loads as one and gives the same labels
    path = save_checkpoint(nb.model, "memsam", nb.config, tmp_path / "nb.safetensors", provenance={"test": 1})
    again = load_checkpoint(path)
    assert again.config.neighbour_channels and np.array_equal(run(again, ph.cine)[1], labels)
