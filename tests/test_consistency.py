"""The connected-region rule (`echosam.consistency`) on exact masks, on logits, and inside a session."""
import numpy as np
import pytest
import torch

from echosam.consistency import PromptedRule, keep_connected, keep_connected_labels
from echosam.session.store import FramePrompt


def disk(shape, cx, cy, r):
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


S = (64, 64)
MAIN = disk(S, 20, 20, 8)
STRAY = disk(S, 52, 52, 4)


def test_stray_blob_far_from_previous_mask_is_dropped():
    prev = disk(S, 21, 20, 8)
    assert np.array_equal(keep_connected(MAIN | STRAY, prev, margin=2), MAIN)


def test_fragment_near_the_anchor_is_kept_a_drifting_one_is_not():
    near = disk(S, 32, 20, 2)                       # a 1 px gap beyond MAIN's edge (x = 28)
    prev = disk(S, 20, 20, 10)
    assert np.array_equal(keep_connected(MAIN | near | STRAY, prev, margin=2), MAIN | near)
    assert np.array_equal(keep_connected(MAIN | near | STRAY, prev, margin=1), MAIN)
    # a blob that overlaps the previous mask but lies beyond the margin from the anchor: dropped (a kept
    # fragment would otherwise become the next frame's reference and drift along)
    drift = disk(S, 36, 20, 2)
    wide = disk(S, 24, 20, 14)
    assert (drift & wide).any()
    assert np.array_equal(keep_connected(MAIN | drift, wide, margin=2), MAIN)


def test_prompt_point_or_box_anchors_a_smaller_component():
    point = np.zeros(S, bool)
    point[52, 52] = True                            # the user clicked the small blob
    assert np.array_equal(keep_connected(MAIN | STRAY, None, margin=1, prompt=point), STRAY)
    box = np.zeros(S, bool)
    box[45:60, 45:60] = True
    assert np.array_equal(keep_connected(MAIN | STRAY, None, prompt=box), STRAY)


def test_nothing_qualifies_keeps_the_largest():
    elsewhere = disk(S, 50, 10, 2)
    assert np.array_equal(keep_connected(MAIN | STRAY, elsewhere), MAIN)
    assert np.array_equal(keep_connected(MAIN | STRAY, None), MAIN)
    assert not keep_connected(np.zeros(S, bool), None).any()
    assert np.array_equal(keep_connected(STRAY, disk(S, 10, 10, 3)), STRAY)    # one component: kept as is


def test_prompt_and_previous_mask_together():
    """On a frame with both, the previous mask anchors and a component the prompt touches is kept too."""
    point = np.zeros(S, bool)
    point[52, 52] = True
    got = keep_connected(MAIN | STRAY | disk(S, 52, 10, 3), disk(S, 20, 20, 8), margin=2, prompt=point)
    assert np.array_equal(got, MAIN | STRAY)


def test_holes_filled_for_cavities_only():
    ring = disk(S, 30, 30, 12) & ~disk(S, 30, 30, 5)
    assert np.array_equal(keep_connected(ring, None, fill_holes=True), disk(S, 30, 30, 12))
    assert np.array_equal(keep_connected(ring, None, fill_holes=False), ring)


def test_prompt_free_rule_anchors_on_frame_0s_largest_and_follows_it():
    T = 4
    lab = np.zeros((T,) + S, np.uint8)
    small = disk(S, 50, 12, 4)
    for t in range(T):
        lab[t][MAIN] = 1
        lab[t][disk(S, 50, 50, 3)] = 1              # a stray LV blob on every frame ...
        lab[t][small] = 3                           # ... an LA that stays where it was
        lab[t][disk(S, 10, 55, 5 + t)] = 3          # ... and a bigger LA blob appearing from frame 0
        lab[t][disk(S, 40, 30, 2)] = 2              # a myocardium speck (largest of its structure: kept)
    out = keep_connected_labels(lab, ["lv", "myo", "la"])
    assert ((out == 1) == MAIN[None]).all()
    # LA: frame 0 keeps only its largest blob (lower left); the small one never overlaps a kept mask
    assert not (out[:, small] == 3).any() and (out[:, disk(S, 10, 55, 5)] == 3).all()
    assert ((out == 2) == disk(S, 40, 30, 2)[None]).all()
    assert np.array_equal(keep_connected_labels(lab, ["lv", "myo", "la"], enabled=False), lab)


def test_prompt_free_rule_follows_a_moving_structure():
    """The component continuing the previous frame's structure is kept even when a bigger blob appears."""
    lab = np.zeros((3,) + S, np.uint8)
    for t in range(3):
        lab[t][disk(S, 20 + 2 * t, 20, 6 - t)] = 1
    lab[1][disk(S, 50, 50, 8)] = 1                  # bigger, new, far away: dropped
    out = keep_connected_labels(lab, ["lv"])
    for t in range(3):
        assert np.array_equal(out[t] == 1, disk(S, 20 + 2 * t, 20, 6 - t))


