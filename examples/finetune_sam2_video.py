"""Fine-tune SAM 2 on videos in the DAVIS layout, with the `Trainer` (SAM 2's training recipe; J&F evaluation).

    python examples/finetune_sam2_video.py --model_name_or_path sam2.1_hiera_tiny --davis_folder DAVIS \
        --davis_resolution 480p --train_videos DAVIS/ImageSets/2017/train.txt \
        --eval_videos DAVIS/ImageSets/2017/val.txt --output_dir sam2-video-ft --max_steps 10000 \
        --learning_rate 5e-6 --bf16 --gradient_checkpointing
    accelerate launch --num_processes 8 examples/finetune_sam2_video.py ...   # the same script on 8 GPUs

The folder holds `JPEGImages/<video>/<frame>.jpg` and `Annotations/<video>/<frame>.png` (palette PNGs, indices =
object ids; DAVIS 2017 adds a `480p/` level: `--davis_resolution 480p`); `--train_videos` / `--eval_videos` are
text files of video names (default: every video, no evaluation). Each step takes clips of `--num_frames`
consecutive frames (Meta: 8) with up to `--max_objects` objects (Meta: 3) visible on their first frame; the first
frame is prompted with the mask (half of the steps), a click or a box, corrective clicks follow on 1-2 frames
(`Sam2VideoModelForTraining`, `hiera_hf.sam2.training`). Evaluation prompts the first frame with its mask and
reports DAVIS J&F over the other frames. The saved folder loads as a `Sam2VideoModel`. Meta's recipe also uses a
lower learning rate for the image encoder, layer decay and gradient clipping at 0.1 (`--max_grad_norm 0.1`);
`--freeze_image_encoder` is the simple alternative; `--lora_r 8` trains LoRA adapters (as in finetune_sam2.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from finetune_sam2 import ModelArguments, build_model, fit
from pretrain_mae import write_parameter_checksum
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from hiera_hf.lora import LoraArguments
from hiera_hf.metrics import load_j_and_f
from hiera_hf.sam2.data import DavisVideoDataset, Sam2VideoCollator
from hiera_hf.sam2.loss_sam2 import IGNORE_INDEX
from hiera_hf.sam2.training import Sam2VideoModelForTraining


@dataclass
class VideoModelArguments(ModelArguments):
    num_correction_points: int = field(default=7, metadata={"help": "Corrective clicks per corrected frame."})
    parameter_checksums: bool = field(
        default=False, metadata={"help": "Each process writes a checksum of its final parameters (replica check)."}
    )


@dataclass
class DataArguments:
    davis_folder: str = field(metadata={"help": "Folder with JPEGImages/ and Annotations/."})
    davis_resolution: str | None = field(default=None, metadata={"help": "Sub-folder, e.g. 480p for DAVIS 2017."})
    train_videos: str | None = field(default=None, metadata={"help": "Text file of training video names."})
    eval_videos: str | None = field(default=None, metadata={"help": "Text file of evaluation video names."})
    num_frames: int = field(default=8, metadata={"help": "Frames per clip."})
    max_objects: int = field(default=3, metadata={"help": "Objects per clip."})
    mask_size: str = field(
        default="input", metadata={"help": "Target masks at the 'input' size (Meta) or 'low' resolution (cheaper)."}
    )
    mask_prompt_probability: float = field(default=0.5, metadata={"help": "Chance of a mask prompt (else clicks)."})
    box_probability: float = field(default=0.5, metadata={"help": "Chance of a box instead of a click."})


def video_names(path: str | None) -> list[str] | None:
    return None if path is None else [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> Trainer:
    parser = HfArgumentParser((VideoModelArguments, LoraArguments, DataArguments, TrainingArguments))
    model_args, lora_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    training_args.remove_unused_columns = False
    if training_args.ddp_find_unused_parameters is None:
        training_args.ddp_find_unused_parameters = True  # prompt kinds use different weights (Meta sets it too)
    set_seed(training_args.seed)

    model = build_model(model_args, Sam2VideoModelForTraining, num_correction_points=model_args.num_correction_points)
    model = lora_args.apply(model)  # memory attention's q_proj / v_proj are adapted too
    config = model.config
    sizes = {
        "image_size": config.image_size,
        "mask_size": config.image_size if data_args.mask_size == "input" else config.mask_input_size,
        "num_frames": data_args.num_frames,
        "max_objects": data_args.max_objects,
        "resolution": data_args.davis_resolution,
    }
    train = DavisVideoDataset(data_args.davis_folder, videos=video_names(data_args.train_videos), **sizes)
    evaluation = None
    if data_args.eval_videos:
        evaluation = DavisVideoDataset(
            data_args.davis_folder, videos=video_names(data_args.eval_videos), train=False, **sizes
        )
    clicks = 1 - data_args.mask_prompt_probability
    collator = Sam2VideoCollator(
        data_args.max_objects,
        {
            "mask": data_args.mask_prompt_probability,
            "point": clicks * (1 - data_args.box_probability),
            "box": clicks * data_args.box_probability,
        },
        seed=training_args.seed,
    )
    j_and_f = load_j_and_f()

    def compute_metrics(prediction) -> dict[str, float]:
        masks, labels = torch.from_numpy(prediction.predictions), torch.from_numpy(prediction.label_ids)
        masks = F.interpolate(masks.flatten(0, 1).float(), size=labels.shape[-2:], mode="bilinear") > 0
        masks = masks.unflatten(0, labels.shape[:2])
        predictions, references = [], []
        for clip, obj in (~(labels[:, 0] == IGNORE_INDEX).flatten(2).all(dim=2)).nonzero().tolist():
            predictions.append(masks[clip, 1:, obj].numpy().astype(np.uint8))  # frame 0 holds the prompt
            references.append(labels[clip, 1:, obj].numpy().astype(np.uint8))
        return j_and_f.compute(predictions=predictions, references=references)

    trainer = fit(model, training_args, train, evaluation, collator, compute_metrics, lambda logits, labels: logits[0])
    if model_args.parameter_checksums:
        write_parameter_checksum(model, training_args)
    return trainer


if __name__ == "__main__":
    main()
    PartialState().destroy_process_group()  # before exit: a process group left to exit can abort the rank
