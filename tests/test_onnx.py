"""ONNX export and the torch-free ONNX Runtime backend: every graph against our PyTorch modules (fp32, 1e-4), the
numpy pre/post-processing against the torch processor, Hiera probabilities, runs without torch, and bad input.

SAM 2 models are built with random weights at a reduced `image_size` (the graphs do not depend on it) to keep the
export cheap; every 1-D weight gets random values so that no path is trivially zero."""

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
from hiera_hf.onnx.processing import resize
from hiera_hf.onnx.runtime import OnnxHieraClassifier, Sam2OnnxImagePredictor, load_session, run_session
from hiera_hf.sam2.memory_bank import MemorySelection
from hiera_hf.sam2.memory_tokens import assemble_memory

SIZE = 128  # model input size of the test models
ATOL = 1e-4
# The fully exported variant; two more get the graphs their architecture changes: SAM 2.0's memory settings
# (pointer encodings, no spatial "no object" embedding) and a larger trunk.
MAIN = "sam2.1_hiera_tiny"
EXTRA_GRAPHS = {
    "sam2_hiera_tiny": ("mask_decoder_multimask", "memory_attention", "memory_encoder"),
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
    for parameter in model.parameters():
        if parameter.ndim <= 1:
            parameter.add_(0.1 * torch.randn_like(parameter))
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
        outputs = run(
            folder, graph, image_embeddings=embeddings.numpy(), high_res_features_0=high_res[0].numpy(),
            high_res_features_1=high_res[1].numpy(), point_coords=points.numpy(), point_labels=labels.numpy(),
            mask_input=np.zeros((2, 1, 4 * grid, 4 * grid), np.float32), has_mask_input=np.zeros(2, np.float32),
        )
        close(outputs["masks"], expected.pred_masks[:, 0])
        close(outputs["iou_scores"], expected.iou_scores[:, 0])
        scores = expected.object_score_logits[:, 0]
        close(outputs["object_score_logits"], scores)
        tokens = expected.sam_output_tokens[:, 0]
        pointers = torch.stack([video.object_pointer(tokens[:, i], scores) for i in range(tokens.shape[1])], dim=1)
        close(outputs["object_pointers"], pointers)


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
        quantize_graph(folder / "image_encoder.onnx", folder / "image_encoder_quantized.onnx", exported[0].config)
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
def test_hiera_classifier_probabilities(tmp_path):
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
assert masks.shape[0] == 3 and "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
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
    with pytest.raises(ValueError, match="opset must be an int >= 18"):
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
