"""The inference engine: tiling, blending, TTA, post-processing; and the ensemble search."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from ftuseg.core.metrics import dice
from ftuseg.data.contract import image_path, read_image, read_metadata
from ftuseg.data.sample import SampleConfig, generate
from ftuseg.ensemble.gallery import FN_COLOUR, FP_COLOUR, TP_COLOUR, overlay
from ftuseg.ensemble.search import search_weights
from ftuseg.infer.engine import (
    InferenceConfig,
    Member,
    Predictor,
    blend_window,
    dihedral_tensor,
    inverse_dihedral_tensor,
    tile_starts,
    tiles,
)
from ftuseg.infer.maps import postprocess, quantize
from ftuseg.models import Segmenter, build_model
from ftuseg.train.validation import Validator


class DarknessDetector(nn.Module):
    """A fixed local model: logit = k * (local mean darkness - 0.5). Its receptive field
    (7x7) is far smaller than a tile, so tiling can only differ at image borders."""

    def __init__(self, constant: float | None = None) -> None:
        super().__init__()
        self.constant = constant
        self.pool = nn.AvgPool2d(7, stride=1, padding=3, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.constant is not None:
            return torch.full_like(x[:, :1], self.constant)
        darkness = 1.0 - self.pool(x.mean(dim=1, keepdim=True))
        return 12.0 * (darkness - 0.45)


def segmenter(constant: float | None = None) -> Segmenter:
    # Identity normalisation so the detector sees [0, 1] RGB.
    return Segmenter(DarknessDetector(constant), stride=1, mean=(0, 0, 0), std=(1, 1, 1))


@pytest.fixture(scope="module")
def tissue(tmp_path_factory):
    out = tmp_path_factory.mktemp("engine") / "data"
    generate(out, SampleConfig(train_per_organ=1, test_per_organ=0, field_um=120))
    row = read_metadata(out / "train.csv", "train").iloc[0]
    return read_image(image_path(out, "train", row.id))


def test_tile_grid_covers_the_image_without_leaving_it():
    assert tile_starts(100, 256, 0.25) == [0]
    starts = tile_starts(1000, 256, 0.25)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 192 for a, b in zip(starts, starts[1:], strict=False))
    boxes = tiles((300, 90), 128, 0.5)
    assert {(h, w) for _, _, h, w in boxes} == {(128, 90)}
    covered = np.zeros((300, 90), bool)
    for y, x, h, w in boxes:
        covered[y : y + h, x : x + w] = True
    assert covered.all()


@pytest.mark.parametrize("kind", ["gaussian", "cosine", "flat"])
def test_blend_windows_are_positive_and_peak_in_the_centre(kind):
    w = blend_window(64, 48, kind)
    assert w.shape == (64, 48) and (w > 0).all()
    assert w.max() == pytest.approx(1.0)
    assert w[32, 24] == pytest.approx(w.max(), rel=1e-2)


@pytest.mark.parametrize("window", ["gaussian", "cosine", "flat"])
def test_blending_weights_normalise_at_seams(window):
    """A constant model must give the same constant everywhere, seams and corners included."""
    cfg = InferenceConfig(tile_size=32, overlap=0.4, window=window, batch_size=3)
    predictor = Predictor([Member(segmenter(constant=0.7), 1.0)], 1.0, cfg)
    prob = predictor.predict_member(predictor.members[0], torch.rand(3, 101, 77))
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-0.7)), rtol=1e-6)


def test_tiled_inference_agrees_with_whole_image_inference(tissue):
    whole = Predictor([Member(segmenter(), 1.0)], 0.4, InferenceConfig(tile_size=4096))
    tiled = Predictor([Member(segmenter(), 1.0)], 0.4, InferenceConfig(tile_size=64, overlap=0.25))
    assert len(tiles(tissue.shape[:2], 64, 0.25)) > 16
    a = whole.predict(tissue, 0.4) > 0.5
    b = tiled.predict(tissue, 0.4) > 0.5
    assert a.any() and not a.all()
    assert dice(a, b) >= 0.99


@pytest.mark.parametrize("k", range(8))
def test_tta_inverse_transforms_are_exact(k):
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    assert torch.equal(inverse_dihedral_tensor(dihedral_tensor(x, k), k), x)


def test_tta_of_an_equivariant_model_changes_nothing(tissue):
    plain = Predictor([Member(segmenter(), 1.0)], 0.4, InferenceConfig(tile_size=64))
    tta = Predictor(
        [Member(segmenter(), 1.0)], 0.4, InferenceConfig(tile_size=64, tta=tuple(range(8)))
    )
    image = tissue[:150, :130]
    np.testing.assert_array_equal(plain.predict_scaled(image, 0.4), tta.predict_scaled(image, 0.4))


def test_presentations_are_averaged_at_the_image_size(tissue, monkeypatch):
    """``inference.scales``: each factor presents the image that much larger to the member, the
    maps come back at the image's own size, and their mean is the prediction."""
    seen = []

    def by_size(self, member, x):
        seen.append(tuple(x.shape[-2:]))
        # 0.2 on the image as it is, 0.6 on anything larger: the mean is exactly 0.4
        return np.full(x.shape[-2:], 0.2 if x.shape[-1] <= 90 else 0.6, np.float32)

    monkeypatch.setattr(Predictor, "predict_member", by_size)
    predictor = Predictor(
        [Member(segmenter(), 1.0)], 0.4, InferenceConfig(tile_size=64, scales=(1.0, 1.5))
    )
    q = predictor.predict_at_scale(tissue[:100, :90])
    assert seen == [(100, 90), (150, 135)]
    assert q.shape == (100, 90) and (q == round(0.4 * 255)).all()


