"""Semantic segmentation: the class-wise mean IoU metric (`hiera_hf.metrics.load_semantic_mean_iou`) against
`evaluate`'s documented `mean_iou` results, a confusion matrix from scikit-image and hand-computed cases; and
`examples/finetune_semantic_segmentation.py` (UperNet on a converted Hiera) run directly and under `accelerate
launch`."""

import json

import numpy as np
import pytest
import torch
from example_helpers import ROOT, accelerate_two_cpu_processes, run_example
from PIL import Image
from skimage.metrics import contingency_table
from torch.utils.data import default_collate
from transformers import SegformerImageProcessor, UperNetForSemanticSegmentation

from hiera_hf import HieraConfig, HieraForImageClassification
from hiera_hf.metrics import load_semantic_mean_iou
from hiera_hf.metrics.semantic_mean_iou import semantic_mean_iou

# -- the metric ----------------------------------------------------------------------------------------------------


def test_matches_the_example_documented_by_evaluates_mean_iou():
    """The inputs and results of the docstring of `evaluate`'s Hub metric `mean_iou` (ignored pixels predicted 255)."""
    predictions = [
        np.array([[1, 2], [3, 4], [5, 255]]),
        np.array([[2, 7], [9, 2], [3, 6]]),
        np.array([[2, 2, 3], [8, 2, 4], [3, 255, 2]]),
    ]
    references = [
        np.array([[0, 3], [5, 4], [6, 255]]),
        np.array([[1, 7], [9, 2], [3, 6]]),
        np.array([[1, 2, 2], [8, 2, 1], [3, 255, 1]]),
    ]
    result = load_semantic_mean_iou().compute(predictions=predictions, references=references, num_labels=10)
    assert result["mean_iou"] == pytest.approx(0.4775, abs=1e-15)
    assert result["mean_accuracy"] == pytest.approx(0.5916666666666666, abs=1e-15)
    assert result["overall_accuracy"] == pytest.approx(10 / 19, abs=1e-15)
    np.testing.assert_array_equal(result["per_category_iou"], [0, 0, 3 / 8, 2 / 5, 1 / 2, 0, 1 / 2, 1, 1, 1])
    np.testing.assert_array_equal(result["per_category_accuracy"], [0, 0, 3 / 4, 2 / 3, 1, 0, 1 / 2, 1, 1, 1])


def _confusion_matrix_scores(predictions, references, num_labels: int) -> dict:
    """The metric from a confusion matrix summed over the images (`skimage.metrics.contingency_table`, reference
    pixels of 255 left out): IoU = diagonal / (row + column - diagonal), accuracy = diagonal / row."""
    table = np.zeros((256, 256))
    for prediction, reference in zip(predictions, references):
        counts = contingency_table(reference, prediction, ignore_labels=[255]).toarray()
        table[: counts.shape[0], : counts.shape[1]] += counts
    correct, labelled = np.diag(table)[:num_labels], table[:num_labels].sum(axis=1)
    union = labelled + table[:, :num_labels].sum(axis=0) - correct
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, accuracy = correct / union, correct / labelled
    return {
        "mean_iou": np.nanmean(iou),
        "mean_accuracy": np.nanmean(accuracy),
        "overall_accuracy": correct.sum() / labelled.sum(),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }


def test_matches_a_confusion_matrix_over_the_dataset():
    """Images of different sizes; ignored pixels; predictions of 255 (a miss); class 4 predicted but in no
    reference (IoU 0, accuracy NaN), class 5 in neither (NaN, NaN)."""
    generator = np.random.default_rng(0)
    predictions, references = [], []
    for shape in [(7, 9), (12, 5), (6, 6)]:
        reference = generator.integers(0, 4, shape)
        prediction = np.where(generator.random(shape) < 0.6, reference, generator.integers(0, 5, shape))
        reference[generator.random(shape) < 0.15] = 255
        prediction[generator.random(shape) < 0.05] = 255
        predictions.append(prediction)
        references.append(reference)
    result = load_semantic_mean_iou().compute(predictions=predictions, references=references, num_labels=6)
    expected = _confusion_matrix_scores(predictions, references, 6)
    assert np.isnan(result["per_category_iou"][5]) and result["per_category_iou"][4] == 0
    assert np.isnan(result["per_category_accuracy"][4:]).all()
    for key in ("per_category_iou", "per_category_accuracy"):
        np.testing.assert_array_equal(result[key], expected[key])
    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12, abs=0)
    # Summed over the dataset, not averaged over images:
    per_image = [semantic_mean_iou([p], [r], 6)["mean_iou"] for p, r in zip(predictions, references)]
    assert result["mean_iou"] != pytest.approx(np.mean(per_image), rel=1e-3)


REFERENCE = np.array([[0, 1, 2], [3, 255, 1]])


