"""Automatic mask generation against Meta's `SAM2AutomaticMaskGenerator`, the mask-generation pipeline and the
`segment` / `generate-masks` commands (sam2.1_hiera_tiny with random weights at a 512 input, a non-square photo).

With random weights every mask logit lies within about +-1 of the threshold, so every stability score is ~0 and no
mask survives Meta's filters. The test model's hypernetwork outputs are scaled by 30 (in Meta's weights, before
conversion): logits spread out, and the chosen thresholds keep some masks and drop others.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import sam2  # noqa: F401  (the reference; a missing package must fail, not skip)
import sam2.utils.misc
import torch
import torchvision
import transformers
from PIL import Image
from pycocotools import mask as coco_mask
from sam2.utils import amg
from sam2_helpers import AMG_FILTERS as FILTERS
from sam2_helpers import AMG_SIZE as SIZE
from sam2_helpers import (
    amg_models,
    assert_pipeline_matches_meta,
    assert_same_records,
    media,
    meta_generate,
    scipy_connected_components,
)
from transformers import pipeline
from transformers.pipelines.mask_generation import MaskGenerationPipeline

from hiera_hf.cli import main
from hiera_hf.conversion import sam2_preprocessor_config
from hiera_hf.sam2 import Sam2ImageProcessor, Sam2Model
from hiera_hf.sam2.mask_generation import (
    Sam2AutomaticMaskGenerator,
    box_nms,
    coco_encode_rle,
    crop_boxes,
    mask_to_rle,
    masks_to_boxes,
    point_grid,
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return amg_models(tmp_path_factory.mktemp("sam2"))


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


def test_duplicate_removal_matches_meta():
    """The pipeline's last hook (NMS within each crop by IoU, then across crops by crop size) against Meta's two
    `batched_nms` steps, on masks from five crops with many overlaps."""
    generator = torch.Generator().manual_seed(0)
    crops = torch.tensor([crop for crop, _ in crop_boxes(331, 500, 1, 512 / 1500)])
    owner = torch.randint(0, len(crops), (200,), generator=generator)
    corners = torch.rand(200, 2, 2, generator=generator) * 80 + crops[owner, None, :2]
    boxes = torch.cat([corners.amin(dim=1), corners.amax(dim=1)], dim=1).long()
    scores = torch.rand(200, generator=generator)
    rles = [mask_to_rle(np.eye(3, dtype=bool) if i % 2 else np.zeros((3, 3), dtype=bool)) for i in range(200)]
    processor = Sam2ImageProcessor()
    masks, kept_scores, kept_rles, kept_boxes = processor.post_process_for_mask_generation(
        rles, scores, torch.cat([boxes, crops[owner]], dim=1), 0.5
    )
    expected = []
    for crop in range(len(crops)):
        members = (owner == crop).nonzero()[:, 0]
        expected.append(members[torchvision.ops.batched_nms(boxes[members].float(), scores[members],
                                                            torch.zeros(len(members)), 0.5)])  # fmt: skip
    within = torch.cat(expected)
    area = torchvision.ops.box_area(crops[owner[within]])
    expected = within[torchvision.ops.batched_nms(boxes[within].float(), 1 / area, torch.zeros(len(area)), 0.5)]
    assert 0 < len(expected) < len(within) < 200  # both steps removed boxes
    assert sorted(kept_scores.tolist()) == sorted(scores[expected].tolist())
    order = [int((scores == s).nonzero()) for s in kept_scores]
    assert torch.equal(kept_boxes, boxes[order])
    assert kept_rles == [rles[i] for i in order]
    assert all(torch.equal(m, torch.from_numpy(np.eye(3, dtype=bool) if i % 2 else np.zeros((3, 3), dtype=bool)))
               for m, i in zip(masks, order))  # fmt: skip


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


# ---------------------------------------------------------------------------------------------------------------
# pipeline("mask-generation"): transformers' own MaskGenerationPipeline, through our model and processor hooks
# ---------------------------------------------------------------------------------------------------------------


def assert_pipeline_matches_generator(output: dict, records: list[dict]) -> None:
    """The pipeline's dict (asked for boxes and RLE) and the generator's records on the pipeline's model and
    processor: the same masks in the same order (the same math on the same logits; bitwise equal in our runs, but
    MKL's float results may depend on buffer alignment, so a pixel at the threshold may flip: IoU >= 0.999)."""
    assert set(output) == {"masks", "scores", "bounding_boxes", "rle_mask"}
    assert len(output["masks"]) == len(records) > 0
    assert output["scores"].shape == (len(records),)
    for index, (mask, score, box, rle, record) in enumerate(
        zip(output["masks"], output["scores"], output["bounding_boxes"], output["rle_mask"], records)
    ):
        assert abs(score.item() - record["predicted_iou"]) < 1e-5, index
        assert mask.dtype == torch.bool and mask.shape == record["segmentation"].shape
        expected = torch.from_numpy(record["segmentation"])
        assert (mask & expected).sum() >= 0.999 * (mask | expected).sum(), index
        x, y, w, h = record["bbox"]
        torch.testing.assert_close(box.float(), torch.tensor([x, y, x + w, y + h]), atol=1, rtol=0)
        assert rle == mask_to_rle(mask.numpy())


@pytest.fixture(scope="module")
def pipe(models):
    """`pipeline("mask-generation", model=FOLDER)` on a converted folder (which carries the converter's
    preprocessor_config.json)."""
    folder = models["folder"]
    (folder / "preprocessor_config.json").write_text(json.dumps(sam2_preprocessor_config(models["ours"].config)))
    return pipeline("mask-generation", model=str(folder))


def test_pipeline_is_transformers_pipeline_with_meta_masks(models, pipe):
    """One crop, NMS off: the dict transformers documents, equal to the generator's masks and to Meta's."""
    assert type(pipe) is MaskGenerationPipeline
    assert type(pipe.model) is Sam2Model and type(pipe.image_processor) is Sam2ImageProcessor
    output = pipe(media("dog.jpg"), points_per_crop=4, crops_nms_thresh=1.0, output_bboxes_mask=True,
                  output_rle_mask=True, **FILTERS)  # fmt: skip
    assert output["masks"][0].shape == (331, 500)
    records = Sam2AutomaticMaskGenerator(
        pipe.model, pipe.image_processor, points_per_side=4, box_nms_thresh=1.0, progress=False, **FILTERS
    ).generate(Image.open(media("dog.jpg")))
    assert_pipeline_matches_generator(output, records)
    meta = meta_generate(models["meta"], models["image"], points_per_side=4, box_nms_thresh=1.0, **FILTERS)
    assert_pipeline_matches_meta(output, meta)
    assert pipe(media("dog.jpg"), points_per_crop=1, pred_iou_thresh=0.99)["masks"] == []  # nothing passes


def test_pipeline_shows_progress(pipe, capsys):
    """transformers' pipeline shows no progress of its own: the processor's hooks show the clicks done (off with
    transformers' progress bars)."""
    from transformers.utils import logging as transformers_logging

    pipe(media("dog.jpg"), points_per_crop=4, points_per_batch=4, pred_iou_thresh=0.99)
    assert "Generating masks" in capsys.readouterr().err
    transformers_logging.disable_progress_bar()
    try:
        pipe(media("dog.jpg"), points_per_crop=4, points_per_batch=4, pred_iou_thresh=0.99)
    finally:
        transformers_logging.enable_progress_bar()
    assert "Generating masks" not in capsys.readouterr().err


def test_pipeline_crops_and_nms_match_meta(models, pipe):
    """Crop layer 1 (five crops, 16 clicks each), per-crop and cross-crop NMS at the default threshold; a high
    `mask_threshold` makes masks small enough for a smaller crop to keep some."""
    settings = {"pred_iou_thresh": 0.45, "stability_score_thresh": 0.2, "mask_threshold": 10.0}
    output = pipe(Image.fromarray(models["image"]), points_per_crop=4, crops_n_layers=1, output_bboxes_mask=True,
                  output_rle_mask=True, **settings)  # fmt: skip
    settings.update(points_per_side=4, crop_n_layers=1)
    generator = Sam2AutomaticMaskGenerator(pipe.model, pipe.image_processor, progress=False, **settings)
    records = generator.generate(models["image"])
    assert_pipeline_matches_generator(output, records)
    assert len({tuple(r["crop_box"]) for r in records}) > 1  # masks of several crops went through both NMS steps
    assert_pipeline_matches_meta(output, meta_generate(models["meta"], models["image"], **settings))


def test_pipeline_small_regions_match_meta(models, pipe, monkeypatch):
    """transformers' `max_hole_area` / `max_sprinkle_area` = Meta's `min_mask_region_area` (at mask_threshold 0)."""
    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", scipy_connected_components)
    output = pipe(Image.fromarray(models["image"]), points_per_crop=4, max_hole_area=20, max_sprinkle_area=20,
                  output_bboxes_mask=True, output_rle_mask=True, **FILTERS)  # fmt: skip
    settings = {"points_per_side": 4, "min_mask_region_area": 20, **FILTERS}
    generator = Sam2AutomaticMaskGenerator(pipe.model, pipe.image_processor, progress=False, **settings)
    records = generator.generate(models["image"])
    assert_pipeline_matches_generator(output, records)
    assert_pipeline_matches_meta(output, meta_generate(models["meta"], models["image"], **settings))


def test_generator_finds_small_regions_at_meta_threshold(models, monkeypatch):
    """Meta's predictor fills holes at its own threshold 0 while the generator thresholds masks at mask_threshold."""
    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", scipy_connected_components)
    settings = {"points_per_side": 4, "crop_n_layers": 1, "min_mask_region_area": 20, "pred_iou_thresh": 0.45,
                "stability_score_thresh": 0.3, "mask_threshold": 15.0}  # fmt: skip
    meta = meta_generate(models["meta"], models["image"], **settings)
    ours = Sam2AutomaticMaskGenerator(models["ours"], output_mode="coco_rle", progress=False, **settings)
    assert_same_records(ours.generate(models["image"]), meta)


def test_pipeline_batches_images_with_transformers_arguments(pipe):
    """A list of images gives a list of dicts, each the single-image answer; arguments set at construction and at
    call time, under transformers' names, as its docs use them."""
    settings = {"points_per_crop": 3, "stability_score_offset": 0.5, "mask_threshold": 0.1, "crop_overlap_ratio": 0.3,
                "crop_n_points_downscale_factor": 1, "timeout": 5.0, **FILTERS}  # fmt: skip
    images = [media("dog.jpg"), Image.open(media("dog.jpg")).rotate(90, expand=True)]
    outputs = pipe(images, points_per_batch=4, **settings)
    assert isinstance(outputs, list) and len(outputs) == 2
    for image, output in zip(images, outputs):
        single = pipe(image, points_per_batch=4, **settings)
        assert len(output["masks"]) == len(single["masks"]) > 0
        assert all(torch.equal(a, b) for a, b in zip(output["masks"], single["masks"]))
        assert torch.equal(output["scores"], single["scores"])
    assert outputs[1]["masks"][0].shape == (500, 331)


def test_forward_takes_get_image_embeddings_output_whole(models):
    """transformers' pipeline passes `get_image_embeddings`' output as `image_embeddings` (as a plain ModelOutput)."""
    model = models["ours"]
    pixel_values = Sam2ImageProcessor(size={"height": SIZE, "width": SIZE})(models["image"])["pixel_values"]
    prompts = {"input_points": torch.tensor([[[[100.0, 200.0]]]]), "input_labels": torch.ones(1, 1, 1, dtype=torch.long)}
    with torch.no_grad():
        embedded = model.get_image_embeddings(pixel_values)
        whole = model(image_embeddings=transformers.utils.ModelOutput(embedded), **prompts)
        expected = model(**embedded, **prompts)
    assert torch.equal(whole.pred_masks, expected.pred_masks)
    with pytest.raises(ValueError, match="get_image_embeddings' output, alone"):
        model(image_embeddings=embedded, high_res_features=embedded.high_res_features, **prompts)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"crops_n_layers": 1, "crop_n_points_downscale_factor": 2}, "different numbers of clicks"),
        ({"points_per_crop": 0}, "points_per_crop must be a positive integer"),
        ({"crops_n_layers": -1}, "crops_n_layers must be a non-negative integer"),
        ({"points_per_batch": 0}, "points_per_batch<=0"),
    ],
)
def test_pipeline_rejects_bad_settings(pipe, settings, message):
    with pytest.raises(ValueError, match=message):
        pipe(media("dog.jpg"), **settings)