def test_prompted_rule_on_logits():
    rule = PromptedRule(img_size=64, threshold=0.5)
    logits = torch.where(torch.from_numpy(MAIN | STRAY), 4.0, -4.0)[None, None]
    prev = torch.where(torch.from_numpy(MAIN), 5.0, -5.0)[None, None]
    out = rule("lv", logits, previous=prev)
    assert out.shape == logits.shape and out.dtype == logits.dtype
    assert np.array_equal(out[0, 0].numpy() >= 0, MAIN)
    assert torch.equal(out[0, 0][torch.from_numpy(MAIN)], logits[0, 0][torch.from_numpy(MAIN)])
    clicked = rule("lv", logits, prompt=FramePrompt(points=[(52.0, 52.0)], labels=[1]))
    assert np.array_equal(clicked[0, 0].numpy() >= 0, STRAY)
    excluded = rule("lv", logits, prompt=FramePrompt(points=[(52.0, 52.0)], labels=[0]))
    assert np.array_equal(excluded[0, 0].numpy() >= 0, MAIN)       # an exclude point anchors nothing
    boxed = rule("lv", logits, prompt=FramePrompt(box=(44.0, 44.0, 60.0, 60.0)))
    assert np.array_equal(boxed[0, 0].numpy() >= 0, STRAY)
    single = torch.where(torch.from_numpy(MAIN), 4.0, -4.0)[None, None]
    assert rule("lv", single, previous=prev) is single             # nothing to change: same tensor
    assert PromptedRule(64, enabled=False)("lv", logits, previous=prev) is logits


# ---- inside a session --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def memsam_session_parts(small_phantom):
    from echosam.checkpoints import LoadedModel
    from echosam.models.registry import build_model, preset_config

    torch.manual_seed(0)
    cfg = preset_config("memsam", "tiny")
    model = build_model("memsam", cfg).eval()
    return small_phantom, LoadedModel(model, "memsam", cfg, {}, None, "cpu")


def _fake_readout(model, S, main):
    """Replace the model's memory readout by a confident ``main`` region (S x S) plus a stray corner blob
    (the real memory still runs: values are encoded and the hidden state passed on)."""
    blob = torch.from_numpy(disk((S, S), S - 6, S - 6, 3))
    region = torch.from_numpy(main)
    inner = model.segment_from_memory

    def readout(feats, bank, hidden):
        logits, hidden = inner(feats, bank, hidden)
        return torch.where(region | blob, 8.0, -8.0).to(logits).reshape(logits.shape), hidden
    model.segment_from_memory = readout
    return inner


@pytest.mark.parametrize("keep", [True, False])
def test_session_drops_a_stray_blob_and_never_touches_locked_frames(memsam_session_parts, keep):
    from echosam.session import Session

    ph, loaded = memsam_session_parts
    lv = ph.labels == 1
    S = loaded.config.sam.img_size
    main = torch.nn.functional.interpolate(torch.from_numpy(lv[0].astype(np.float32))[None, None], size=(S, S),
                                           mode="bilinear", align_corners=False)[0, 0].numpy() >= 0.5
    inner = _fake_readout(loaded.model, S, main)
    try:
        s = Session(ph.cine, loaded, structures=["lv"], keep_connected=keep)
        locked = lv[6].copy()
        locked[-4:, -4:] = True                     # the user's correction may hold two regions: kept as is
        s.set_mask(0, "lv", lv[0])
        s.set_mask(6, "lv", locked)
        lab = s.propagate()
    finally:
        loaded.model.segment_from_memory = inner
    corner = np.zeros(lv.shape[1:], bool)
    corner[-8:, -8:] = True
    assert np.array_equal(lab[6] == 1, locked) and np.array_equal(lab[0] == 1, lv[0])
    blob = [bool((lab[t][corner] == 1).any()) for t in range(ph.cine.n_frames)]
    # every propagated frame loses the stray corner blob unless the rule is off, also after the user's
    # frame 6 whose corner region is kept there bit for bit: the next frames follow its main region
    assert blob[6] and [blob[t] for t in range(ph.cine.n_frames) if t not in (0, 6)] == [not keep] * 10
    assert all((lab[t] == 1)[~corner].sum() > 0 for t in range(ph.cine.n_frames))


# ---- a structure that wraps a cavity (the myocardium around the LV) ------------------------------------
def _split_walls(shape=S, cx=32, cy=32):
    """An LV cavity and its myocardium seen as two walls with no apex between them (a horseshoe the model
    broke), plus a myocardium blob far from the cavity."""
    cavity = disk(shape, cx, cy, 10)
    ring = disk(shape, cx, cy, 15) & ~cavity
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    walls = ring & (np.abs(x - cx) > 4)                  # the ring cut at top and bottom: two walls
    far = disk(shape, 58, 6, 3)
    return cavity, walls, far