def test_reduce_labels_by_hand():
    """0 -> 255 (ignored with 255), 1, 2, 3 -> classes 0, 1, 2. Kept pixels (reference, prediction): (0, 0), (1, 2),
    (2, 2), (0, 0): I = [2, 0, 1], P = [2, 0, 2], L = [2, 1, 1]."""
    prediction = np.array([[2, 0, 2], [2, 1, 0]])
    result = semantic_mean_iou([prediction], [REFERENCE], num_labels=3, reduce_labels=True)
    np.testing.assert_array_equal(result["per_category_iou"], [1, 0, 1 / 2])
    np.testing.assert_array_equal(result["per_category_accuracy"], [1, 0, 1])
    assert (result["mean_iou"], result["overall_accuracy"]) == (1 / 2, 3 / 4)
    assert result["mean_accuracy"] == pytest.approx(2 / 3, abs=1e-15)
    unreduced = semantic_mean_iou([prediction], [REFERENCE], num_labels=3)
    assert unreduced["per_category_iou"][0] == 0  # without reduction, 0 is a class


def test_ignore_index_and_references_outside_the_classes_by_hand():
    """ignore_index 0; the reference 255 is then no class of 4: it counts its prediction (1) in P only. Kept pixels
    (reference, prediction): (1, 0), (2, 2), (3, 2), (255, 1), (1, 0): I = [0, 0, 1, 0], P = [2, 1, 2, 0],
    L = [0, 2, 1, 1]."""
    prediction = np.array([[3, 0, 2], [2, 1, 0]])
    result = semantic_mean_iou([prediction], [REFERENCE], num_labels=4, ignore_index=0)
    np.testing.assert_array_equal(result["per_category_iou"], [0, 0, 1 / 2, 0])
    np.testing.assert_array_equal(result["per_category_accuracy"], [np.nan, 0, 1, 0])
    assert (result["mean_iou"], result["overall_accuracy"]) == (1 / 8, 1 / 4)
    assert result["mean_accuracy"] == pytest.approx(1 / 3, abs=1e-15)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        semantic_mean_iou([np.zeros((2, 3))], [np.zeros((3, 2))], num_labels=2)
    with pytest.raises(ValueError, match="as many predictions"):
        semantic_mean_iou([], [], num_labels=2)
    with pytest.raises(ValueError, match="num_labels"):
        semantic_mean_iou([np.zeros((2, 2))], [np.zeros((2, 2))], num_labels=0)


# -- the fine-tuning example ---------------------------------------------------------------------------------------

COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])
SIZE = 32  # the example's --image_size


