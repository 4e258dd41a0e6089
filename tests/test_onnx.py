"""ONNX export and the torch-free ONNX Runtime backend: every graph against our PyTorch modules (fp32, 1e-4), the
numpy pre/post-processing against the torch processor, Hiera probabilities, runs without torch, and bad input.

SAM 2 models are built with random weights at a reduced `image_size` (the graphs do not depend on it) to keep the
export cheap; every 1-D weight gets random values so that no path is trivially zero, and the video modules get
unit-gain weights, so that the memory bank visibly changes the masks (with the default 0.02 init, memory attention
barely moves the output and a wrong memory would go unnoticed)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sam2_helpers import media

from hiera_hf import (
    HieraConfig,
    HieraForImageClassification,
    Sam2Config,
    Sam2ImageProcessor,
    Sam2Model,
    Sam2VideoModel,
)
from hiera_hf.cli import main
from hiera_hf.onnx import export as onnx_export
from hiera_hf.onnx.graphs import GRAPHS
from hiera_hf.onnx.runtime import OnnxHieraClassifier, Sam2OnnxImagePredictor, load_session, run_session
from hiera_hf.onnx.video_session import Sam2OnnxVideoSession, to_bfloat16_bits
from hiera_hf.sam2.frame_arithmetic import fill_holes, resize
from hiera_hf.sam2.memory_bank import MemorySelection
from hiera_hf.sam2.memory_tokens import assemble_memory
from hiera_hf.sam2.processing_sam2 import clean_mask_logits
from hiera_hf.sam2.tracking_strategies import strategy_settings
from hiera_hf.sam2.video_session import Sam2VideoSession
from hiera_hf.video_io import open_video

SIZE = 128  # model input size of the test models
ATOL = 1e-4
# The fully exported variant; two more get the graphs their architecture changes: SAM 2.0's memory settings
# (pointer encodings, no spatial "no object" embedding) and a larger trunk.
MAIN = "sam2.1_hiera_tiny"
EXTRA_GRAPHS = {
    "sam2_hiera_tiny": ("mask_decoder_multimask", "memory_attention", "memory_encoder", "mask_prompt"),
    "sam2.1_hiera_small": ("image_encoder",),
}
SRC = str(Path(__file__).resolve().parents[1] / "src")


def close(actual: np.ndarray, expected: torch.Tensor, atol: float = ATOL) -> None:
    """Within `atol` absolute, or `atol` relative for large-magnitude values (mask logits reach hundreds)."""
    expected = expected.detach().float().numpy()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=atol)


@torch.no_grad()
def random_sam2(name: str, folder: Path) -> Path:
    torch.manual_seed(0)
    model = Sam2VideoModel(Sam2Config.from_preset(name, image_size=SIZE))
    for parameter_name, parameter in model.named_parameters():
        if parameter.ndim <= 1:
            parameter.add_(0.1 * torch.randn_like(parameter))
        elif parameter_name.startswith(("memory_attention.", "memory_encoder.", "mask_decoder.", "obj_ptr")):
            parameter.normal_(0.0, parameter[0].numel() ** -0.5)
    model.maskmem_tpos_enc.mul_(30.0)
    model.mask_decoder.pred_obj_score_head.layers[2].bias.add_(0.5)  # objects present as well as absent
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(torch video model, torch image model, ONNX folder) of `MAIN`, exported whole by `export_onnx`, with an int8
    image encoder calibrated on the shared photos."""
    root = tmp_path_factory.mktemp(MAIN)
    folder = random_sam2(MAIN, root / "model")
    photos = Path(media("truck.jpg")).parent
    output = onnx_export.export_onnx(folder, root / "onnx", int8=True, calibration=photos, progress=False)
    return Sam2VideoModel.from_pretrained(folder).eval(), Sam2Model.from_pretrained(folder).eval(), output


@pytest.fixture(scope="module")
def graphs(request, tmp_path_factory):
    """(torch video model, folder of ONNX graphs) of the variant `request.param`."""
    if request.param == MAIN:
        video, _, folder = request.getfixturevalue("exported")
        return video, folder
    root = tmp_path_factory.mktemp(request.param)
    video = Sam2VideoModel.from_pretrained(random_sam2(request.param, root / "model")).eval()
    onnx_export.export_sam2_graphs(video, root, EXTRA_GRAPHS[request.param])
    return video, root


