"""SAM 2 / 2.1 image model against Meta's `sam2` (random weights): every official variant, end to end through
`SAM2ImagePredictor`, plus conversion strictness, the backbone, Auto classes and bad inputs.

Cost control: the full 1024x1024 pipeline (`.pt` file -> converter -> folder -> `from_pretrained`; image encoder on
a non-square image; every prompt kind) runs on `sam2.1_hiera_tiny`. For all eight variants the converted weights go
through the trunk + neck at 384x384 (every window size still needs padding there) and through the prompt encoder +
mask decoder on shared 1024-geometry features of two images, fed to Meta's predictor and to our model alike.
"""

import re

import numpy as np
import pytest
import sam2  # noqa: F401  (the reference; a missing package must fail, not skip)
import torch
import transformers
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2_helpers import load_ours, meta_model, write_folder
from suite_helpers import variants
from transformers import AutoConfig, AutoModel
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING, MODEL_MAPPING

from hiera_hf import SAM2_PRESETS, Sam2Config, Sam2HieraBackbone, Sam2Model
from hiera_hf.conversion import convert_meta_sam2_state_dict
from hiera_hf.sam2.modeling_sam2 import VIDEO_ONLY_KEYS

TOL = {"atol": 1e-4, "rtol": 1e-4}  # rtol for the large-magnitude mask logits
SMALL_SIZE = 384

# Prompts in original-image pixels; they fit both test images (1024x1024 and 600x900).
CASES = {
    "point": {"points": [[450.0, 300.0]], "labels": [1]},
    "points_negative": {"points": [[450.0, 300.0], [200.0, 150.0], [700.0, 500.0]], "labels": [1, 0, 0]},
    "box": {"box": [100.0, 80.0, 600.0, 400.0]},
    "box_point": {"box": [100.0, 80.0, 600.0, 400.0], "points": [[300.0, 200.0]], "labels": [0]},
    "mask": {"mask": True},
    "mask_point": {"mask": True, "points": [[450.0, 300.0]], "labels": [1]},
}


# ---------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------


def assign_ours(config: Sam2Config, converted: dict) -> Sam2Model:
    """Our model holding the converted tensors without a random initialisation first (cheap for large variants)."""
    with torch.device("meta"):
        model = Sam2Model(config)
    result = model.load_state_dict(converted, strict=False, assign=True)
    assert not result.missing_keys
    assert all(any(re.match(p, k) for p in VIDEO_ONLY_KEYS) for k in result.unexpected_keys)
    return model.eval()


def meta_predict(predictor: SAM2ImagePredictor, case: dict, mask_input, multimask: bool, image_index: int = -1):
    """Meta's predictor on one image; returns our-format prompts (model-input coordinates, via Meta's own
    transforms) and Meta's decoder outputs before the +-32 clamp: masks, IoU, object-score logits."""
    points = np.array(case["points"]) if "points" in case else None
    labels = np.array(case["labels"]) if "labels" in case else None
    box = np.array(case["box"]) if "box" in case else None
    mask_input, coords, labels_t, box_t = predictor._prep_prompts(points, labels, box, mask_input, True, image_index)
    captured = {}
    hook = predictor.model.sam_mask_decoder.register_forward_hook(lambda m, i, o: captured.update(out=o))
    try:
        _, _, low_res = predictor._predict(coords, labels_t, box_t, mask_input, multimask, True, image_index)
    finally:
        hook.remove()
    masks, iou, _, object_scores = captured["out"]
    torch.testing.assert_close(low_res, masks.clamp(-32, 32))  # what predict() returns
    prompts = {
        "input_points": coords[None] if coords is not None else None,
        "input_labels": labels_t[None].long() if labels_t is not None else None,
        "input_boxes": box_t.reshape(-1, 4)[None] if box_t is not None else None,
        "input_masks": mask_input[None] if mask_input is not None else None,
    }
    return prompts, (masks, iou, object_scores)


def stack_prompts(per_image: list[dict]) -> dict:
    """Batch per-image prompts `(1, P, ...)` along the image dimension."""
    return {key: None if per_image[0][key] is None else torch.cat([p[key] for p in per_image]) for key in per_image[0]}


def assert_matches(ours, image_index: int, reference: tuple) -> None:
    masks, iou, object_scores = reference
    torch.testing.assert_close(ours.pred_masks[image_index], masks, **TOL)
    torch.testing.assert_close(ours.iou_scores[image_index], iou, **TOL)
    torch.testing.assert_close(ours.object_score_logits[image_index], object_scores, **TOL)