def test_myocardium_walls_split_apart_are_both_kept_beside_the_cavity():
    cavity, walls, far = _split_walls()
    from scipy import ndimage
    assert ndimage.label(walls, structure=np.ones((3, 3)))[1] == 2
    assert np.array_equal(keep_connected(walls | far, None, margin=2, beside=cavity), walls)
    # without the cavity only the anchor wall survives: what the rule did before it knew the cavity
    one = keep_connected(walls | far, None, margin=2)
    assert one.sum() < walls.sum() and not (one & far).any()


def test_continuing_pieces_are_kept_for_a_wrapping_structure_only():
    cavity, walls, far = _split_walls()
    assert np.array_equal(keep_connected(walls | far, walls, margin=2, continuing=True), walls)
    assert keep_connected(walls | far, walls, margin=2).sum() < walls.sum()


def test_prompt_free_myocardium_keeps_both_walls_and_drops_far_blobs():
    cavity, walls, far = _split_walls()
    lab = np.zeros((3,) + S, np.uint8)
    for t in range(3):
        lab[t][cavity] = 1
        lab[t][walls | far] = 2
    out = keep_connected_labels(lab, ["myo", "lv"])     # listed before its cavity: the rule orders them
    assert ((out == 2) == walls[None]).all() and ((out == 1) == cavity[None]).all()
    alone = keep_connected_labels(lab, ["myo"])         # the cavity not segmented: one wall anchors
    assert (alone == 2).sum() < 3 * walls.sum()


def test_prompted_rule_reads_the_cavity_beside_a_wrapping_structure():
    cavity, walls, far = _split_walls()
    rule = PromptedRule(img_size=64, threshold=0.5)
    logits = torch.where(torch.from_numpy(walls | far), 4.0, -4.0)[None, None]
    cav = torch.where(torch.from_numpy(cavity), 6.0, -6.0)[None, None]
    assert np.array_equal(rule("myo", logits, beside=cav)[0, 0].numpy() >= 0, walls)
    prev = torch.where(torch.from_numpy(walls), 5.0, -5.0)[None, None]
    assert np.array_equal(rule("myo", logits, previous=prev)[0, 0].numpy() >= 0, walls)
    assert (rule("lv", logits, previous=prev)[0, 0].numpy() >= 0).sum() < walls.sum()   # a cavity: one region


def test_structures_order_cavities_before_what_wraps_them():
    from echosam.structures import get_structure, wrapped_first
    assert get_structure("myo").wraps == "lv" and get_structure("lv").wraps is None
    assert wrapped_first(["myo", "la", "lv"]) == ["lv", "myo", "la"]
    assert wrapped_first(["la", "myo"]) == ["la", "myo"]


def test_session_propagates_the_cavity_first_and_shows_it_to_the_myocardium_rule(memsam_session_parts):
    from echosam.session import Session

    from echosam.checkpoints import LoadedModel

    ph, one = memsam_session_parts
    loaded = LoadedModel(one.model, "memsam", one.config, {"classes": ["lv", "myo", "la"]}, None, "cpu")
    s = Session(ph.cine, loaded, structures=["myo", "lv"])
    s.set_mask(0, "myo", ph.labels[0] == 2)
    s.set_mask(0, "lv", ph.labels[0] == 1)
    rule, seen = s.propagator.connected_rule, []

    def spy(key, logits, previous=None, prompt=None, beside=None):
        seen.append((key, None if beside is None else beside.clone()))
        return rule(key, logits, previous=previous, prompt=prompt, beside=beside)
    s.propagator.connected_rule = spy
    s.propagate()
    keys = [k for k, _ in seen]
    assert keys == sorted(keys, key=lambda k: k != "lv") and {"lv", "myo"} == set(keys)
    assert all(b is None for k, b in seen if k == "lv")
    S = loaded.config.sam.img_size
    for t, (k, b) in zip(range(1, ph.cine.n_frames), [x for x in seen if x[0] == "myo"]):
        assert torch.equal(b.reshape(S, S), s.results.logits["lv"][t])


def test_a_wall_deep_inside_its_cavity_is_dropped_and_the_cavity_keeps_its_pixels():
    cavity, walls, far = _split_walls()
    stripe = np.zeros(S, bool)
    stripe[20:44, 31:34] = True                        # a "papillary" stripe of myocardium across the cavity
    got = keep_connected(walls | stripe, walls, margin=2, beside=cavity, continuing=True)
    assert not (got & disk(S, 32, 32, 10 - 3)).any()   # nothing deeper than the margin inside the cavity
    assert walls.sum() <= got.sum() < (walls | stripe).sum() and (got & walls).sum() == walls.sum()
    # on logits: the stripe's pixels are pushed out, so the cavity wins them when the label map is composed
    rule = PromptedRule(img_size=64, threshold=0.5)
    lg = torch.where(torch.from_numpy(walls | stripe), 6.0, -6.0)[None, None]
    cav = torch.where(torch.from_numpy(cavity), 3.0, -3.0)[None, None]
    out = rule("myo", lg, previous=torch.where(torch.from_numpy(walls), 5.0, -5.0)[None, None], beside=cav)
    assert (out[0, 0][torch.from_numpy(disk(S, 32, 32, 7))] < 0).all()
