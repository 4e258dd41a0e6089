"""Class names of the datasets Meta's Hiera classifiers were fine-tuned on, shipped as package data.

`imagenet-1k.json` (timm's ImageNet-1k synset lemmas, as in transformers' and timm's Hiera folders) and
`kinetics-400.json` (torchvision's Kinetics-400 action names) are lists indexed by class id, written by
`conversion_scripts/write_label_files.py`; nothing here is typed by hand.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

DATASETS = ("imagenet-1k", "kinetics-400")


@cache
def class_names(dataset: str) -> tuple[str, ...]:
    """The class names of `dataset` (one of `DATASETS`), indexed by class id."""
    if dataset not in DATASETS:
        raise ValueError(f"No class names for dataset {dataset!r}; known: {', '.join(DATASETS)}")
    return tuple(json.loads((Path(__file__).with_name(f"{dataset}.json")).read_text(encoding="utf-8")))


def label_fields(dataset: str) -> dict[str, dict]:
    """The config fields `id2label` (`{class id: name}`) and `label2id` of `dataset`; a name that two classes share
    (ImageNet's "crane", the bird and the machine) maps to the later id, as in transformers' ImageNet configs."""
    names = class_names(dataset)
    return {"id2label": dict(enumerate(names)), "label2id": {name: index for index, name in enumerate(names)}}


__all__ = ["DATASETS", "class_names", "label_fields"]