# ---------------------------------------------------------------------------------------------------------------
# Full pipeline at 1024 (sam2.1_hiera_tiny)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    name = "sam2.1_hiera_tiny"
    meta = meta_model(name)
    # A smooth non-square synthetic image (random noise makes every mask degenerate).
    yy, xx = np.mgrid[0:600, 0:900] / 97.0
    base = np.stack([np.sin(xx + c) * np.cos(yy * (c + 1)) for c in range(3)], axis=-1)
    noise = np.random.default_rng(0).normal(0, 0.1, base.shape)
    image = np.clip((base + noise + 1) * 127.5, 0, 255).astype(np.uint8)
    predictor = SAM2ImagePredictor(meta)
    predictor.set_image(image)
    # Centre Meta's object-score logits on the prompt cases (a shift of the head's last bias, which touches
    # nothing else), so that both "present" and "absent" objects are exercised; then convert.
    scores = object_scores(predictor)
    with torch.no_grad():
        meta.sam_mask_decoder.pred_obj_score_head.layers[-1].bias -= float(np.median(scores))
    folder, converted = write_folder(meta, name, tmp_path_factory.mktemp("sam2"))
    ours = load_ours(folder, converted)
    with torch.no_grad():
        embeddings = ours.get_image_embeddings(predictor._transforms(image)[None])
    return {"meta": meta, "ours": ours, "predictor": predictor, "embeddings": embeddings, "folder": folder}


def object_scores(predictor: SAM2ImagePredictor) -> list[float]:
    """Meta's object-score logits for every prompt case."""
    scores = []
    for case in CASES.values():
        mask = previous_mask(predictor) if case.get("mask") else None
        scores.append(meta_predict(predictor, case, mask, True)[1][2].item())
    return scores


def previous_mask(predictor: SAM2ImagePredictor) -> np.ndarray:
    """The best low-res mask of a single click, fed back as a mask prompt (Meta's interactive loop)."""
    case = CASES["point"]
    _, iou, low_res = predictor.predict(np.array(case["points"]), np.array(case["labels"]), return_logits=True)
    return low_res[iou.argmax()][None]


def test_image_embeddings_match_meta(tiny):
    features = tiny["predictor"]._features
    embeddings = tiny["embeddings"]
    torch.testing.assert_close(embeddings.image_embeddings, features["image_embed"], **TOL)
    assert len(embeddings.high_res_features) == 2
    for ours, meta in zip(embeddings.high_res_features, features["high_res_feats"]):
        torch.testing.assert_close(ours, meta, **TOL)


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
@pytest.mark.parametrize("case_name", list(CASES))
def test_prompts_match_meta_predictor(tiny, case_name, multimask):
    case = CASES[case_name]
    mask = previous_mask(tiny["predictor"]) if case.get("mask") else None
    prompt, reference = meta_predict(tiny["predictor"], case, mask, multimask)
    with torch.no_grad():
        ours = tiny["ours"](**tiny["embeddings"], **prompt, multimask_output=multimask)
    num_masks = 3 if multimask else 1
    assert ours.pred_masks.shape == (1, 1, num_masks, 256, 256)
    assert ours.iou_scores.shape == (1, 1, num_masks) and ours.object_score_logits.shape == (1, 1, 1)
    assert_matches(ours, 0, reference)


def test_prompts_exercise_present_and_absent_objects(tiny):
    """Random weights can make every object 'absent'; the prompt cases above must cover both signs."""
    scores = object_scores(tiny["predictor"])
    assert min(scores) < 0 < max(scores), scores


def test_many_prompts_and_padded_points(tiny):
    """Several prompts on one image (Meta's batched predict), and prompts with different click counts in one call
    (label -10 padding) against Meta's predictor on each prompt alone, with both attention implementations."""
    predictor, model = tiny["predictor"], tiny["ours"]
    multi = {
        "points": [[[450.0, 300.0], [200.0, 150.0]], [[100.0, 100.0], [500.0, 500.0]]],
        "labels": [[1, 0], [1, 1]],
    }
    prompt, reference = meta_predict(predictor, multi, None, True)
    with torch.no_grad():
        ours = model(**tiny["embeddings"], **prompt)
    assert ours.pred_masks.shape == (1, 2, 3, 256, 256)
    torch.testing.assert_close(ours.pred_masks[0], reference[0], **TOL)
    torch.testing.assert_close(ours.iou_scores[0], reference[1], **TOL)

    short, short_reference = meta_predict(predictor, CASES["point"], None, False)
    long, long_reference = meta_predict(predictor, CASES["points_negative"], None, False)
    padded_points = torch.cat([short["input_points"], torch.full((1, 1, 2, 2), 77.0)], dim=2)
    padded_labels = torch.cat([short["input_labels"], torch.full((1, 1, 2), -10)], dim=2)
    prompts = {
        "input_points": torch.cat([padded_points, long["input_points"]], dim=1),
        "input_labels": torch.cat([padded_labels, long["input_labels"]], dim=1),
    }
    try:
        for implementation in ("sdpa", "eager"):
            model.set_attn_implementation(implementation)
            with torch.no_grad():
                ours = model(**tiny["embeddings"], **prompts, multimask_output=False)
            for index, (masks, iou, scores) in enumerate((short_reference, long_reference)):
                torch.testing.assert_close(ours.pred_masks[0, index], masks[0], **TOL)
                torch.testing.assert_close(ours.iou_scores[0, index], iou[0], **TOL)
                torch.testing.assert_close(ours.object_score_logits[0, index], scores[0], **TOL)
    finally:
        model.set_attn_implementation("sdpa")


