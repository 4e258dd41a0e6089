"""SAM 2 image processor against Meta's `SAM2Transforms` and `SAM2ImagePredictor` (random weights, tiny at 512).

Meta's hole/sprinkle removal needs its CUDA extension; on CPU Meta skips it with a warning. The reference here is
Meta's own `postprocess_masks` with the extension replaced by scipy's 8-connected labelling (same contract).
"""

import re
import warnings

import numpy as np
import pytest
import sam2  # noqa: F401  (the reference; a missing package must fail, not skip)
import sam2.utils.misc
import torch
from PIL import Image
from sam2.sam2_image_predictor import SAM2ImagePredictor
from sam2.utils.transforms import SAM2Transforms
from sam2_helpers import load_ours, media, meta_model, scipy_connected_components, write_folder
from scipy import ndimage
from transformers import AutoImageProcessor

from hiera_hf import Sam2Config, Sam2ImageProcessor
from hiera_hf.image_utils import to_rgb_float
from hiera_hf.sam2.data import DavisVideoDataset, Sam2ImageDataset
from hiera_hf.sam2.processing_sam2 import normalize, resize_image
from hiera_hf.sam2.video_tracking import resize_video_frame

SIZE = 512  # reduced model input (Meta's model is built at this size through a hydra override)
TOL = {"atol": 1e-4, "rtol": 1e-4}  # rtol for the large-magnitude mask logits


@pytest.fixture(scope="module")
def truck() -> np.ndarray:
    return np.asarray(Image.open(media("truck.jpg")).convert("RGB"))


@pytest.fixture(scope="module")
def processor() -> Sam2ImageProcessor:
    return Sam2ImageProcessor()


