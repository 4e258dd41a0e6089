"""Track objects through many videos with SAM 2, the videos split across processes by `accelerate launch`.

    python examples/track_many.py --model DIR_OR_NAME --prompts prompts.json --out OUT
    accelerate launch --num_processes 4 examples/track_many.py --model DIR_OR_NAME --prompts prompts.json --out OUT

`prompts.json` maps each video (a video file or a folder of JPEG/PNG frames) to its prompts, written as for
`hiera-hf track` ("FRAME,OBJ,X,Y[,LABEL]" clicks, "FRAME,OBJ,X0,Y0,X1,Y1" boxes):

    {"clips/a.mp4": {"points": ["0,1,320,180", "0,1,300,200,0"], "boxes": ["0,2,40,50,200,220"]}, ...}

The points go to `hiera-hf track` before the boxes, each in the order given (track applies its prompts in
command-line order, objects batched in the order first prompted).

Each process tracks its share of the videos on its own device and writes, per video, what `hiera-hf track` writes:
`OUT/<video name>/masks/00000.png ...` (palette PNGs, pixel value = object id) and `OUT/<video name>/overlay.mp4`.
The masks do not depend on the number of processes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import PartialState

from hiera_hf.cli import main as hiera_hf


def track_commands(prompts: dict, model: str, out: Path, device: str, max_frames: int | None) -> dict[str, list]:
    """The `hiera-hf track` arguments of every video, keyed by video; checks the prompt file's layout."""
    if not isinstance(prompts, dict) or not prompts:
        raise ValueError("the prompt file must map at least one video to its prompts")
    names = [Path(video).stem for video in prompts]
    if len(set(names)) != len(names):
        raise ValueError(f"videos must have distinct names (output folders), got {sorted(names)}")
    commands = {}
    for video, prompt in prompts.items():
        unknown = set(prompt) - {"points", "boxes"} if isinstance(prompt, dict) else {"(not an object)"}
        if unknown:
            raise ValueError(f"prompts of {video}: unknown entries {sorted(unknown)}; use 'points' and 'boxes'")
        command = ["track", video, "--model", model, "--out", str(out / Path(video).stem), "--device", device]
        command += [arg for point in prompt.get("points", []) for arg in ("--point", point)]
        command += [arg for box in prompt.get("boxes", []) for arg in ("--box", box)]
        if max_frames is not None:
            command += ["--max-frames", str(max_frames)]
        commands[video] = command + ["--quiet"]
    return commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a converted SAM 2 folder or an official SAM 2 name")
    parser.add_argument("--prompts", required=True, type=Path, help="JSON file: video -> points and boxes")
    parser.add_argument("--out", required=True, type=Path, help="output folder (one subfolder per video)")
    parser.add_argument("--max-frames", type=int, help="track at most N frames each way")
    args = parser.parse_args()

    state = PartialState(cpu=not torch.cuda.is_available())  # CPU ranks need `cpu=True` to form a group
    commands = track_commands(
        json.loads(args.prompts.read_text()), args.model, args.out, str(state.device), args.max_frames
    )
    if state.is_main_process:  # download and convert an official model once, before the others need it
        from hiera_hf.hub import resolve_model

        resolve_model(args.model)
    state.wait_for_everyone()
    with state.split_between_processes(sorted(commands)) as videos:
        for video in videos:
            if hiera_hf(commands[video]) != 0:
                raise SystemExit(f"process {state.process_index}: tracking {video} failed")
            print(f"process {state.process_index}: tracked {video}")
    state.wait_for_everyone()


if __name__ == "__main__":
    main()
    PartialState().destroy_process_group()  # before exit: a process group left to exit can abort the rank