def test_auto_classes_backbone_and_pixel_path(tiny):
    """The converted folder loads through AutoModel and AutoBackbone (four stage maps equal to Meta's trunk);
    `forward(pixel_values=...)` equals the `get_image_embeddings` path. Small input to keep it cheap."""
    folder, meta = tiny["folder"], tiny["meta"]
    assert type(AutoConfig.from_pretrained(str(folder))) is Sam2Config
    assert type(AutoModel.from_pretrained(str(folder))) is Sam2Model
    torch.manual_seed(4)
    pixel_values = torch.randn(1, 3, SMALL_SIZE, SMALL_SIZE)
    with torch.no_grad():
        meta_stages = meta.image_encoder.trunk(pixel_values)
    # transformers 5.23-5.25's AutoBackbone.from_pretrained asks the Hub about any name before looking for a local
    # folder (HFValidationError on an absolute path), so check the Auto mapping and load through the class.
    assert MODEL_FOR_BACKBONE_MAPPING[Sam2Config] is Sam2HieraBackbone
    # transformers' own SAM 2 keeps its classes despite the shared config class name.
    assert type(AutoConfig.for_model("sam2")) is transformers.Sam2Config
    assert MODEL_MAPPING[transformers.Sam2Config] is transformers.Sam2Model
    for implementation in ("sdpa", "eager"):
        backbone = Sam2HieraBackbone.from_pretrained(folder, image_size=SMALL_SIZE, attn_implementation=implementation)
        with torch.no_grad():
            maps = backbone(pixel_values).feature_maps
        assert len(maps) == 4
        for ours, reference in zip(maps, meta_stages, strict=True):
            torch.testing.assert_close(ours, reference, **TOL)

    model = Sam2Model.from_pretrained(folder, image_size=SMALL_SIZE).eval()
    prompts = {"input_points": torch.tensor([[[[100.0, 120.0]], [[300.0, 40.0]]]])}
    prompts["input_labels"] = torch.ones(1, 2, 1, dtype=torch.long)
    with torch.no_grad():
        direct = model(pixel_values=pixel_values, **prompts)
        cached = model(**model.get_image_embeddings(pixel_values), **prompts)
    assert direct.pred_masks.shape == (1, 2, 3, SMALL_SIZE // 4, SMALL_SIZE // 4)
    torch.testing.assert_close(direct.pred_masks, cached.pred_masks, rtol=0, atol=0)


def test_conversion_is_strict(tiny):
    state = tiny["meta"].state_dict()
    with pytest.raises(KeyError, match="image_encoder.trunk.extra"):
        convert_meta_sam2_state_dict({**state, "image_encoder.trunk.extra": torch.zeros(1)})
    partial = dict(state)
    del partial["sam_prompt_encoder.point_embeddings.2.weight"]
    with pytest.raises(KeyError, match="point_embeddings.2"):
        convert_meta_sam2_state_dict(partial)
    converted = convert_meta_sam2_state_dict(state)
    assert len(converted) == len(state) - 3  # four point embeddings become one table
    torch.testing.assert_close(
        converted["prompt_encoder.point_embeddings.weight"][3],
        state["sam_prompt_encoder.point_embeddings.3.weight"][0],
    )


def test_bad_inputs(tiny):
    model, embeddings = tiny["ours"], tiny["embeddings"]
    points, labels = torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match="exactly one of pixel_values or image_embeddings"):
        model(input_points=points, input_labels=labels)
    with pytest.raises(ValueError, match="at least one prompt"):
        model(**embeddings)
    with pytest.raises(ValueError, match="together"):
        model(**embeddings, input_points=points)
    with pytest.raises(ValueError, match="input_points must be a 4-D"):
        model(**embeddings, input_points=points[0], input_labels=labels[0])
    with pytest.raises(ValueError, match="batch, num_prompts"):
        model(**embeddings, input_points=points.expand(2, -1, -1, -1), input_labels=labels.expand(2, -1, -1))
    with pytest.raises(ValueError, match="input_labels must be integers"):
        model(**embeddings, input_points=points, input_labels=labels * 5)
    with pytest.raises(ValueError, match="input_boxes"):
        model(**embeddings, input_boxes=torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="input_masks"):
        model(**embeddings, input_masks=torch.zeros(1, 1, 1, 64, 64))
    with pytest.raises(ValueError, match="image_embeddings must have shape"):
        model(image_embeddings=torch.zeros(1, 256, 32, 32), high_res_features=embeddings.high_res_features,
              input_points=points, input_labels=labels)  # fmt: skip
    with pytest.raises(ValueError, match="high_res_features"):
        model(image_embeddings=embeddings.image_embeddings, input_points=points, input_labels=labels)
    with pytest.raises(ValueError, match="image_size=1024"):
        model.get_image_embeddings(torch.zeros(1, 3, 512, 512))
    with pytest.raises(TypeError, match="floating-point"):
        model.get_image_embeddings(torch.zeros(1, 3, 1024, 1024, dtype=torch.uint8))
    with pytest.raises(ValueError, match="Unknown SAM 2 variant 'sam3_hiera_tiny'.*sam2.1_hiera_tiny"):
        Sam2Config.from_preset("sam3_hiera_tiny")
    with pytest.raises(Exception, match="one entry per stage"):
        Sam2Config(window_sizes=(8, 4))


