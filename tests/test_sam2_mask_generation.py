"""Automatic mask generation against Meta's `SAM2AutomaticMaskGenerator`, the mask-generation pipeline and the
`segment` / `generate-masks` commands (sam2.1_hiera_tiny with random weights at a 512 input, a non-square photo).

With random weights every mask logit lies within about +-1 of the threshold, so every stability score is ~0 and no
mask survives Meta's filters. The test model's hypernetwork outputs are scaled by 30 (in Meta's weights, before
conversion): logits spread out, and the chosen thresholds keep some masks and drop others.
"""

import json

import numpy as np
import pytest
import sam2  # noqa: F401  (the reference; a missing package must fail, not skip)
import sam2.utils.misc
import torch
import torchvision
import transformers
from PIL import Image
from pycocotools import mask as coco_mask
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.utils import amg
from sam2_helpers import load_ours, media, meta_model, scipy_connected_components, write_folder
from transformers import pipeline
from transformers.pipelines.mask_generation import MaskGenerationPipeline

from hiera_hf.cli import main
from hiera_hf.sam2.mask_generation import (
    Sam2AutomaticMaskGenerator,
    box_nms,
    coco_encode_rle,
    crop_boxes,
    mask_to_rle,
    masks_to_boxes,
    point_grid,
)

SIZE = 512
# Thresholds for the random-weight model: predicted IoUs are ~0.49-0.53, stability scores ~0.4-0.6.
FILTERS = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.45}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    name = "sam2.1_hiera_tiny"
    meta = meta_model(name, image_size=SIZE)
    with torch.no_grad():
        for mlp in meta.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30)
            mlp.layers[-1].bias.mul_(30)
    folder, converted = write_folder(meta, name, tmp_path_factory.mktemp("sam2"), image_size=SIZE)
    image = np.asarray(Image.open(media("dog.jpg")).convert("RGB"))  # 500x331
    return {"meta": meta, "ours": load_ours(folder, converted), "folder": folder, "image": image}