def _segmentation_folder(path, count: int, seed: int):
    """`path/images/<i>.png` (40+ x 52 px) with `path/masks/<i>.png`: 8x8 blocks of classes 0..2 (the image's colour
    there, plus noise), 5% of the pixels 255 (ignored)."""
    generator = np.random.default_rng(seed)
    (path / "images").mkdir(parents=True)
    (path / "masks").mkdir()
    for i in range(count):
        height, width = 40 + 4 * i, 52
        classes = generator.integers(0, 3, (height // 8 + 1, width // 8 + 1)).repeat(8, 0).repeat(8, 1)
        classes = classes[:height, :width]
        image = COLOURS[classes] + generator.integers(-30, 30, (height, width, 3))
        classes[generator.random((height, width)) < 0.05] = 255
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(path / "images" / f"{i}.png")
        Image.fromarray(classes.astype(np.uint8), mode="L").save(path / "masks" / f"{i}.png")
    return path


@pytest.fixture(scope="module")
def hiera_folder(tmp_path_factory):
    """A random tiny converted Hiera classifier at 64 px (its head is dropped by the example)."""
    torch.manual_seed(0)
    config = HieraConfig.from_preset(
        "hiera_tiny_224", embed_dim=16, num_heads=(1, 1, 2, 2), depths=(1, 1, 1, 1), image_size=(64, 64), num_labels=5
    )
    folder = tmp_path_factory.mktemp("hiera") / "model"
    HieraForImageClassification(config).save_pretrained(folder)
    return folder


def _example_args(hiera_folder, tmp_path, **extra) -> dict:
    return {
        "model": hiera_folder,
        "image_folder": _segmentation_folder(tmp_path / "train", 5, seed=0),  # 5: a last batch of one is dropped
        "eval_folder": _segmentation_folder(tmp_path / "val", 3, seed=1),
        "num_labels": 3,
        "image_size": SIZE,
        "head_hidden_size": 32,
        "output_dir": tmp_path / "run",
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "seed": 0,
        "dataloader_num_workers": 0,
        **extra,
    }


@pytest.fixture
def example(monkeypatch):
    """The example script as a module."""
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import finetune_semantic_segmentation

    return finetune_semantic_segmentation


def _evaluation_set(example, data_args, reduce_labels: bool = False):
    args = example.SegmentationArguments(
        model_name_or_path="", num_labels=3, image_size=SIZE, reduce_labels=reduce_labels
    )
    return example.build_dataset(data_args, args, seed=0, train=False)


def _check_saved_run(run, val, example) -> dict:
    """The run's evaluation against the packaged metric on the saved model's predictions (it reloads); returns its
    eval metrics."""
    metrics = json.loads((run / "eval_results.json").read_text())
    model = UperNetForSemanticSegmentation.from_pretrained(run).eval()
    assert SegformerImageProcessor.from_pretrained(run).size == {"height": SIZE, "width": SIZE}
    data = _evaluation_set(example, example.SegmentationDataArguments(image_folder=str(val), eval_folder=str(val)))
    batch = default_collate([data[i] for i in range(len(data))])
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"]).logits  # (3, 3, SIZE, SIZE): the labels' size
    # The run batched the images otherwise, maybe with other threads: the logits differ by ~5e-9 (measured), which
    # flips the argmax of near ties only. At 32 px (64 px has some) no pixel's two best classes are that close:
    best = logits.topk(2, dim=1).values
    assert (best[:, 0] - best[:, 1]).min() > 1e-6
    expected = load_semantic_mean_iou().compute(
        predictions=list(logits.argmax(dim=1).numpy()), references=list(batch["labels"].numpy()), num_labels=3
    )
    assert metrics["eval_mean_iou"] == pytest.approx(expected["mean_iou"], rel=1e-12, abs=0)
    assert metrics["eval_overall_accuracy"] == pytest.approx(expected["overall_accuracy"], rel=1e-12, abs=0)
    ious = [metrics[f"eval_iou_LABEL_{i}"] for i in range(3)]
    np.testing.assert_allclose(ious, expected["per_category_iou"], rtol=1e-12, atol=0)
    return metrics


def test_finetune_example_trains_evaluates_and_saves(hiera_folder, tmp_path, example):
    run_example("finetune_semantic_segmentation.py", _example_args(hiera_folder, tmp_path, max_steps=3))
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert state["log_history"][0]["epoch"] == 0.5  # 4 of the 5 images, 2 per step
    metrics = _check_saved_run(tmp_path / "run", tmp_path / "val", example)
    assert 0.0 < metrics["eval_mean_iou"] <= 1.0


def test_finetune_example_under_accelerate_with_lora(hiera_folder, tmp_path, example):
    args = _example_args(hiera_folder, tmp_path, max_steps=2, lora_r=4, use_cpu=True)
    run_example("finetune_semantic_segmentation.py", args, accelerate_two_cpu_processes())
    state = json.loads((tmp_path / "run" / "trainer_state.json").read_text())
    assert state["log_history"][0]["epoch"] == 1.0  # 4 images, 2 per rank and step: two ranks took part
    adapter = json.loads((tmp_path / "run" / "lora_adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["qkv"]  # hiera_hf.lora's default for UperNet, its heads trained in full
    assert sorted(adapter["modules_to_save"]) == ["auxiliary_head", "decode_head"]
    _check_saved_run(tmp_path / "run", tmp_path / "val", example)  # the merged model, evaluated on two ranks


def test_example_reads_a_datasets_dataset_as_the_folder(tmp_path, example):
    """Parquet files of image and annotation columns (`load_dataset` of a local folder) give the folder's examples;
    `--reduce_labels` maps the classes 0, 1, 2 to 255, 0, 1."""
    import datasets

    folder = _segmentation_folder(tmp_path / "val", 2, seed=1)
    rows = {
        "image": [str(p) for p in sorted((folder / "images").glob("*.png"))],
        "annotation": [str(p) for p in sorted((folder / "masks").glob("*.png"))],
    }
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    (tmp_path / "parquet").mkdir()
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "parquet" / "validation.parquet")
    folder_args = example.SegmentationDataArguments(image_folder=str(folder), eval_folder=str(folder))
    from_folder = _evaluation_set(example, folder_args)
    from_dataset = _evaluation_set(
        example, example.SegmentationDataArguments(dataset_name=str(tmp_path / "parquet"), eval_split="validation")
    )
    assert len(from_folder) == len(from_dataset) == 2
    for i in range(2):
        assert torch.equal(from_folder[i]["pixel_values"], from_dataset[i]["pixel_values"])
        assert torch.equal(from_folder[i]["labels"], from_dataset[i]["labels"])
    with pytest.raises(ValueError, match="--eval_split with --dataset_name"):
        example.SegmentationDataArguments(image_folder=str(folder), eval_split="validation")
    reduced = _evaluation_set(example, folder_args, reduce_labels=True)[0]["labels"]
    labels = from_folder[0]["labels"]
    assert set(labels.unique().tolist()) == {0, 1, 2, 255}
    assert torch.equal(reduced, torch.where(labels == 0, 255, torch.where(labels == 255, 255, labels - 1)))


def test_predicted_classes_upsample_the_logits_to_the_labels(example):
    """Logits of a 2x2 map, class k leading in quadrant k, upsampled to 8x8 labels: each quadrant keeps its class."""
    logits = torch.zeros(1, 4, 2, 2)
    for k, (row, column) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        logits[0, k, row, column] = 1.0
    classes = example.predicted_classes((logits,), torch.zeros(1, 8, 8, dtype=torch.long))
    expected = torch.tensor([[0, 1], [2, 3]]).repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert torch.equal(classes, expected[None])
