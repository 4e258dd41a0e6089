"""Fine-tune SAM 2 on images with instance masks, with the `Trainer` (SAM 2 paper's loss; mIoU evaluation).

    python examples/finetune_sam2.py --model_name_or_path sam2.1_hiera_tiny --image_folder data/train \
        --eval_folder data/val --output_dir sam2-ft --max_steps 2000 --learning_rate 1e-5 --freeze_image_encoder
    accelerate launch --num_processes 4 examples/finetune_sam2.py ...   # the same script on several GPUs
    python examples/finetune_sam2.py --model_name_or_path sam2.1_hiera_tiny --dataset_name my/dataset \
        --image_column image --mask_column mask --eval_split validation --output_dir sam2-ft

`--model_name_or_path` is a converted SAM 2 folder (`hiera-hf convert`) or an official name such as
`sam2.1_hiera_tiny` (downloaded and converted into the cache on first use); without it a fresh `--preset` is built
(with `--config_overrides`, for tests). A folder holds `images/<name>.jpg` and `masks/<name>.png` (instance ids:
0 background, 1..k objects, 255 void). Every step prompts each object with a click (3 output masks, the best one
supervised) or a noisy box, sampled from its mask. Evaluation reports the mean IoU of the predicted mask (the one
with the best predicted IoU) over the prompts. Any other `TrainingArguments` apply (`--bf16`, `--save_steps`, ...).
`--lora_r 8` trains LoRA adapters instead (PEFT; `--lora_target_modules`, default the trunk's `qkv` and the
attentions' `q_proj`, `v_proj`): they are saved to `OUTPUT_DIR/lora_adapter`, the merged model to `OUTPUT_DIR`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from hiera_hf.hub import resolve_model
from hiera_hf.lora import LoraArguments, merge_for_saving
from hiera_hf.metrics import load_mean_iou
from hiera_hf.sam2 import Sam2Config, Sam2Model
from hiera_hf.sam2.data import Sam2ImageCollator, Sam2ImageDataset
from hiera_hf.sam2.loss_sam2 import IGNORE_INDEX


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "A converted SAM 2 folder, variant name or Hub repo id."})
    preset: str = field(default="sam2.1_hiera_tiny", metadata={"help": "Preset to build when no folder is given."})
    config_overrides: str | None = field(default=None, metadata={"help": "JSON of Sam2Config fields to override."})
    freeze_image_encoder: bool = field(default=False, metadata={"help": "Train without the trunk and FPN neck."})
    freeze_prompt_encoder: bool = field(default=False, metadata={"help": "Train without the prompt encoder."})


@dataclass
class DataArguments:
    image_folder: str | None = field(default=None, metadata={"help": "Folder with images/ and masks/."})
    eval_folder: str | None = field(default=None, metadata={"help": "Evaluation folder (same layout)."})
    dataset_name: str | None = field(default=None, metadata={"help": "A `datasets` dataset (Hub name or path)."})
    dataset_split: str = field(default="train", metadata={"help": "Training split of --dataset_name."})
    eval_split: str | None = field(default=None, metadata={"help": "Evaluation split of --dataset_name."})
    image_column: str = field(default="image", metadata={"help": "Dataset column of the images."})
    mask_column: str = field(default="mask", metadata={"help": "Dataset column of the instance masks."})
    mask_size: str = field(
        default="input", metadata={"help": "Target masks at the 'input' size (Meta) or 'low' resolution (cheaper)."}
    )
    max_objects: int = field(default=8, metadata={"help": "Objects (prompts) per image and step."})
    box_probability: float = field(default=0.5, metadata={"help": "Chance that a batch is prompted with boxes."})

    def __post_init__(self):
        if bool(self.image_folder) == bool(self.dataset_name):
            raise ValueError("Give exactly one of --image_folder and --dataset_name")
        if self.mask_size not in ("input", "low"):
            raise ValueError(f"--mask_size must be 'input' or 'low', got {self.mask_size!r}")


def build_model(args: ModelArguments, model_class: type[Sam2Model] = Sam2Model, **options) -> Sam2Model:
    """The converted folder, or a fresh preset; with the freezing options and any other config `options`."""
    options |= {"freeze_image_encoder": args.freeze_image_encoder, "freeze_prompt_encoder": args.freeze_prompt_encoder}
    if args.model_name_or_path:
        with PartialState().main_process_first():  # an official name is downloaded and converted once
            folder = resolve_model(args.model_name_or_path)
        return model_class.from_pretrained(folder, **options)
    overrides = json.loads(args.config_overrides) if args.config_overrides else {}
    return model_class(Sam2Config.from_preset(args.preset, **overrides, **options))


def build_datasets(args: DataArguments, config: Sam2Config) -> tuple[Sam2ImageDataset, Sam2ImageDataset | None]:
    sizes = {"image_size": config.image_size, "max_objects": args.max_objects}
    sizes["mask_size"] = config.image_size if args.mask_size == "input" else config.mask_input_size
    if args.image_folder:
        train = Sam2ImageDataset.from_folder(args.image_folder, **sizes)
        evaluation = Sam2ImageDataset.from_folder(args.eval_folder, train=False, **sizes) if args.eval_folder else None
        return train, evaluation
    import datasets

    def load(split: str, train: bool) -> Sam2ImageDataset:
        rows = datasets.load_dataset(args.dataset_name, split=split)
        return Sam2ImageDataset.from_dataset(rows, args.image_column, args.mask_column, train=train, **sizes)

    return load(args.dataset_split, True), load(args.eval_split, False) if args.eval_split else None


def best_mask(logits, labels) -> torch.Tensor:
    """`preprocess_logits_for_metrics`: keep only the mask with the best predicted IoU, `(B, P, h, w)`."""
    pred_masks, iou_scores = logits[0], logits[1]
    best = iou_scores.argmax(dim=-1)[..., None, None, None].expand(-1, -1, 1, *pred_masks.shape[-2:])
    return pred_masks.gather(2, best)[:, :, 0]


def fit(
    model: torch.nn.Module,
    training_args: TrainingArguments,
    train: torch.utils.data.Dataset,
    evaluation: torch.utils.data.Dataset | None,
    collator: Callable,
    compute_metrics: Callable,
    preprocess_logits: Callable,
) -> Trainer:
    """Train (resuming if asked), save the model, evaluate when there is an evaluation set, save the state."""
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=collator,
        compute_metrics=compute_metrics if evaluation is not None else None,
        preprocess_logits_for_metrics=preprocess_logits,
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    merge_for_saving(trainer)  # with LoRA: the adapters to output_dir/lora_adapter, the merged model below
    trainer.save_model()
    if evaluation is not None:
        trainer.save_metrics("eval", trainer.evaluate())
    trainer.save_state()
    return trainer


def main(argv: list[str] | None = None) -> Trainer:
    parser = HfArgumentParser((ModelArguments, LoraArguments, DataArguments, TrainingArguments))
    model_args, lora_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    training_args.remove_unused_columns = False
    training_args.label_names = ["labels"]  # not `input_labels`, the click labels (a prompt)
    if training_args.ddp_find_unused_parameters is None:
        training_args.ddp_find_unused_parameters = True  # clicks and boxes use different prompt weights (as Meta)
    set_seed(training_args.seed)

    model = lora_args.apply(build_model(model_args))
    train, evaluation = build_datasets(data_args, model.config)
    collator = Sam2ImageCollator(
        model.config.image_size,
        {"point": 1 - data_args.box_probability, "box": data_args.box_probability},
        seed=training_args.seed,
    )
    mean_iou = load_mean_iou()

    def compute_metrics(prediction) -> dict[str, float]:
        masks, labels = torch.from_numpy(prediction.predictions), torch.from_numpy(prediction.label_ids)
        masks = F.interpolate(masks.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False) > 0
        keep = ~(labels == IGNORE_INDEX).flatten(2).all(dim=2)  # real prompts, not padding
        predictions = masks[keep].numpy().astype(np.uint8)
        return mean_iou.compute(predictions=list(predictions), references=list(labels[keep].numpy().astype(np.uint8)))

    return fit(model, training_args, train, evaluation, collator, compute_metrics, best_mask)


if __name__ == "__main__":
    main()
    PartialState().destroy_process_group()  # before exit: a process group left to exit can abort the rank
