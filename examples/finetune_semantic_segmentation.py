"""Fine-tune UperNet on a converted Hiera (`HieraBackbone`) for semantic segmentation with the `Trainer`, scored by
the class-wise mean IoU of `hiera_hf.metrics.load_semantic_mean_iou`.

    python examples/finetune_semantic_segmentation.py --model_name_or_path hiera_base_224 --image_folder data/train \
        --eval_folder data/val --num_labels 21 --output_dir seg-out --eval_strategy epoch --num_train_epochs 20
    accelerate launch --num_processes 4 examples/finetune_semantic_segmentation.py ...   # the same on several GPUs
    python examples/finetune_semantic_segmentation.py --model_name_or_path hiera_base_224 \
        --dataset_name scene_parse_150 --annotation_column annotation --eval_split validation --num_labels 150 \
        --reduce_labels --output_dir seg-out

`--model_name_or_path` (or `--model`) is a converted Hiera folder (a classifier, an MAE model, ...) or an official
variant name (downloaded and converted into the cache on first use): its trunk becomes the backbone, its heads are
dropped; UperNet's heads start from scratch. A folder holds `images/<name>.<ext>` and `masks/<name>.png`,
single-channel PNGs (grey or palette) whose values are class indices `0..num_labels - 1`, 255 for pixels to ignore;
a `datasets` dataset has an image column and an annotation column of such maps. `--reduce_labels` maps 0 to 255 and
every other class `c` to `c - 1` (ADE20k's 0 is "other", no class).

Training crops a random part (half to all of the area, aspect ratio 3:4 to 4:3) of each image and its mask, resized to
`--image_size` squared, and flips it; evaluation resizes both to `--image_size` squared (masks nearest-neighbour). The
mean IoU is accumulated batch by batch over the evaluation set (the Trainer's `batch_eval_metrics`: predictions are
never all held in memory); the logits are upsampled to the labels' size and the class is their argmax. UperNet's
pyramid pooling normalises 1x1 maps with batch norm: training batches hold at least 2 images (one training image
is left out when it would be alone in the last batch). `--lora_r 8` trains LoRA adapters on the backbone's `qkv`
(`--lora_target_modules`) and the heads in full: the adapters are saved to `OUTPUT_DIR/lora_adapter`, the merged
model to `OUTPUT_DIR`, which loads with `UperNetForSemanticSegmentation.from_pretrained` after `import hiera_hf`
(with its image processor). Any other `TrainingArguments` apply (`--bf16`, `--per_device_train_batch_size`,
`--save_steps`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from PIL import Image
from pretrain_mae import Augmented, EpochCallback
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2
from transformers import (
    EvalPrediction,
    HfArgumentParser,
    SegformerImageProcessor,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    UperNetConfig,
    UperNetForSemanticSegmentation,
    set_seed,
)
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from hiera_hf import HieraBackbone, HieraConfig
from hiera_hf.hub import resolve_model
from hiera_hf.image_utils import open_image
from hiera_hf.lora import LoraArguments, merge_for_saving
from hiera_hf.metrics.semantic_mean_iou import class_areas, reduce_reference_labels, scores
from hiera_hf.sam2.data import image_mask_pairs

FOLDER_HELP = (
    "Training folder: images/<name>.<ext> with masks/<name>.png, single-channel PNGs whose values are class "
    "indices 0..num_labels-1 (255: ignored pixels)."
)


@dataclass
class SegmentationArguments:
    model_name_or_path: str = field(
        metadata={"aliases": ["--model"], "help": "A converted Hiera folder or an official variant name."}
    )
    num_labels: int = field(metadata={"help": "Number of classes (mask values 0..num_labels-1)."})
    image_size: int = field(default=512, metadata={"help": "Side of the square training and evaluation inputs."})
    reduce_labels: bool = field(
        default=False, metadata={"help": "Masks' 0 is no class: 0 -> 255 (ignored), every other c -> c - 1."}
    )
    head_hidden_size: int = field(default=512, metadata={"help": "Channels of UperNet's decode head."})


@dataclass
class SegmentationDataArguments:
    image_folder: str | None = field(default=None, metadata={"help": FOLDER_HELP})
    eval_folder: str | None = field(default=None, metadata={"help": "Evaluation folder (same layout)."})
    dataset_name: str | None = field(default=None, metadata={"help": "A `datasets` dataset (Hub name or path)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The dataset's configuration."})
    dataset_split: str = field(default="train", metadata={"help": "Training split of --dataset_name."})
    eval_split: str | None = field(default=None, metadata={"help": "Evaluation split of --dataset_name."})
    image_column: str = field(default="image", metadata={"help": "Dataset column of the images."})
    annotation_column: str = field(
        default="annotation", metadata={"help": "Dataset column of the class-index maps (images)."}
    )

    def __post_init__(self):
        if bool(self.image_folder) == bool(self.dataset_name):
            raise ValueError("Give exactly one of --image_folder and --dataset_name")
        if (self.eval_folder and not self.image_folder) or (self.eval_split and not self.dataset_name):
            raise ValueError("--eval_folder goes with --image_folder, --eval_split with --dataset_name")


# -- data ----------------------------------------------------------------------------------------------------------


def class_map(mask: Image.Image) -> np.ndarray:
    """Class indices `(H, W)` int64 of a single-channel (grey or palette) mask image."""
    if mask.mode not in ("L", "P", "I", "I;16"):
        raise ValueError(f"Masks must be single-channel images of class indices, got mode {mask.mode}")
    return np.asarray(mask).astype(np.int64)


class PairTransform:
    """`(image, mask)` -> `{"pixel_values": (3, S, S) float32 normalised, "labels": (S, S) int64}`: a random
    resized crop and flip in training, a resize otherwise; masks nearest-neighbour."""

    def __init__(self, size: int, train: bool, reduce_labels: bool):
        if train:
            spatial = [v2.RandomResizedCrop((size, size), scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()]
        else:
            spatial = [v2.Resize((size, size), antialias=True)]
        normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
        self.transform, self.reduce_labels = v2.Compose([*spatial, *normalise]), reduce_labels

    def __call__(self, pair: tuple[Image.Image, Image.Image]) -> dict[str, torch.Tensor]:
        image, mask = pair
        classes = class_map(mask)
        if classes.shape != (image.height, image.width):
            raise ValueError(f"A mask of shape {classes.shape} goes with an image of {image.width}x{image.height}")
        if self.reduce_labels:
            classes = reduce_reference_labels(classes)
        pixels, labels = self.transform(v2.functional.to_image(image), tv_tensors.Mask(torch.from_numpy(classes)))
        return {"pixel_values": pixels.as_subclass(torch.Tensor), "labels": labels.as_subclass(torch.Tensor)}


def open_pair(pair: tuple[Path, Path]) -> tuple[Image.Image, Image.Image]:
    """An image (RGB) and its mask, read from their files (upright, as `hiera_hf.image_utils.open_image`)."""
    return open_image(pair[0]).convert("RGB"), open_image(pair[1])


def build_dataset(
    data: SegmentationDataArguments, args: SegmentationArguments, seed: int, train: bool = True
) -> Augmented:
    """The training (or, `train=False`, evaluation) folder or split as `{"pixel_values", "labels"}` examples."""
    transform = PairTransform(args.image_size, train, args.reduce_labels)
    if data.image_folder:
        pairs = image_mask_pairs(data.image_folder if train else data.eval_folder)
        return Augmented(pairs, open_pair, transform, seed)
    import datasets

    rows = datasets.load_dataset(
        data.dataset_name, data.dataset_config_name, split=data.dataset_split if train else data.eval_split
    )
    for column in (data.image_column, data.annotation_column):
        if column not in rows.column_names:
            raise ValueError(f"Column {column!r} is not in the dataset's columns {rows.column_names}")

    def load(index: int) -> tuple[Image.Image, Image.Image]:
        row = rows[index]
        return row[data.image_column].convert("RGB"), row[data.annotation_column]

    return Augmented(range(len(rows)), load, transform, seed)


# -- model and metric ----------------------------------------------------------------------------------------------


def build_model(folder: Path, num_labels: int, head_hidden_size: int) -> UperNetForSemanticSegmentation:
    """UperNet with the converted Hiera of `folder` as its backbone (every stage), new heads for `num_labels`.
    (transformers 5.25 takes only Hub ids as `UperNetConfig(backbone=...)`: the backbone is loaded here.)"""
    stages = HieraConfig.from_pretrained(folder).stage_names[1:]
    backbone = HieraBackbone.from_pretrained(folder, out_features=stages)
    config = UperNetConfig(backbone_config=backbone.config, num_labels=num_labels, hidden_size=head_hidden_size)
    model = UperNetForSemanticSegmentation(config)
    model.backbone = backbone
    return model


def predicted_classes(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """`preprocess_logits_for_metrics`: logits `(B, C, h, w)` upsampled (bilinear) to the labels' `(B, H, W)`,
    argmax over the classes -> `(B, H, W)`."""
    logits = logits[0] if isinstance(logits, tuple) else logits
    return F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False).argmax(dim=1)


class MeanIoU:
    """`compute_metrics` with `batch_eval_metrics`: sums the class areas of each batch of predicted classes and
    labels `(B, H, W)` and, on the last batch, returns mean_iou, mean_accuracy, overall_accuracy and each class's
    IoU (`iou_<name>`), then starts over."""

    def __init__(self, id2label: dict[int, str], ignore_index: int = 255):
        self.names, self.ignore_index = [id2label[i] for i in range(len(id2label))], ignore_index
        self.areas = np.zeros((3, len(self.names)))

    def __call__(self, prediction: EvalPrediction, compute_result: bool) -> dict[str, float]:
        classes, labels = prediction.predictions, prediction.label_ids  # (B, H, W) tensors, on the device
        for predicted, label in zip(classes.cpu().numpy(), labels.cpu().numpy()):
            self.areas += class_areas(predicted, label, len(self.names), self.ignore_index)
        if not compute_result:
            return {}
        result, self.areas = scores(self.areas), np.zeros_like(self.areas)
        per_class = {f"iou_{name}": float(iou) for name, iou in zip(self.names, result["per_category_iou"])}
        return {key: result[key] for key in ("mean_iou", "mean_accuracy", "overall_accuracy")} | per_class


class SameBuffersOnEveryRank(TrainerCallback):
    """After each step, rank 0's buffers (batch norm's running statistics) go to every rank. DDP gives each forward
    rank 0's buffers, but every rank then updates its own copy from its own batch: without this, each rank would
    evaluate a slightly different model from the one rank 0 saves."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if args.world_size > 1:
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)