def meta_generate(meta, image, **settings) -> list[dict]:
    generator = SAM2AutomaticMaskGenerator(meta, output_mode="coco_rle", **settings)
    scale = SIZE // 4
    generator.predictor._bb_feat_sizes = [(scale, scale), (scale // 2, scale // 2), (scale // 4, scale // 4)]
    return generator.generate(image)


def assert_same_records(ours: list[dict], meta: list[dict]) -> None:
    """Same number of masks; each of Meta's matched by click and predicted IoU; masks (decoded from COCO RLE)
    with IoU >= 0.999 (logits agree to 1e-4, so only pixels at the threshold may flip), same box and crop."""
    assert len(ours) == len(meta) > 0
    unmatched = list(ours)
    for reference in meta:
        candidates = [r for r in unmatched if r["point_coords"] == reference["point_coords"]]
        record = min(candidates, key=lambda r: abs(r["predicted_iou"] - reference["predicted_iou"]))
        unmatched.remove(record)
        assert abs(record["predicted_iou"] - reference["predicted_iou"]) < 1e-4
        # Stability is a ratio of pixel counts: one flipped pixel in ~50k moves it by ~2e-5.
        assert abs(record["stability_score"] - reference["stability_score"]) < 1e-3
        ours_mask, meta_mask = (coco_mask.decode(r["segmentation"]).astype(bool) for r in (record, reference))
        assert (ours_mask & meta_mask).sum() / (ours_mask | meta_mask).sum() >= 0.999
        assert abs(record["area"] - reference["area"]) <= 0.001 * reference["area"]
        np.testing.assert_allclose(record["bbox"], reference["bbox"], atol=1)
        assert record["crop_box"] == reference["crop_box"]


def test_matches_meta_on_one_crop(models):
    """Every mask is compared (box NMS off), including which ones the IoU and stability filters drop."""
    settings = {"points_per_side": 4, "box_nms_thresh": 1.0, **FILTERS}
    meta = meta_generate(models["meta"], models["image"], **settings)
    ours = Sam2AutomaticMaskGenerator(models["ours"], output_mode="coco_rle", progress=False, **settings)
    records = ours.generate(models["image"])
    assert_same_records(records, meta)
    assert len(records) < 16 * 3  # the filters dropped some of the 48 masks
    assert records[0]["segmentation"]["size"] == [331, 500]


def test_matches_meta_with_crops_m2m_and_small_regions(models, monkeypatch):
    """Crop layer 1 (four overlapping crops, one click each), mask-to-mask refinement and hole/sprinkle removal;
    Meta's connected components (CUDA-only) replaced by scipy's so that its `min_mask_region_area` path runs."""
    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", scipy_connected_components)
    settings = {
        "points_per_side": 2,
        "crop_n_layers": 1,
        "crop_n_points_downscale_factor": 2,
        "use_m2m": True,
        "min_mask_region_area": 20,
        **FILTERS,
    }
    meta = meta_generate(models["meta"], models["image"], **settings)
    ours = Sam2AutomaticMaskGenerator(models["ours"], output_mode="coco_rle", progress=False, **settings)
    assert_same_records(ours.generate(models["image"]), meta)


def test_helpers_match_meta():
    for height, width, layers, ratio in ((331, 500, 1, 512 / 1500), (1200, 1800, 2, 0.2), (64, 40, 1, 0.5)):
        boxes, layer_ids = amg.generate_crop_boxes((height, width), layers, ratio)
        assert crop_boxes(height, width, layers, ratio) == list(zip(boxes, layer_ids))
    for n in (1, 4, 7):
        np.testing.assert_array_equal(point_grid(n), amg.build_point_grid(n))
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random((6, 23, 31)) > 0.97)
    masks[0] = False
    masks[1] = True
    torch.testing.assert_close(masks_to_boxes(masks), amg.batched_mask_to_box(masks))
    for mask, reference in zip(masks, amg.mask_to_rle_pytorch(masks)):
        rle = mask_to_rle(mask.numpy())
        assert rle == reference
        expected = coco_mask.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
        assert coco_encode_rle(rle) == {"size": expected["size"], "counts": expected["counts"].decode()}


def test_box_nms_matches_torchvision():
    generator = torch.Generator().manual_seed(0)
    corners = torch.randint(0, 60, (300, 2, 2), generator=generator).float()
    boxes = torch.cat([corners.amin(dim=1), corners.amax(dim=1)], dim=1)  # includes zero-area boxes
    boxes[:20] = boxes[20:40] + 1  # near duplicates
    scores = torch.rand(300, generator=generator)
    for threshold in (0.0, 0.3, 0.7, 1.0):
        expected = torchvision.ops.nms(boxes, scores, threshold)
        assert torch.equal(box_nms(boxes, scores, threshold), expected), threshold
    assert box_nms(torch.zeros(0, 4), torch.zeros(0), 0.7).shape == (0,)


def test_pipeline(models):
    image_path = media("dog.jpg")
    pipe = pipeline("mask-generation", model=str(models["folder"]), points_per_side=2, progress=False)
    assert type(pipe) is Sam2MaskGenerationPipeline
    records = pipe(image_path, box_nms_thresh=1.0, **FILTERS)
    expected = Sam2AutomaticMaskGenerator(
        models["ours"], points_per_side=2, box_nms_thresh=1.0, progress=False, **FILTERS
    ).generate(Image.open(image_path))
    assert len(records) == len(expected) > 0
    for record, reference in zip(records, expected):
        assert np.array_equal(record["segmentation"], reference["segmentation"])
        assert record["predicted_iou"] == pytest.approx(reference["predicted_iou"], abs=1e-6)
    assert pipe(image_path, points_per_side=1, pred_iou_thresh=0.99) == []  # nothing passes the filters
    with pytest.raises(TypeError, match="unexpected keyword argument 'points_per_sid'"):
        pipe(image_path, points_per_sid=4)

    # transformers' own SAM models keep transformers' pipeline.
    config = transformers.SamConfig(
        vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "output_channels": 16,
                       "global_attn_indexes": [0], "image_size": 64, "mlp_dim": 32},
        prompt_encoder_config={"hidden_size": 16, "image_size": 64},
        mask_decoder_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "mlp_dim": 32},
    )  # fmt: skip
    sam = transformers.SamModel(config).eval()
    theirs = pipeline("mask-generation", model=sam, image_processor=transformers.SamImageProcessor())
    assert type(theirs) is MaskGenerationPipeline


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"output_mode": "png"}, ValueError, "output_mode must be one of"),
        ({"points_per_side": 0}, ValueError, "points_per_side must be a positive integer"),
        ({"crop_n_layers": -1}, ValueError, "crop_n_layers"),
        ({"points_per_side": 2, "crop_n_layers": 1, "crop_n_points_downscale_factor": 4}, ValueError, "no point"),
    ],
)
def test_generator_rejects_bad_settings(models, settings, error, message):
    with pytest.raises(error, match=message):
        Sam2AutomaticMaskGenerator(models["ours"], **settings)


