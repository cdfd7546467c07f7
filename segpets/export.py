"""Export a checkpoint's net for deployment:
``python -m segpets.export ckpt_path=PATH format=onnx|torch_export|torchscript [output=FILE]``.

Input ``image`` (N, 3, H, W) float, normalised as in training; output ``logits``
(N, 1, H, W). Batch, height and width are dynamic. Formats:

* ``onnx`` (default, ``.onnx``): PyTorch's ``torch.export``-based ONNX exporter
  (``dynamo=True``, the one PyTorch recommends since 2.9), weights inside the file;
* ``torch_export`` (``.pt2``): a ``torch.export`` ExportedProgram (``torch.export.save``);
* ``torchscript`` (``.pt``): ``torch.jit.trace``, deprecated by PyTorch; kept while it works.

Shapes are traced size-obliviously (no specialisation on sizes of 0 or 1), so no H×W the net
takes is refused by a guard. The training config rides along (ONNX metadata, the archive's
extra file) so ``segpets.predict ckpt_path=<export>`` preprocesses exactly as eval did. The
export is checked against PyTorch on random inputs of other batch sizes and H×W before the
command returns.
"""

from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from segpets.checkpoints.load import load_checkpoint, module_from_checkpoint
from segpets.command.checks import check_resolvable
from segpets.command.entry import entry_point
from segpets.command.record import accept_run, task_run
from segpets.errors import ConfigError
from segpets.inference.model import CONFIG_KEY, ONNX_INPUT, ONNX_OUTPUT, load_model

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2", "torchscript": ".pt"}
PARITY_ATOL = 1e-4  # max |logit difference| accepted between the export and PyTorch
DYNAMIC = {0: "batch", 2: "height", 3: "width"}  # (N, 3, H, W): every dim but channels


def export_net(net: nn.Module, config: dict, fmt: str, output: Path, opset: int = 18) -> None:
    """Write ``net`` (eval mode, CPU) to ``output`` in ``fmt`` with ``config`` embedded.
    ``opset``: the ONNX opset (18 or newer for the ``torch.export``-based exporter)."""
    example = torch.randn(2, 3, 64, 64)
    extra = {f"{CONFIG_KEY}.json": json.dumps(config)}
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer/deprecation chatter (said in the docs)
            traced = torch.jit.trace(net, example)
            torch.jit.save(traced, str(output), _extra_files=extra)
        return
    with size_oblivious():
        if fmt == "torch_export":
            auto = torch.export.Dim.AUTO
            program = torch.export.export(
                net, (example,), dynamic_shapes=({d: auto for d in DYNAMIC},)
            )
            torch.export.save(program, str(output), extra_files=extra)
        else:
            _onnx(net, example, output, opset, extra)


@contextmanager
def size_oblivious():
    """Trace with sizes of 0 and 1 treated like any other (``torch.export``'s
    ``backed_size_oblivious``): without it, a padded-and-cropped net (SmpNet) gets guards
    that refuse inputs needing no padding, or a 1×1 deepest feature map."""
    from torch.fx.experimental import _config

    with _config.patch(backed_size_oblivious=True):
        yield


def _onnx(net: nn.Module, example: torch.Tensor, output: Path, opset: int, extra: dict) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter, not user-actionable
        torch.onnx.export(
            net,
            (example,),
            str(output),
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=({d: name for d, name in DYNAMIC.items()},),
            opset_version=opset,
            dynamo=True,
            external_data=False,  # one file: the weights inside the .onnx
            verbose=False,
        )
    model = onnx.load(str(output))
    for key, value in extra.items():
        model.metadata_props.add(key=key.removesuffix(".json"), value=value)
    onnx.save(model, str(output))


def parity(net: nn.Module, output: Path, sizes=((1, 64, 64), (3, 96, 80))) -> float:
    """Max |logit difference| between the export and ``net`` on random inputs of several
    batch sizes and H×W; raises if it exceeds :data:`PARITY_ATOL`."""
    exported = load_model(output)
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
    fmt = cfg.format
    if fmt not in SUFFIXES:
        raise ConfigError(f"format must be one of {', '.join(SUFFIXES)}, got '{fmt}'")
    config, state_dict = load_checkpoint(cfg.ckpt_path)
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
    diff = parity(net, output)
    print(f"wrote {output} ({fmt}); max |logit diff| vs PyTorch on random inputs: {diff:.2e}")
    if fmt == "torchscript":
        log.warning("TorchScript is deprecated by PyTorch; format=torch_export writes a .pt2")
    return output


@entry_point("export")
@hydra.main(version_base="1.3", config_path="configs", config_name="export")
def main(cfg: DictConfig) -> None:
    with task_run(cfg):
        export(cfg)


if __name__ == "__main__":
    main()