# -- main ----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> Trainer:
    parser = HfArgumentParser((SegmentationArguments, LoraArguments, SegmentationDataArguments, TrainingArguments))
    args, lora_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if training_args.per_device_train_batch_size < 2:
        raise ValueError("UperNet's batch norm on 1x1 maps needs --per_device_train_batch_size 2 or more")
    training_args.remove_unused_columns = False
    training_args.batch_eval_metrics = True  # the mean IoU is summed batch by batch (MeanIoU)
    set_seed(training_args.seed)

    with PartialState().main_process_first():  # an official name is downloaded and converted once
        folder = resolve_model(args.model_name_or_path)
    model = lora_args.apply(build_model(folder, args.num_labels, args.head_hidden_size))
    train = build_dataset(data_args, args, training_args.seed)
    if len(train) % (training_args.per_device_train_batch_size * training_args.world_size) == 1:
        train.items = train.items[:-1]  # no training batch of one image (batch norm)
    evaluation = None
    if data_args.eval_folder or data_args.eval_split:
        evaluation = build_dataset(data_args, args, training_args.seed, train=False)
    processor = SegformerImageProcessor(
        size={"height": args.image_size, "width": args.image_size},
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
        do_reduce_labels=args.reduce_labels,
    )  # saved beside the model: its preprocessing and post_process_semantic_segmentation

    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=default_collate,
        processing_class=processor,
        compute_metrics=None if evaluation is None else MeanIoU(model.config.id2label, model.config.loss_ignore_index),
        preprocess_logits_for_metrics=predicted_classes,
        callbacks=[EpochCallback(*[d for d in (train, evaluation) if d is not None]), SameBuffersOnEveryRank()],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    merge_for_saving(trainer)  # with LoRA: the adapters to output_dir/lora_adapter, the merged model below
    trainer.save_model()
    if evaluation is not None:
        trainer.save_metrics("eval", trainer.evaluate())
    trainer.save_state()
    return trainer


if __name__ == "__main__":
    main()
    PartialState().destroy_process_group()  # before exit: a process group left to exit can abort the rank