def variants(graph: str) -> list[str]:
    return [MAIN, *(name for name, names in EXTRA_GRAPHS.items() if graph in names)]


@pytest.fixture(scope="module")
def predictor(exported):
    """The ORT image predictor of `exported`, with truck.jpg set."""
    predictor = Sam2OnnxImagePredictor(exported[2])
    predictor.set_image(Image.open(media("truck.jpg")))
    return predictor


def run(folder: Path, graph: str, **inputs) -> dict[str, np.ndarray]:
    session = load_session(folder / f"{graph}.onnx", expected_inputs=GRAPHS[graph][0])
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, run_session(session, names, {k: np.asarray(v) for k, v in inputs.items()})))


# ---------------------------------------------------------------------------------------------------------------
# Graph parity
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("graphs", variants("image_encoder"), indirect=True)
@torch.no_grad()
def test_image_encoder_matches_torch(graphs):
    video, folder = graphs
    pixels = torch.randn(3, 3, SIZE, SIZE)  # batch 3: the graph was traced with 2
    expected = video.get_vision_features(pixels)
    outputs = run(folder, "image_encoder", pixel_values=pixels.numpy())
    high_res_0, high_res_1, features = expected.fpn_features
    close(outputs["high_res_features_0"], high_res_0)
    close(outputs["high_res_features_1"], high_res_1)
    close(outputs["vision_features"], features)
    close(outputs["image_embeddings"], features + video.no_mem_embed.reshape(1, -1, 1, 1))
    close(outputs["vision_position_encoding"], expected.position_encoding)


@pytest.mark.parametrize("multimask", [True, False])
@torch.no_grad()
def test_image_predictor_matches_torch_pipeline(exported, predictor, multimask):
    """Preprocessing, encoder, decoder and mask upscaling of the ORT predictor against `Sam2ImageProcessor` +
    `Sam2Model` on a real photo, with clicks + box, then with a mask prompt."""
    model = exported[1]
    image = Image.open(media("truck.jpg")).convert("RGB")
    processor = Sam2ImageProcessor(size={"height": SIZE, "width": SIZE})
    points, labels, box = [[500.0, 375.0], [1125.0, 625.0]], [1, 0], [75.0, 275.0, 1725.0, 850.0]
    inputs = processor(image, input_points=[[points]], input_labels=[[labels]], input_boxes=[[box]])
    original = inputs.pop("original_sizes")
    expected = model(**inputs, multimask_output=multimask)
    masks, scores, low_res = predictor.predict(points, labels, box, multimask_output=multimask, return_logits=True)
    close(low_res, expected.pred_masks[0, 0])
    close(scores, expected.iou_scores[0, 0])
    upscaled = processor.post_process_masks(expected.pred_masks, original, binarize=False)[0][0]
    close(masks, upscaled)
    binary = predictor.predict(points, labels, box, multimask_output=multimask)[0]
    away = (upscaled.abs() > 1e-3).numpy()
    assert np.array_equal(binary[away], (upscaled > 0).numpy()[away])

    # A mask prompt (the previous low-resolution logits) with one click.
    prompt = torch.from_numpy(low_res[:1])
    expected = model(
        **{k: v for k, v in inputs.items() if k != "input_boxes"}, input_masks=prompt[None, None],
        multimask_output=multimask,
    )
    _, scores, low_res = predictor.predict(points, labels, mask_input=low_res[:1], multimask_output=multimask)
    close(low_res, expected.pred_masks[0, 0])
    close(scores, expected.iou_scores[0, 0])