def test_presentations_of_a_pixelwise_model_agree(tissue):
    """A model that looks at each pixel alone predicts the same map at any presentation (up to
    resampling): averaging presentations must not shift or scale the map."""
    image = cv2.GaussianBlur(tissue[:160, :150], (0, 0), 4)  # smooth: resampling loses little
    pixelwise = nn.Conv2d(3, 1, 1)  # logit 4 × (the image's mean brightness - this pixel's)
    with torch.no_grad():
        pixelwise.weight.fill_(-4.0)
        pixelwise.bias.fill_(4.0 * float(image.reshape(-1, 3).mean(0).sum()) / 255.0)
    plain = Predictor([Member(pixelwise, 1.0)], 0.4, InferenceConfig(tile_size=64))
    several = Predictor(
        [Member(pixelwise, 1.0)], 0.4, InferenceConfig(tile_size=64, scales=(0.8, 1.0, 1.25))
    )
    a = plain.predict_at_scale(image).astype(int)
    b = several.predict_at_scale(image).astype(int)
    assert a.std() > 2  # the map varies over the tissue
    assert np.abs(a - b)[4:-4, 4:-4].max() <= 2  # within 2/255 away from the border


def test_validation_presents_each_image_once(tmp_path):
    """Validation picks an epoch: it predicts with every inference setting but the presentations."""
    generate(tmp_path, SampleConfig(train_per_organ=1, test_per_organ=0, field_um=120))
    cfg = InferenceConfig(tta=(0, 1), scales=(0.85, 1.0, 1.18), min_component_um2=100.0)
    validator = Validator(
        tmp_path / "prep", tmp_path / "train.csv", [], um_per_px=4.0, crop_size=64, config=cfg
    )
    assert validator.config == replace(cfg, scales=(1.0,))


def test_nhwc_inference_feeds_nhwc_and_predicts_what_nchw_does(tissue):
    """``channels_last``: weights and every TTA view NHWC (a rotation's strides are not), the
    probabilities those of the NCHW engine up to float rounding."""
    config = {"arch": "smp_unet", "encoder": "resnet18", "decoder_channels": [16, 8, 8, 8, 8]}
    probs, layouts = {}, {False: set(), True: set()}
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = build_model(config)
        model.register_forward_pre_hook(
            lambda _, args, seen=layouts[channels_last]: seen.add(
                args[0].is_contiguous(memory_format=torch.channels_last)
            )
        )
        cfg = InferenceConfig(tile_size=64, tta=(0, 1, 2, 5), channels_last=channels_last)
        predictor = Predictor([Member(model, 1.0)], 0.4, cfg)
        weight = next(m.weight for m in model.modules() if isinstance(m, nn.Conv2d))
        assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        probs[channels_last] = predictor.predict_member(
            predictor.members[0], torch.from_numpy(tissue[:100, :90]).permute(2, 0, 1)
        )
    assert layouts == {True: {True}, False: {False}}
    np.testing.assert_allclose(probs[True], probs[False], atol=1e-5)
    assert probs[True].std() > 1e-3  # an untrained net still varies over the tissue


def test_bad_engine_settings_are_refused():
    for bad in (
        {"overlap": 1.0},
        {"window": "box"},
        {"tta": (9,)},
        {"tta": ()},
        {"scales": ()},
        {"scales": (0.1,)},
        {"precision": "int8"},
    ):
        with pytest.raises(ValueError, match="inference"):
            InferenceConfig(**bad)


def test_small_components_are_removed_by_physical_area():
    prob = np.zeros((40, 40), np.float32)
    prob[2:4, 2:4] = 0.9  # 4 px
    prob[10:30, 10:30] = 0.9  # 400 px
    kept = postprocess(prob, 0.5, pixel_size=0.5, min_component_um2=5.0)  # 5 µm² = 20 px
    assert kept[2:4, 2:4].sum() == 0 and kept[10:30, 10:30].all()
    assert postprocess(prob, 0.5, 0.5, 0.0).sum() == 404


