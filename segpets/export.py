"""Export a checkpoint's net for deployment:
``python -m segpets.export ckpt_path=PATH format=onnx|torchscript [output=FILE]``.

Input ``image`` (N, 3, H, W) float, normalised as in training; output ``logits``
(N, 1, H, W). Batch, height and width are dynamic. The training config rides along (ONNX
metadata / TorchScript extra file) so ``segpets.predict ckpt_path=<export>`` preprocesses
exactly as eval did. The export is checked against PyTorch before the command returns.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from segpets.checkpoints.load import load_checkpoint, module_from_checkpoint
from segpets.checkpoints.trust import vouched_targets
from segpets.command.checks import check_resolvable
from segpets.command.entry import entry_point
from segpets.command.record import accept_run, task_run
from segpets.errors import ConfigError
from segpets.inference.model import CONFIG_KEY, ONNX_INPUT, ONNX_OUTPUT, load_model

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
PARITY_ATOL = 1e-4  # max |logit difference| accepted between the export and PyTorch


def export_net(net: nn.Module, config: dict, fmt: str, output: Path, opset: int = 17) -> None:
    """Write ``net`` (eval mode, CPU) to ``output`` with ``config`` embedded."""
    example = torch.randn(2, 3, 64, 64)
    config_json = json.dumps(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer/deprecation chatter, not user-actionable
        if fmt == "torchscript":
            traced = torch.jit.trace(net, example)
            torch.jit.save(traced, str(output), _extra_files={f"{CONFIG_KEY}.json": config_json})
            return
        import onnx

        dynamic = {0: "batch", 2: "height", 3: "width"}
        # the TorchScript-based exporter: a few seconds, and the nets have no branches on
        # sizes (segpets.models), so recorded shape ops keep H×W dynamic
        torch.onnx.export(
            net,
            (example,),
            str(output),
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: dynamic, ONNX_OUTPUT: dynamic},
            opset_version=opset,
            dynamo=False,
        )
    model = onnx.load(str(output))
    model.metadata_props.add(key=CONFIG_KEY, value=config_json)
    onnx.save(model, str(output))


def parity(
    net: nn.Module, output: Path, sizes=((1, 64, 64), (3, 96, 80)), vouched=frozenset()
) -> float:
    """Max |logit difference| between the export and ``net`` on random inputs of several
    batch sizes and H×W; raises if it exceeds :data:`PARITY_ATOL`. ``vouched``: the targets
    the user vouches for (the export is read back like any other)."""
    exported = load_model(output, vouched=vouched)
    worst = 0.0
    for n, h, w in sizes:
        x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.inference_mode():
            ref = net(x)
        got = exported.logits(x)
        worst = max(worst, float((got - ref).abs().max()))
    if not np.isfinite(worst) or worst > PARITY_ATOL:
        raise RuntimeError(f"export '{output}' differs from PyTorch by {worst:.3g} > {PARITY_ATOL}")
    return worst


def export(cfg: DictConfig) -> Path:
    """Export ``cfg.ckpt_path``'s net to ``cfg.output`` (checked against PyTorch); its path."""
    check_resolvable(cfg)
    vouched = vouched_targets(cfg)
    fmt = cfg.format
    if fmt not in SUFFIXES:
        raise ConfigError(f"format must be 'onnx' or 'torchscript', got '{fmt}'")
    config, state_dict = load_checkpoint(cfg.ckpt_path, vouched=vouched)
    output = (
        cfg.get("output") or Path(HydraConfig.get().runtime.output_dir) / f"model{SUFFIXES[fmt]}"
    )
    output = Path(output).expanduser().resolve()
    if output.exists() and not cfg.overwrite:
        raise ConfigError(f"output: '{output}' already exists; set overwrite=true to replace it")
    if output.suffix != SUFFIXES[fmt]:
        raise ConfigError(f"output: a {fmt} export must end in '{SUFFIXES[fmt]}', got '{output}'")
    module = module_from_checkpoint(config, state_dict)
    net = module.net.eval().float()
    accept_run()  # every check that can refuse has passed: the run's record is written now
    output.parent.mkdir(parents=True, exist_ok=True)
    export_net(net, OmegaConf.to_container(config, resolve=True), fmt, output, int(cfg.opset))
    diff = parity(net, output, vouched=vouched)
    print(f"wrote {output} ({fmt}); max |logit diff| vs PyTorch on random inputs: {diff:.2e}")
    return output


@entry_point("export")
@hydra.main(version_base="1.3", config_path="configs", config_name="export")
def main(cfg: DictConfig) -> None:
    with task_run(cfg):
        export(cfg)


if __name__ == "__main__":
    main()
