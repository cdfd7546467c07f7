"""Time and check every export format on untrained nets of the shipped model configs:
``python scripts/export_formats.py [--models unet res34_unet smp] [--threads N]``.

For each net: seconds to export, file size, and the max |logit difference| against PyTorch
on random inputs of batch sizes and H×W other than the traced 2×64×64 (segpets.export's own
parity check: 1×64×64 and 3×96×80; smp nets also 1×97×131, padded inside and cropped). Besides
segpets' formats (onnx = PyTorch's torch.export-based exporter, torch_export, torchscript)
the TorchScript-based ONNX exporter that segpets used before (``dynamo=False``) is measured
for comparison. Writes into a temporary folder; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from segpets.command.build import build_module
from segpets.export import DYNAMIC, SUFFIXES, export_net
from segpets.inference.model import CONFIG_KEY, ONNX_INPUT, ONNX_OUTPUT, load_model

MODELS = {
    "unet": ["model=unet"],
    "res34_unet": ["model=res34_unet"],
    "smp": ["model=smp", "model.encoder_name=resnet18", "model.encoder_weights=null"],
}


def build(overrides: list[str]):
    with initialize_config_module("segpets.configs", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = tempfile.gettempdir()
    config = OmegaConf.to_container(cfg, resolve=True)
    return build_module(cfg, with_optimizer=False).net.eval(), config


def legacy_onnx(net, config: dict, output: Path) -> None:
    """What segpets.export wrote before: the TorchScript-based ONNX exporter, opset 17."""
    import onnx

    dynamic = {ONNX_INPUT: DYNAMIC, ONNX_OUTPUT: DYNAMIC}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.randn(2, 3, 64, 64),), str(output), input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT], dynamic_axes=dynamic, opset_version=17, dynamo=False,
        )  # fmt: skip
    model = onnx.load(str(output))
    model.metadata_props.add(key=CONFIG_KEY, value=json.dumps(config))
    onnx.save(model, str(output))


def max_diff(net, output: Path, sizes) -> float:
    exported = load_model(output)
    worst = 0.0
    for n, h, w in sizes:
        x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.inference_mode():
            ref = net(x)
        worst = max(worst, float((exported.logits(x) - ref).abs().max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print("| model | format | export s | MB | max abs logit diff |\n|---|---|---|---|---|")
    for name in args.models:
        net, config = build(MODELS[name])
        sizes = [(1, 64, 64), (3, 96, 80)] + ([(1, 97, 131)] if name == "smp" else [])
        for fmt in ("onnx", "onnx (TorchScript-based, before)", "torch_export", "torchscript"):
            with tempfile.TemporaryDirectory() as folder:
                output = Path(folder) / f"model{SUFFIXES[fmt.split()[0]]}"
                start = time.perf_counter()
                if fmt.startswith("onnx ("):
                    legacy_onnx(net, config, output)
                else:
                    export_net(net, config, fmt, output)
                seconds = time.perf_counter() - start
                size = sum(p.stat().st_size for p in Path(folder).iterdir()) / 1e6
                try:
                    diff = f"{max_diff(net, output, sizes):.1e}"
                except Exception as err:  # a format that cannot take these sizes
                    diff = f"fails: {str(err).splitlines()[0][:60]}"
            print(f"| {name} | {fmt} | {seconds:.1f} | {size:.1f} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