def test_weight_search_finds_a_planted_optimum():
    """Model 0 separates FTU from background by a margin; models 1 and 2 are independent noise
    that destroys the margin when mixed in. Only (nearly) all weight on model 0 scores 1.0."""
    rng = np.random.default_rng(0)
    maps, truths, organs = [], [], []
    for i in range(12):
        truth = np.zeros((32, 32), np.uint8)
        y, x = rng.integers(4, 20, 2)
        truth[y : y + 10, x : x + 10] = 1
        good = np.where(truth, 0.55, 0.35) + rng.uniform(-0.05, 0.05, truth.shape)
        maps.append(
            [quantize(good), quantize(rng.random(truth.shape)), quantize(rng.random(truth.shape))]
        )
        truths.append(truth)
        organs.append("kidney" if i % 2 else "lung")
    weights, score = search_weights(maps, truths, organs, grid=np.arange(0.1, 0.91, 0.05))
    assert weights[0] > 0.9
    assert score == pytest.approx(1.0)


def test_gallery_overlay_colours_follow_the_writeup():
    image = np.full((1, 4, 3), 100, np.uint8)
    truth = np.array([[1, 1, 0, 0]])
    pred = np.array([[1, 0, 1, 0]])
    out = overlay(image, truth, pred, alpha=1.0)
    assert tuple(out[0, 0]) == TP_COLOUR and tuple(out[0, 1]) == FN_COLOUR
    assert tuple(out[0, 2]) == FP_COLOUR and tuple(out[0, 3]) == (100, 100, 100)


def test_tiles_default_to_each_members_training_crop(tmp_path):
    """`inference.tile_size: null` tiles with the crop a model was trained on (recorded in its
    checkpoint); a set tile size wins; a checkpoint that records no crop is a clear error."""
    from ftuseg.core.errors import DataError
    from ftuseg.models.checkpoint import save_checkpoint

    cfg = {"arch": "smp_unet", "encoder": "resnet18", "decoder_channels": [8] * 5}
    model = build_model(cfg)
    save_checkpoint(tmp_path / "a", model, {"model_cfg": cfg, "um_per_px": 1.0, "crop_size": 96})
    save_checkpoint(tmp_path / "old", model, {"model_cfg": cfg, "um_per_px": 1.0})
    default = Predictor.from_checkpoints([(tmp_path / "a", 1.0)])
    assert default.tile_size(default.members[0]) == 96
    fixed = Predictor.from_checkpoints([(tmp_path / "a", 1.0)], InferenceConfig(tile_size=64))
    assert fixed.tile_size(fixed.members[0]) == 64
    with pytest.raises(DataError, match="records no training crop"):
        Predictor.from_checkpoints([(tmp_path / "old", 1.0)])
    # the default really changes the tiling: 96² tiles cover 160² in 2×2, 64² tiles in 3×3
    calls = []
    net = default.members[0].model
    net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    default.predict_member(default.members[0], torch.rand(3, 160, 160))
    assert calls[0][-2:] == (96, 96) and sum(c[0] for c in calls) == 4


class NormalisedDarkness(nn.Module):
    """1×1 conv (no bias) -> BatchNorm -> a fixed readout: a model whose one normalisation
    layer decides how dark is dark. Its training statistics are planted: mean 0.3, var 0.01."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)
        nn.init.constant_(self.conv.weight, -1.0 / 3.0)  # minus the mean of RGB: darkness
        self.bn = nn.BatchNorm2d(1, affine=False)
        self.bn.running_mean.fill_(-0.7)
        self.bn.running_var.fill_(0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4.0 * self.bn(self.conv(x))


def test_test_time_statistics_follow_the_image_and_leave_the_model_as_it_was(tissue):
    """``adapt_norm``: a lighter rendition of the tissue (another lab: every pixel's darkness
    × 0.4) loses its dark regions under the training statistics and gets them back under its
    own; 0 changes nothing, and the model's statistics are the same bytes afterwards."""
    model = Segmenter(NormalisedDarkness(), stride=1, mean=(0, 0, 0), std=(1, 1, 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    light = (255 - 0.4 * (255 - tissue.astype(np.float32))).astype(np.uint8)

    def dark(cfg: InferenceConfig, image: np.ndarray) -> np.ndarray:
        return Predictor([Member(model, 1.0)], 0.4, cfg).predict(image, 0.4) > 0.5

    plain = InferenceConfig(tile_size=64)
    adapted = InferenceConfig(tile_size=64, adapt_norm=1.0)
    reference = dark(adapted, tissue)
    assert 0.05 < reference.mean() < 0.95
    assert dice(dark(plain, light), reference) < 0.5  # the lighter lab, training statistics
    # Own statistics: the same regions (the affine change of darkness is normalised away).
    assert dice(dark(adapted, light), reference) > 0.95
    half = InferenceConfig(tile_size=64, adapt_norm=0.5)
    assert dice(dark(plain, light), reference) < dice(dark(half, light), reference)
    assert np.array_equal(dark(InferenceConfig(tile_size=64, adapt_norm=0.0), light),
                          dark(plain, light))  # fmt: skip
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with pytest.raises(ValueError, match="adapt_norm"):
        InferenceConfig(adapt_norm=1.5)
