"""``python -m segpets``: the commands, one line each; ``--version``."""

from __future__ import annotations

import sys

from segpets import __version__

COMMANDS = {
    "train": "train a model, then test its best checkpoint (Hydra config: train)",
    "eval": "evaluate a checkpoint: metrics, per-image/breed tables, worst-image overlays",
    "predict": "masks for your own images from a checkpoint or an export",
    "export": "export a checkpoint's net (ONNX, torch.export .pt2, TorchScript) for deployment",
    "summarize": "tabulate and plot the runs of a sweep or a task folder",
    "bench": "measure training, inference and data-loading throughput",
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["--version"], ["-V"]):
        print(f"segpets {__version__}")
        return 0
    if args and args[0] not in ("-h", "--help"):
        print(
            f"segpets: error: unknown argument '{args[0]}'; see python -m segpets --help",
            file=sys.stderr,
        )
        return 2
    width = max(map(len, COMMANDS))
    print(f"segpets {__version__}: binary pet segmentation with Lightning and Hydra\n")
    print("usage: python -m segpets.<command> [group=option ...] [key=value ...]")
    print("       (or segpets-<command>; --help after a command shows its config)\n")
    for name, text in COMMANDS.items():
        print(f"  {name:<{width}}  {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