def test_pixel_values_match_meta_transforms(truck, processor):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script in SAM2Transforms
        transforms = SAM2Transforms(1024, 0.0)
    reference = transforms(truck)
    for image in (truck, Image.fromarray(truck), torch.from_numpy(truck).permute(2, 0, 1)):
        out = processor(image)
        assert out["pixel_values"].shape == (1, 3, 1024, 1024)
        assert out["original_sizes"].tolist() == [[1200, 1800]]
        torch.testing.assert_close(out["pixel_values"][0], reference, atol=1e-5, rtol=0)
    # Grey, RGBA and 16-bit images become the RGB image they show.
    small = truck[::8, ::8]
    expected = processor(small)["pixel_values"]
    grey = Image.fromarray(small).convert("L")
    torch.testing.assert_close(processor(grey)["pixel_values"], processor(grey.convert("RGB"))["pixel_values"])
    rgba = np.concatenate([small, np.full(small.shape[:2] + (1,), 7, np.uint8)], axis=-1)
    torch.testing.assert_close(processor(rgba)["pixel_values"], expected, atol=0, rtol=0)
    torch.testing.assert_close(processor(small.astype(np.uint16) * 257)["pixel_values"], expected, atol=1e-6, rtol=0)
    sixteen = Image.fromarray(small[..., 0].astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I")
    torch.testing.assert_close(
        processor(sixteen)["pixel_values"],
        processor(np.repeat(small[..., :1], 3, -1))["pixel_values"],
        atol=1e-6,
        rtol=0,
    )


def test_image_and_video_pixels_follow_metas_two_paths(truck, tmp_path):
    """Meta preprocesses images and video frames differently: its image predictor resizes the float image with torch
    (bilinear, antialiased), its video predictor's `load_video_frames` resizes the 8-bit frame with Pillow (bicubic).
    Each of our two paths equals Meta's own function, the training datasets use the path of the predictor the model
    is used with afterwards, and the two paths differ far beyond the parity tolerance: one path for both would break
    the image or the video parity with Meta."""
    size, ids = 256, np.zeros((600, 900), np.uint8)
    ids[100:300, 200:500] = 1
    for folder in ("JPEGImages/clip", "Annotations/clip", "images", "masks"):
        (tmp_path / folder).mkdir(parents=True)
    for t, frame in enumerate((truck[:600, :900], truck[600:, 900:])):
        for path in (tmp_path / "JPEGImages" / "clip" / f"{t:05d}.jpg", tmp_path / "images" / f"{t}.jpg"):
            Image.fromarray(frame).save(path)
        for path in (tmp_path / "Annotations" / "clip" / f"{t:05d}.png", tmp_path / "masks" / f"{t}.png"):
            Image.fromarray(ids).save(path)
    decoded = [np.array(Image.open(p).convert("RGB")) for p in sorted((tmp_path / "JPEGImages" / "clip").iterdir())]

    meta_frames, _, _ = sam2.utils.misc.load_video_frames(
        str(tmp_path / "JPEGImages" / "clip"), size, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script in SAM2Transforms
        transforms = SAM2Transforms(size, 0.0)
    meta_images = torch.stack([transforms(image) for image in decoded])
    frames = torch.stack([normalize(torch.from_numpy(resize_video_frame(image, (size, size)))) for image in decoded])
    images = torch.stack(
        [normalize(resize_image(torch.from_numpy(to_rgb_float(image)), (size, size))) for image in decoded]
    )
    torch.testing.assert_close(frames, meta_frames, atol=0, rtol=0)
    torch.testing.assert_close(images, meta_images, atol=1e-5, rtol=0)

    clip = DavisVideoDataset(tmp_path, image_size=size, num_frames=2, train=False)[0]["pixel_values"]
    torch.testing.assert_close(clip, meta_frames, atol=0, rtol=0)
    image_data = Sam2ImageDataset.from_folder(tmp_path, image_size=size, train=False)
    torch.testing.assert_close(torch.stack([image_data[i]["pixel_values"] for i in range(2)]), meta_images,
                               atol=1e-5, rtol=0)  # fmt: skip

    gap = (meta_frames - meta_images).abs()  # measured: max 0.37, mean 0.017 (normalised units)
    assert gap.max() > 0.1 and gap.mean() > 0.005, (gap.max(), gap.mean())


def test_saved_processor_loads_through_auto_class(tmp_path):
    """transformers owns the class name `Sam2ImageProcessor`; a saved folder must still load ours."""
    Sam2Config.from_preset("sam2.1_hiera_tiny", image_size=SIZE).save_pretrained(tmp_path)
    Sam2ImageProcessor(size={"height": SIZE, "width": SIZE}).save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(str(tmp_path))
    assert type(loaded) is Sam2ImageProcessor and (loaded.size.height, loaded.size.width) == (SIZE, SIZE)


def test_prompt_scaling_matches_meta(processor):
    transforms = SAM2Transforms(1024, 0.0)
    sizes = torch.tensor([[1200, 1800], [331, 500]])
    points = [[[[10.0, 20.0], [1799.0, 1199.0]], [[900.0, 600.0]]], [[[0.0, 331.0]]]]
    labels = [[[1, 0], [1]], [[1]]]
    boxes = [[[10.0, 20.0, 300.0, 400.0], [0.0, 0.0, 1800.0, 1200.0]], [[5.0, 6.0, 499.0, 330.0]]]
    out = processor.prepare_prompts(sizes, points, labels, boxes)
    assert out["input_points"].shape == (2, 2, 2, 2) and out["input_boxes"].shape == (2, 2, 4)
    for i, (height, width) in enumerate(sizes.tolist()):
        for j, prompt in enumerate(points[i]):
            meta = transforms.transform_coords(torch.tensor(prompt), normalize=True, orig_hw=(height, width))
            torch.testing.assert_close(out["input_points"][i, j, : len(prompt)], meta, atol=0, rtol=0)
            assert out["input_labels"][i, j, : len(prompt)].tolist() == labels[i][j]
            assert (out["input_labels"][i, j, len(prompt) :] == -10).all()
        meta_boxes = transforms.transform_boxes(torch.tensor(boxes[i]), normalize=True, orig_hw=(height, width))
        torch.testing.assert_close(out["input_boxes"][i, : len(boxes[i])], meta_boxes.reshape(-1, 4), atol=0, rtol=0)
    assert (out["input_labels"][1, 1] == -10).all()  # image 1's missing prompt is padding only


def test_post_process_matches_meta(processor):
    torch.manual_seed(0)
    low_res = torch.nn.functional.interpolate(torch.randn(2, 3, 16, 16) * 8, size=(256, 256), mode="bilinear")
    reference = SAM2Transforms(1024, 0.0).postprocess_masks(low_res, (331, 500))
    logits = processor.post_process_masks(low_res[None], [(331, 500)], binarize=False)[0]
    torch.testing.assert_close(logits, reference, atol=1e-5, rtol=0)
    masks = processor.post_process_masks(low_res[None], torch.tensor([[331, 500]]), mask_threshold=0.5)[0]
    assert masks.dtype == torch.bool and torch.equal(masks, reference > 0.5)


def test_hole_and_sprinkle_removal(processor, monkeypatch):
    """A crafted mask with holes and specks of known sizes; equals Meta's postprocess_masks with a CPU stand-in
    for its CUDA connected components, and an independent scipy check of which regions change."""
    logits = torch.full((256, 256), -3.0)
    logits[20:120, 20:120] = 4.0  # big object
    logits[40:42, 40:42] = -2.0  # hole of 4 px
    logits[60:66, 60:66] = -2.0  # hole of 36 px
    logits[70, 100] = logits[71, 101] = -1.0  # 2 px hole, 8-connected diagonally
    logits[200:203, 200:203] = 2.0  # speck of 9 px
    logits[150:160, 180:190] = 2.0  # blob of 100 px
    logits[230, 10] = logits[231, 11] = 1.0  # 2 px speck, 8-connected diagonally
    low_res = logits[None, None, None].expand(1, 1, 2, 256, 256).clone()
    low_res[0, 0, 1] *= -1  # second mask: foreground and background swapped
    hole, sprinkle = 10, 20
    cleaned = processor.post_process_masks(
        low_res, [(256, 256)], max_hole_area=hole, max_sprinkle_area=sprinkle, binarize=False
    )[0]

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", scipy_connected_components)
    meta = SAM2Transforms(1024, 0.0, max_hole_area=hole, max_sprinkle_area=sprinkle)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Meta would warn if its post-processing were skipped
        reference = meta.postprocess_masks(low_res[0], (256, 256))
    torch.testing.assert_close(cleaned, reference, atol=0, rtol=0)

    eight = np.ones((3, 3), dtype=int)
    for index in range(2):
        foreground = low_res[0, 0, index].numpy() > 0
        expected = foreground.copy()
        for region, max_area, value in ((~foreground, hole, True), (foreground, sprinkle, False)):
            labels, count = ndimage.label(region, structure=eight)
            for label in range(1, count + 1):
                if (labels == label).sum() <= max_area:
                    expected[labels == label] = value
        assert np.array_equal(cleaned[0, index].numpy() > 0, expected)
    mask = cleaned[0, 0] > 0
    assert mask[40:42, 40:42].all() and mask[70, 100] and not mask[60:66, 60:66].any()  # small holes only
    assert not mask[200:203, 200:203].any() and not mask[230, 10] and mask[150:160, 180:190].all()


# ---------------------------------------------------------------------------------------------------------------
# End to end against Meta's predictor
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    name = "sam2.1_hiera_tiny"
    meta = meta_model(name, image_size=SIZE)
    folder, converted = write_folder(meta, name, tmp_path_factory.mktemp("sam2"), image_size=SIZE)
    predictor = SAM2ImagePredictor(meta)
    scale = SIZE // 4
    predictor._bb_feat_sizes = [(scale, scale), (scale // 2, scale // 2), (scale // 4, scale // 4)]  # hard-coded
    image = np.asarray(Image.open(media("groceries.jpg")).convert("RGB"))
    predictor.set_image(image)
    ours = load_ours(folder, converted)
    return {"predictor": predictor, "ours": ours, "image": image}


def meta_predict(predictor, points=None, labels=None, box=None, multimask=True):
    logits, iou, _ = predictor.predict(
        None if points is None else np.array(points),
        None if labels is None else np.array(labels),
        None if box is None else np.array(box),
        multimask_output=multimask,
        return_logits=True,
    )
    return torch.from_numpy(logits), torch.from_numpy(iou)


def assert_same_masks(ours_logits: torch.Tensor, ours_masks: torch.Tensor, reference: torch.Tensor) -> None:
    """Logits within tolerance; binary masks identical except where Meta's logit is within 1e-3 of 0."""
    torch.testing.assert_close(ours_logits, reference, **TOL)
    differ = ours_masks != (reference > 0)
    assert not (differ & (reference.abs() > 1e-3)).any()


@pytest.mark.parametrize("multimask", [True, False], ids=["multimask", "single"])
def test_end_to_end_matches_meta_predictor(models, processor, multimask):
    """Two ragged prompts in one call (1 click; 3 clicks with negatives) and box prompts (box; box + click)."""
    predictor, model, image = models["predictor"], models["ours"], models["image"]
    processor = Sam2ImageProcessor(size={"height": SIZE, "width": SIZE})
    calls = [
        ({"input_points": [[[[400, 250]], [[400, 250], [100, 80], [700, 500]]]], "input_labels": [[[1], [1, 0, 0]]]},
         [{"points": [[400, 250]], "labels": [1]}, {"points": [[400, 250], [100, 80], [700, 500]], "labels": [1, 0, 0]}]),
        ({"input_boxes": [[[50, 40, 500, 400], [50, 40, 500, 400]]], "input_points": [[[], [[300, 200]]]],
          "input_labels": [[[], [0]]]},
         [{"box": [50, 40, 500, 400]}, {"box": [50, 40, 500, 400], "points": [[300, 200]], "labels": [0]}]),
    ]  # fmt: skip
    for prompts, references in calls:
        inputs = processor(image, **prompts)
        with torch.no_grad():
            out = model(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=multimask)
        logits = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], binarize=False)[0]
        masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0]
        assert masks.shape == (2, 3 if multimask else 1, *image.shape[:2])
        for index, reference in enumerate(references):
            meta_logits, meta_iou = meta_predict(predictor, **reference, multimask=multimask)
            assert_same_masks(logits[index], masks[index], meta_logits)
            torch.testing.assert_close(out.iou_scores[0, index], meta_iou, **TOL)


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (np.zeros((2, 2, 2, 2, 2), np.uint8), ValueError, "C in (1, 3, 4)"),
        (np.zeros((10, 10, 5), np.uint8), ValueError, "C in (1, 3, 4)"),
        (np.zeros((0, 10, 3), np.uint8), ValueError, "(0, 10, 3)"),
        (np.zeros((10, 10, 3), np.int16), TypeError, "dtype int16"),
        (np.zeros((10, 10, 3), bool), TypeError, "dtype bool"),
        (np.full((10, 10, 3), 2.0), ValueError, "values in [0, 1]"),
        ({"image": 1}, TypeError, "dict"),
    ],
)
def test_rejects_bad_images(processor, bad, error, message):
    with pytest.raises(error, match=re.escape(message)):
        processor(bad)