def test_generator_rejects_other_models():
    with pytest.raises(TypeError, match="hiera_hf Sam2Model"):
        Sam2AutomaticMaskGenerator(torch.nn.Linear(1, 1))


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def test_cli_segment(models, tmp_path):
    image_path, folder = media("dog.jpg"), str(models["folder"])
    out = tmp_path / "mask.png"
    argv = ["segment", image_path, "--model", folder, "--point", "120,80", "--point", "300,200"]
    assert main([*argv, "--label", "1", "--label", "0", "--box", "50,40,400,300", "--out", str(out)]) == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == (331, 500) and set(np.unique(mask)) <= {0, 255}
    assert Image.open(tmp_path / "mask_overlay.png").size == (500, 331)

    # The written mask is the best-ranked of the multimask outputs.
    model = models["ours"]
    from hiera_hf import Sam2ImageProcessor

    processor = Sam2ImageProcessor(size={"height": SIZE, "width": SIZE})
    inputs = processor(models["image"], input_points=[[[[120, 80], [300, 200]]]], input_labels=[[[1, 0]]],
                       input_boxes=[[[50, 40, 400, 300]]])  # fmt: skip
    with torch.no_grad():
        outputs = model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
    masks = processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0][0]
    assert np.array_equal(mask > 0, masks[outputs.iou_scores[0, 0].argmax()].numpy())


def test_cli_generate_masks(models, tmp_path):
    out = tmp_path / "out"
    argv = ["generate-masks", media("dog.jpg"), "--model", str(models["folder"]), "--out", str(out)]
    assert main([*argv, "--points-per-side", "2", "--pred-iou-thresh", "0.5", "--stability-score-thresh", "0.45",
                 "--no-progress"]) == 0  # fmt: skip
    records = json.loads((out / "masks.json").read_text())
    assert len(records) > 0
    for record in records:
        mask = coco_mask.decode({**record["segmentation"], "counts": record["segmentation"]["counts"].encode()})
        assert mask.shape == (331, 500) and mask.sum() == record["area"]
    assert Image.open(out / "overlay.png").size == (500, 331)


@pytest.mark.parametrize(
    "extra, status, message",
    [
        (["--point", "1,2,3"], 2, "--point must be 2 comma-separated numbers"),  # refused when parsed
        (["--point", "1,2", "--label", "1", "--label", "0"], 1, "one --label per --point"),
        ([], 1, "at least one --point"),
        (["--box", "1,2,3,x"], 2, "--box must be 4"),
    ],
)
def test_cli_segment_rejects_bad_prompts(models, tmp_path, capsys, extra, status, message):
    argv = ["segment", media("dog.jpg"), "--model", str(models["folder"]), "--out", str(tmp_path / "m.png")]
    try:
        assert main([*argv, *extra]) == status
    except SystemExit as exit:
        assert exit.code == status
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


def test_cli_missing_image(models, tmp_path, capsys):
    argv = ["generate-masks", str(tmp_path / "none.jpg"), "--model", str(models["folder"]), "--out", str(tmp_path)]
    assert main(argv) == 1
    assert "none.jpg" in capsys.readouterr().err