# Runs transformers' mask-generation pipeline on folders of transformers' own models; the test runs it in a fresh
# interpreter that never imports hiera_hf, and here, after `import hiera_hf`.
TRANSFORMERS_PIPELINES = """
import sys

import torch
from transformers import pipeline


def run(folders, image, out):
    results = {}
    for folder in folders:
        pipe = pipeline("mask-generation", model=folder)
        output = pipe(image, points_per_crop=4, pred_iou_thresh=0, stability_score_thresh=0, output_bboxes_mask=True)
        classes = [f"{type(o).__module__}.{type(o).__qualname__}" for o in (pipe, pipe.model, pipe.image_processor)]
        results[folder] = {"classes": classes, "masks": torch.stack(output["masks"]), "scores": output["scores"],
                           "boxes": output["bounding_boxes"]}
    torch.save(results, out)
"""


@pytest.mark.parametrize("kind", ["sam", "sam2"])
def test_import_leaves_transformers_mask_generation_alone(tmp_path, kind):
    """After `import hiera_hf`, pipeline("mask-generation") on transformers' own SamModel and Sam2Model folders is
    exactly transformers' pipeline, classes and result."""
    torch.manual_seed(0)
    sam = transformers.SamConfig(
        vision_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "output_channels": 256,
                       "global_attn_indexes": [0], "image_size": 64, "mlp_dim": 32},
        prompt_encoder_config={"hidden_size": 256, "image_size": 64},
        mask_decoder_config={"hidden_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2, "mlp_dim": 32},
    )  # fmt: skip
    transformers.SamModel(sam).save_pretrained(tmp_path / "sam")
    transformers.SamImageProcessor(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64}).save_pretrained(
        tmp_path / "sam"
    )
    hiera = {"hidden_size": 16, "image_size": [128, 128], "blocks_per_stage": [1, 1, 2, 1],
             "embed_dim_per_stage": [16, 32, 64, 128], "num_attention_heads_per_stage": [1, 1, 1, 1],
             "global_attention_blocks": [3], "window_size_per_stage": [8, 4, 8, 4]}  # fmt: skip
    sam2_config = transformers.Sam2Config(
        vision_config={"backbone_config": transformers.Sam2HieraDetConfig(**hiera), "fpn_hidden_size": 32,
                       "backbone_channel_list": [128, 64, 32, 16], "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]]},
        prompt_encoder_config={"hidden_size": 32, "image_size": 128, "mask_input_channels": 4},
        mask_decoder_config={"hidden_size": 32, "mlp_dim": 32, "num_attention_heads": 2, "iou_head_hidden_dim": 16},
    )  # fmt: skip
    transformers.Sam2Model(sam2_config).save_pretrained(tmp_path / "sam2")
    transformers.Sam2ImageProcessor(size={"height": 128, "width": 128}).save_pretrained(tmp_path / "sam2")
    folders = [str(tmp_path / kind)]

    script = TRANSFORMERS_PIPELINES + "\nassert 'hiera_hf' not in sys.modules\nrun(sys.argv[1:2], *sys.argv[2:])\n"
    subprocess.run([sys.executable, "-c", script, *folders, media("dog.jpg"), str(tmp_path / "alone.pt")], check=True)
    namespace = {}
    exec(TRANSFORMERS_PIPELINES, namespace)
    namespace["run"](folders, media("dog.jpg"), tmp_path / "imported.pt")
    assert "hiera_hf" in sys.modules
    alone, imported = (torch.load(tmp_path / f"{name}.pt") for name in ("alone", "imported"))
    assert alone.keys() == imported.keys()
    for folder, expected in alone.items():
        assert expected["classes"][0] == "transformers.pipelines.mask_generation.MaskGenerationPipeline"
        assert expected["classes"][1].startswith("transformers.models.sam")
        assert imported[folder]["classes"] == expected["classes"]
        for key in ("masks", "scores", "boxes"):
            assert torch.equal(imported[folder][key], expected[key]), (folder, key)
    assert len(alone[folders[0]]["scores"]) > 0


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