@pytest.mark.parametrize(
    "prompts, message",
    [
        ({"input_points": [[[[10, 10]]]]}, "given together"),
        ({"input_labels": [[[1]]]}, "given together"),
        ({"input_points": [[[[600, 10]]]], "input_labels": [[[1]]]}, "outside the 500x331 image"),
        ({"input_points": [[[[10, -1]]]], "input_labels": [[[1]]]}, "outside"),
        ({"input_points": [[[10, 10]]], "input_labels": [[1]]}, "nested as [image][prompt]"),
        ({"input_points": [[[[10, 10, 3]]]], "input_labels": [[[1]]]}, "shape (N, 2)"),
        ({"input_points": [[[]]], "input_labels": [[[]]]}, "shape (N, 2)"),
        ({"input_points": [[]], "input_labels": [[]]}, "at least one prompt"),
        ({"input_points": [[[[10, 10], [5, 5]]]], "input_labels": [[[1]]]}, "one label"),
        ({"input_points": [[[[10, 10]]]], "input_labels": [[[5]]]}, "must be 0 (background) or 1 (foreground) or -10"),
        ({"input_points": [[[[10, 10]]], [[[10, 10]]]], "input_labels": [[[1]], [[1]]]}, "for 2 image(s)"),
        ({"input_boxes": [[[10, 10, 5, 20]]]}, "x0 < x1"),
        ({"input_boxes": [[[10, 10, 20]]]}, "shape (4)"),
        ({"input_boxes": [[[0, 0, 5, 5], [1, 1, 6, 6]]], "input_points": [[[[3, 3]]]], "input_labels": [[[1]]]},
         "same number of prompts"),
    ],
)  # fmt: skip
def test_rejects_bad_prompts(processor, prompts, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        processor.prepare_prompts([(331, 500)], **prompts)


def test_rejects_bad_post_process_inputs(processor):
    with pytest.raises(ValueError, match="for 2 image"):
        processor.post_process_masks(torch.zeros(2, 1, 1, 8, 8), [(10, 10)])
    with pytest.raises(ValueError, match="num_prompts, num_masks"):
        processor.post_process_masks([torch.zeros(1, 8, 8)], [(10, 10)])