# ---------------------------------------------------------------------------------------------------------------
# Every official variant
# ---------------------------------------------------------------------------------------------------------------


def test_presets_cover_every_official_variant():
    expected = {f"sam2{v}_hiera_{s}" for v in ("", ".1") for s in ("tiny", "small", "base_plus", "large")}
    assert set(SAM2_PRESETS) == expected


@pytest.mark.parametrize("name", variants(SAM2_PRESETS))
def test_variant_matches_meta(name):
    meta = meta_model(name, seed=1)
    converted = convert_meta_sam2_state_dict(meta.state_dict())

    # Trunk and neck at a small input.
    torch.manual_seed(2)
    pixel_values = torch.randn(1, 3, SMALL_SIZE, SMALL_SIZE)
    small = assign_ours(Sam2Config.from_preset(name, image_size=SMALL_SIZE), converted)
    captured = {}
    hook = meta.image_encoder.trunk.register_forward_hook(lambda m, i, o: captured.update(stages=o))
    with torch.no_grad():
        meta_out = meta.forward_image(pixel_values)
        ours = small.get_vision_features(pixel_values)
    hook.remove()
    meta_stages = captured["stages"]
    for ours_stage, meta_stage in zip(ours.intermediates, meta_stages, strict=True):
        torch.testing.assert_close(ours_stage, meta_stage, **TOL)
    for ours_level, meta_level in zip(ours.fpn_features, meta_out["backbone_fpn"][:3], strict=True):
        torch.testing.assert_close(ours_level, meta_level, **TOL)
    torch.testing.assert_close(ours.position_encoding, meta_out["vision_pos_enc"][-1], **TOL)

    # Prompt encoder and mask decoder on shared features of two 1024 images; image 0 has one click, padded to the
    # three clicks of image 1 (label -10).
    model = assign_ours(Sam2Config.from_preset(name), converted)
    torch.manual_seed(3)
    features = {
        "image_embed": torch.randn(2, 256, 64, 64),
        "high_res_feats": [torch.randn(2, 32, 256, 256), torch.randn(2, 64, 128, 128)],
    }
    predictor = SAM2ImagePredictor(meta)
    predictor._features, predictor._orig_hw, predictor._is_image_set = features, [(1024, 1024)] * 2, True
    embeddings = {"image_embeddings": features["image_embed"], "high_res_features": tuple(features["high_res_feats"])}
    for first, second, multimask in (("point", "points_negative", True), ("box_point", "box", False)):
        prompt0, reference0 = meta_predict(predictor, CASES[first], None, multimask, image_index=0)
        prompt1, reference1 = meta_predict(predictor, CASES[second], None, multimask, image_index=1)
        num_points = max(0 if p["input_points"] is None else p["input_points"].shape[2] for p in (prompt0, prompt1))
        prompts = {"input_boxes": prompt0["input_boxes"]}
        if prompts["input_boxes"] is not None:
            prompts["input_boxes"] = torch.cat([prompt0["input_boxes"], prompt1["input_boxes"]])
        points, labels = [], []
        for prompt in (prompt0, prompt1):
            p, lab = prompt["input_points"], prompt["input_labels"]
            if p is None:
                p, lab = torch.zeros(1, 1, 0, 2), torch.zeros(1, 1, 0, dtype=torch.long)
            missing = num_points - p.shape[2]
            points.append(torch.cat([p, torch.zeros(1, 1, missing, 2)], dim=2))
            labels.append(torch.cat([lab, torch.full((1, 1, missing), -10)], dim=2))
        with torch.no_grad():
            ours = model(**embeddings, input_points=torch.cat(points), input_labels=torch.cat(labels), **prompts,
                         multimask_output=multimask)  # fmt: skip
        assert_matches(ours, 0, reference0)
        assert_matches(ours, 1, reference1)