@pytest.mark.parametrize("graphs", variants("mask_decoder_multimask"), indirect=True)
@torch.no_grad()
def test_mask_decoder_object_pointers_per_object(graphs):
    """The video form: one memory-conditioned embedding per object, the frame's high-resolution features once."""
    video, folder = graphs
    grid = SIZE // 16
    torch.manual_seed(1)
    embeddings = torch.randn(2, 256, grid, grid)
    high_res = (torch.randn(1, 32, 4 * grid, 4 * grid), torch.randn(1, 64, 2 * grid, 2 * grid))
    points = torch.tensor([[[30.0, 40.0], [90.0, 20.0], [0.0, 0.0]], [[64.0, 64.0], [0.0, 0.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 0, -1], [1, -10, -1]])  # Meta's form: clicks (padded), then "not a point"
    for multimask, graph in ((False, "mask_decoder"), (True, "mask_decoder_multimask")):
        if not (folder / f"{graph}.onnx").is_file():
            continue  # the extra variants carry the multimask graph only (the same decoder code)
        expected = Sam2Model.forward(
            video,
            image_embeddings=embeddings,
            high_res_features=tuple(x.expand(2, -1, -1, -1) for x in high_res),
            input_points=points[:, None, :2],
            input_labels=labels[:, None, :2],
            multimask_output=multimask,
        )
        scores = expected.object_score_logits[:, 0]
        tokens = expected.sam_output_tokens[:, 0]
        # SAM 2's threshold (0), and one between the two objects' scores: the pointers follow it (SAMURAI's -1).
        for threshold in (0.0, scores.mean().item()):
            outputs = run(
                folder, graph, image_embeddings=embeddings.numpy(), high_res_features_0=high_res[0].numpy(),
                high_res_features_1=high_res[1].numpy(), point_coords=points.numpy(), point_labels=labels.numpy(),
                mask_input=np.zeros((2, 1, 4 * grid, 4 * grid), np.float32), has_mask_input=np.zeros(2, np.float32),
                object_score_threshold=np.asarray(threshold, np.float32),
            )  # fmt: skip
            close(outputs["masks"], expected.pred_masks[:, 0])
            close(outputs["iou_scores"], expected.iou_scores[:, 0])
            close(outputs["object_score_logits"], scores)
            pointers = [video.object_pointer(tokens[:, i], scores, threshold) for i in range(tokens.shape[1])]
            close(outputs["object_pointers"], torch.stack(pointers, dim=1))


@pytest.mark.parametrize("graphs", variants("memory_attention"), indirect=True)
@pytest.mark.parametrize("frames,pointers", [(1, 1), (3, 5)])
@torch.no_grad()
def test_memory_attention_matches_torch(graphs, frames, pointers):
    video, folder = graphs
    config, grid = video.config, SIZE // 16
    torch.manual_seed(frames)
    features = torch.randn(1, 256, grid, grid)
    position = video.get_vision_features(torch.randn(1, 3, SIZE, SIZE)).position_encoding
    memory_features = torch.randn(2, frames, config.memory_encoder_hidden_size, grid, grid)
    temporal = torch.tensor([0, *range(config.num_maskmem - frames + 1, config.num_maskmem)][:frames])
    object_pointers = torch.randn(2, pointers, 256)
    offsets = torch.tensor([-2, *range(1, pointers)][:pointers])
    selection = MemorySelection(
        spatial_frames=tuple(range(frames)),
        temporal_positions=tuple(temporal.tolist()),
        pointer_frames=tuple(range(pointers)),
        pointer_offsets=tuple(offsets.tolist()),
        max_pointer_offset=6,
    )
    tokens = assemble_memory(video, selection, memory_features, object_pointers)
    expected = video.condition_on_memory(
        features.expand(2, -1, -1, -1), position, tokens.memory, tokens.memory_position_encoding,
        tokens.num_pointer_tokens,
    )
    outputs = run(
        folder, "memory_attention", vision_features=features.numpy(), vision_position_encoding=position.numpy(),
        memory_features=memory_features.numpy(), memory_temporal_positions=temporal.numpy(),
        object_pointers=object_pointers.numpy(), pointer_frame_offsets=offsets.numpy(),
        max_pointer_offset=np.asarray(6, dtype=np.int64),
    )
    close(outputs["conditioned_features"], expected)


@pytest.mark.parametrize("graphs", variants("memory_attention"), indirect=True)
def test_memory_cross_attention_is_exported_in_query_chunks(graphs):
    """ONNX Runtime materialises attention weights: the exported cross-attention takes its queries in chunks (one
    softmax per chunk), and the PyTorch model is left as it was."""
    import onnx

    video, folder = graphs
    model = onnx.load(folder / "memory_attention.onnx")
    nodes = [*model.graph.node, *(node for function in model.functions for node in function.node)]
    layers = len(video.memory_attention.layers)
    softmaxes = sum(node.op_type == "Softmax" for node in nodes)
    assert softmaxes == layers * (1 + onnx_export.CROSS_ATTENTION_QUERY_CHUNKS), softmaxes
    assert all(layer.cross_attn_image.query_chunks == 1 for layer in video.memory_attention.layers)


@pytest.mark.parametrize("graphs", variants("memory_encoder"), indirect=True)
@torch.no_grad()
def test_memory_encoder_matches_torch(graphs):
    video, folder = graphs
    grid = SIZE // 16
    torch.manual_seed(2)
    features = torch.randn(1, 256, grid, grid)
    masks = 8 * torch.randn(3, 1, SIZE, SIZE)
    scores = torch.tensor([[2.0], [-1.0], [0.5]])
    from_points = torch.tensor([True, False, True])
    expected = video.encode_memory(features.expand(3, -1, -1, -1), masks, scores, from_points)
    outputs = run(
        folder, "memory_encoder", vision_features=features.numpy(), mask_logits=masks.numpy(),
        object_score_logits=scores.numpy(), from_points=from_points.numpy(),
    )
    close(outputs["memory_features"], expected)
    assert outputs["memory_position_encoding"].shape == (1, video.config.memory_encoder_hidden_size, grid, grid)


@pytest.mark.parametrize("graphs", variants("mask_prompt"), indirect=True)
@torch.no_grad()
def test_mask_prompt_matches_torch(graphs):
    video, folder = graphs
    grid = SIZE // 16
    torch.manual_seed(3)
    for count in (1, 3):
        features = torch.randn(count, 256, grid, grid)
        high_res = (torch.randn(count, 32, 4 * grid, 4 * grid), torch.randn(count, 64, 2 * grid, 2 * grid))
        masks = (torch.rand(count, 1, SIZE, SIZE) > 0.7).float()
        masks[-1] = 0  # an empty mask: the object is absent
        expected = video.mask_as_output(features, high_res, masks)
        outputs = run(
            folder, "mask_prompt", vision_features=features.numpy(), high_res_features_0=high_res[0].numpy(),
            high_res_features_1=high_res[1].numpy(), input_masks=masks.numpy(),
        )
        close(outputs["masks"], expected.pred_masks)
        close(outputs["object_score_logits"], expected.object_score_logits)
        close(outputs["object_pointers"], expected.object_pointers)


# ---------------------------------------------------------------------------------------------------------------
# The ORT video session against Sam2VideoSession
# ---------------------------------------------------------------------------------------------------------------

CLIP_FRAMES = 10


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """The first frames of a real video, `(T, H, W, 3)` uint8."""
    with open_video(media("goat.mp4")) as video:
        return video.read(range(CLIP_FRAMES))


def _tracking_script(session) -> list:
    """Two objects prompted on different frames (a click, a box), one more added by a mask, propagation, a
    correction and re-tracking from it, reverse tracking, then an object removed and its prompt cleared."""
    height, width = session.video_height, session.video_width
    results = [
        session.add_points(2, 1, [[0.4 * width, 0.5 * height]], [1]),
        session.add_box(4, 2, [0.15 * width, 0.1 * height, 0.55 * width, 0.65 * height]),
    ]
    results += session.propagate()
    results.append(session.add_points(6, 1, [[0.6 * width, 0.3 * height]], [0], clear_old=False))
    results += session.propagate(start_frame=6)
    results += session.propagate(start_frame=8, reverse=True)
    mask = np.zeros((height, width), bool)
    mask[height // 4 : height // 2, width // 3 : width // 2 + 7] = True
    results.append(session.add_mask(5, 3, mask))
    results += session.propagate(start_frame=5, max_frames=3)
    session.remove_object(2)
    results.append(session.clear_frame_prompts(6, 1))
    results += session.propagate(start_frame=3, reverse="both", max_frames=3)
    return results


@torch.no_grad()
def test_video_session_matches_torch_session(exported, clip):
    """Every result of the script: same frames and objects, logits within 1e-3, binary masks identical wherever the
    PyTorch logit is more than 1e-3 away from the threshold.

    The memory encoder binarises the masks of clicked frames (`logits > 0`), so a pixel whose logit lies within the
    runtimes' float difference (~1e-6) of 0 enters the two memories differently and shifts every later frame by
    ~1e-3 (as CPU and GPU runs of one model would): the box is one whose mask has no pixel within 1e-4 of 0."""
    video, _, folder = exported
    expected = _tracking_script(Sam2VideoSession(video, clip, progress=False))
    actual = _tracking_script(Sam2OnnxVideoSession(folder, clip, memory_arena=False, progress=False))  # default: True
    assert len(actual) == len(expected) == 35
    for mine, reference in zip(actual, expected):
        assert (mine.frame_idx, mine.object_ids) == (reference.frame_idx, reference.object_ids)
        logits = reference.mask_logits.numpy()
        np.testing.assert_allclose(mine.mask_logits, logits, atol=1e-3, rtol=0)
        np.testing.assert_allclose(mine.object_score_logits, reference.object_score_logits.numpy(), atol=1e-3)
        clear = np.abs(logits) > 1e-3
        assert np.array_equal(mine.masks[clear], logits[clear] > 0)
    coverage = np.mean([result.masks.float().mean().item() for result in expected])
    assert 0.05 < coverage < 0.95  # masks neither empty nor full


@torch.no_grad()
@pytest.mark.parametrize("strategy", ["samurai", "dam4sam"])
def test_video_session_strategies_match_torch_session(exported, clip, strategy):
    """The same script with a tracking strategy (SAMURAI: its stable phase after 2 frames, so the Kalman-weighted
    choice runs within the clip; DAM4SAM: its gates opened wide so that frames become anchors): the same results on
    both runtimes, as above."""
    video, _, folder = exported
    overrides = {
        "samurai": {"stable_frames_threshold": 2},
        "dam4sam": {
            "drm_iou_threshold": 0.0,
            "min_area_ratio": 0.0,
            "max_area_ratio": 10.0,
            "alternative_iou_threshold": 1.0,
        },
    }
    settings = strategy_settings(strategy, overrides[strategy])
    torch_session = Sam2VideoSession(video, clip, progress=False, strategy=settings)
    expected = _tracking_script(torch_session)
    onnx_session = Sam2OnnxVideoSession(folder, clip, progress=False, strategy=settings)
    actual = _tracking_script(onnx_session)
    assert len(actual) == len(expected) == 35
    for mine, reference in zip(actual, expected):
        assert (mine.frame_idx, mine.object_ids) == (reference.frame_idx, reference.object_ids)
        logits = reference.mask_logits.numpy()
        np.testing.assert_allclose(mine.mask_logits, logits, atol=1e-3, rtol=0)
        clear = np.abs(logits) > 1e-3
        assert np.array_equal(mine.masks[clear], logits[clear] > 0)
    if strategy == "samurai":  # the same Kalman states and memory gates, and the stable phase was reached
        for obj_id, state in torch_session.strategy.kalman.items():
            other = onnx_session.strategy.kalman[obj_id]
            assert other.stable_frames == state.stable_frames
            np.testing.assert_allclose(other.mean, state.mean, rtol=1e-6)
        assert onnx_session.strategy.memory_gate == torch_session.strategy.memory_gate
        assert max(state.stable_frames for state in torch_session.strategy.kalman.values()) >= 2
    if strategy == "dam4sam":  # the same anchors, and some frames became anchors
        anchors = {obj_id: state.anchors for obj_id, state in torch_session.strategy.states.items()}
        assert {obj_id: state.anchors for obj_id, state in onnx_session.strategy.states.items()} == anchors
        assert any(anchors.values())


def test_bfloat16_rounding_matches_torch():
    values = torch.randn(10_000) * 10.0 ** torch.randint(-3, 4, (10_000,))
    ties = torch.tensor([1.0 + 2**-8, 1.0 + 3 * 2**-8, -(1.0 + 2**-8), 3.0e38])  # halfway cases round to even
    values = torch.cat([values, ties])
    expected = values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(to_bfloat16_bits(values.numpy()), expected)


def test_hole_filling_without_opencv_matches_clean_mask_logits():
    """The sessions' hole filling (`frame_arithmetic.fill_holes`) on numpy arrays, as the ONNX session runs it,
    edits exactly what OpenCV's connected components give `clean_mask_logits`."""
    generator = np.random.default_rng(0)
    for trial in range(30):
        logits = generator.normal(size=(2, 1, 48, 40)).astype(np.float32) + (trial % 5 - 2) * 0.5
        area = (1, 3, 8, 25, 200)[trial % 5]
        expected = clean_mask_logits(torch.from_numpy(logits), max_hole_area=area, hole_logit=0.1).numpy()
        filled = fill_holes(logits, area)
        assert filled.dtype == np.float32 and np.array_equal(filled, expected), (trial, area)


def test_video_session_refuses_bad_input(exported, clip, tmp_path):
    folder = exported[2]
    session = Sam2OnnxVideoSession(folder, progress=False)
    session.push_frame(clip[0])
    with pytest.raises(ValueError, match="Stream frames must all be"):
        session.push_frame(clip[0][:100])
    with pytest.raises(ValueError, match="one size"):
        Sam2OnnxVideoSession(folder, [clip[0], clip[1][:, :100]])
    session = Sam2OnnxVideoSession(folder, clip[:3], progress=False)
    with pytest.raises(ValueError, match="out of range"):
        session.add_points(3, 1, [[10, 10]], [1])
    with pytest.raises(ValueError, match="Unknown object id"):
        session.remove_object(7)
    with pytest.raises(ValueError, match="Add prompts"):
        session.propagate()
    image_only = shutil.copytree(folder, tmp_path / "image_only")
    (image_only / "memory_attention.onnx").unlink()
    with pytest.raises(ValueError, match="no memory_attention.onnx"):
        Sam2OnnxVideoSession(image_only, clip)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize("calibrated", [True, False])
def test_int8_image_encoder_stays_close_to_fp32(exported, tmp_path, calibrated):
    """The int8 encoders (static calibrated by the export, dynamic by `quantize_graph`) on a real photo: embeddings
    within 20% (relative norm; random weights, so only a sanity bound), and the predictor runs on them."""
    from hiera_hf.onnx.quantize import quantize_graph

    folder = exported[2]
    if not calibrated:
        folder = shutil.copytree(folder, tmp_path / "copy")
        quantize_graph(folder / "image_encoder.onnx", folder / "image_encoder_quantized.onnx")
    image = Image.open(media("dog.jpg"))
    fp32, _ = Sam2OnnxImagePredictor(folder).encode(image)
    int8_predictor = Sam2OnnxImagePredictor(folder, quantized=True)
    int8, _ = int8_predictor.encode(image)
    for name in ("image_embeddings", "high_res_features_0", "high_res_features_1"):
        assert relative_error(int8[name], fp32[name]) < 0.2, name
    int8_predictor.set_image(image)
    masks, scores, _ = int8_predictor.predict(point_coords=[[300, 200]], point_labels=[1])
    assert masks.shape == (3, image.height, image.width) and np.isfinite(scores).all()


# ---------------------------------------------------------------------------------------------------------------
# numpy processing against torch
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1024, 1024), (37, 300), (600, 90)])
def test_numpy_resize_matches_torch(size):
    torch.manual_seed(0)
    image = torch.rand(3, 480, 270)
    expected = F.interpolate(image[None], size, mode="bilinear", align_corners=False, antialias=True)[0]
    close(resize(image.numpy(), size, antialias=True), expected, atol=1e-5)
    logits = 10 * torch.randn(2, 64, 48)
    expected = F.interpolate(logits[None], size, mode="bilinear", align_corners=False)[0]
    close(resize(logits.numpy(), size), expected, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Hiera
# ---------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_hiera_classifier_probabilities(tmp_path, capfd, caplog):
    torch.manual_seed(0)
    config = HieraConfig.from_preset(
        "hiera_tiny_224", depths=(1, 1, 2, 1), embed_dim=32, num_heads=(1, 2, 4, 8), num_labels=10
    )
    model = HieraForImageClassification(config).eval()
    model.save_pretrained(tmp_path / "model")
    assert main(["export-onnx", "--model", str(tmp_path / "model"), "--output", str(tmp_path / "onnx"), "--quiet"]) == 0
    folder = tmp_path / "onnx"
    pixels = torch.randn(3, 3, 224, 224)
    probabilities = OnnxHieraClassifier(folder).predict(pixels.numpy())
    close(probabilities, model(pixels).logits.softmax(-1))
    assert {"config.json", "model.onnx", "README.md"} <= {p.name for p in folder.iterdir()}
    capfd.readouterr()
    onnx_export.export_onnx(tmp_path / "model", tmp_path / "quiet", int8=True, progress=False)
    output = "".join(capfd.readouterr())
    assert "Loading weights" not in output  # progress=False: transformers' bar is off too
    assert "pre-processing" not in output + caplog.text  # ONNX Runtime's quantization advice (see quantize.py)
    assert (tmp_path / "quiet" / "model_quantized.onnx").is_file()


# ---------------------------------------------------------------------------------------------------------------
# Without torch, bad input
# ---------------------------------------------------------------------------------------------------------------


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_runtime_runs_where_torch_cannot_be_imported(exported):
    folder = exported[2]
    code = f"""
import sys
sys.modules["torch"] = None  # `import torch` raises ImportError
from PIL import Image
from hiera_hf.onnx.runtime import Sam2OnnxImagePredictor
predictor = Sam2OnnxImagePredictor({str(folder)!r})
predictor.set_image(Image.open({media("dog.jpg")!r}))
masks, scores, _ = predictor.predict(point_coords=[[300, 200]], point_labels=[1])
assert masks.shape[0] == 3
from hiera_hf.onnx.video_session import Sam2OnnxVideoSession
with Sam2OnnxVideoSession({str(folder)!r}, {media("goat.mp4")!r}, progress=False) as session:
    session.add_points(1, 1, [[100, 120]], [1])
    results = list(session.propagate(max_frames=3))
assert [r.frame_idx for r in results] == [1, 2, 3] and results[0].masks.shape == (1, 256, 256)
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""
    result = _python(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_missing_onnxruntime_gives_install_hint(exported):
    code = f"""
import sys
sys.modules["onnxruntime"] = sys.modules["torch"] = None
from hiera_hf.onnx.runtime import Sam2OnnxImagePredictor
try:
    Sam2OnnxImagePredictor({str(exported[2])!r})
except ImportError as error:
    print(error)
"""
    result = _python(code)
    assert "pip install 'hiera-hf[onnx]'" in result.stdout, result.stderr


def test_corrupt_or_truncated_graph_is_refused(exported, tmp_path):
    folder = shutil.copytree(exported[2], tmp_path / "copy")
    encoder = folder / "image_encoder.onnx"
    encoder.write_bytes(encoder.read_bytes()[: encoder.stat().st_size // 3])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        Sam2OnnxImagePredictor(folder)
    encoder.write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        Sam2OnnxImagePredictor(folder)


def test_bad_exports_are_refused_and_leave_nothing(tmp_path):
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not a hiera-hf Hiera or SAM 2 folder"):
        onnx_export.export_onnx(other, tmp_path / "out")
    with pytest.raises(ValueError, match="not a Hiera or SAM 2 folder"):
        onnx_export.export_onnx(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="opset must be an int in 18..20"):
        onnx_export.export_onnx(other, tmp_path / "out", opset=13)
    with pytest.raises(ValueError, match="--int8"):
        onnx_export.export_onnx(other, tmp_path / "out", calibration=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert"]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="already exists"):
        onnx_export.export_onnx(other, tmp_path / "full")


def test_failed_export_leaves_no_folder(monkeypatch, tmp_path):
    """A failure after the graph was written (here: in the model card) leaves neither the target nor a temporary
    folder."""

    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    torch.manual_seed(0)
    config = HieraConfig.from_preset("hiera_tiny_224", depths=(1, 1, 2, 1), embed_dim=32, num_heads=(1, 2, 4, 8))
    HieraForImageClassification(config).save_pretrained(tmp_path / "src")
    monkeypatch.setattr(onnx_export, "_model_card", failing)
    with pytest.raises(RuntimeError, match="boom"):
        onnx_export.export_onnx(tmp_path / "src", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
