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
from collections.abc import Collection
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from segpets.checkpoints.load import load_checkpoint, module_from_checkpoint
from segpets.checkpoints.trust import vouched_targets
from segpets.command.checks import check_resolvable, check_values
from segpets.command.entry import entry_point
from segpets.command.outputs import atomic_write
from segpets.command.record import accept_run, task_run
from segpets.errors import ConfigError
from segpets.inference.model import CONFIG_KEY, ONNX_INPUT, ONNX_OUTPUT, load_model

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
PARITY_ATOL = 1e-4  # max |logit difference| accepted between the export and PyTorch
PARITY_SIZES = ((1, 64, 64), (3, 96, 80))  # (N, H, W) of the random parity inputs


def export_net(net: nn.Module, config: dict, fmt: str, output: Path, opset: int = 17) -> None:
    """Write ``net`` (eval mode, CPU) to ``output`` with ``config`` embedded; ``ConfigError``
    when torch.onnx cannot export it at ``opset``."""
    example = torch.randn(2, 3, 64, 64)
    config_json = json.dumps(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer/deprecation chatter, not user-actionable
        if fmt == "torchscript":
            traced = torch.jit.trace(net, example)
            torch.jit.save(traced, str(output), _extra_files={f"{CONFIG_KEY}.json": config_json})
            return
        import onnx

        try:
            _onnx_export(net, example, output, opset)
        except torch.onnx.errors.OnnxExporterError as err:
            first = str(err).strip().splitlines()[0][:300]
            raise ConfigError(
                f"opset={opset}: torch.onnx cannot export this net: {first}"
            ) from None
    model = onnx.load(str(output))
    model.metadata_props.add(key=CONFIG_KEY, value=config_json)
    onnx.save(model, str(output))


def _onnx_export(net: nn.Module, example: torch.Tensor, output: Path, opset: int) -> None:
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


def reference_logits(net: nn.Module, source: str, sizes=PARITY_SIZES) -> list[torch.Tensor]:
    """``net``'s logits on the parity check's random inputs (one tensor per (N, H, W) of
    ``sizes``); ``ConfigError`` naming ``source`` when any is NaN or infinite: such a net
    (NaN weights, an overflowing layer) has nothing to export, and a difference with NaN on
    either side compares as no difference at all."""
    logits = []
    for x in _parity_inputs(sizes):
        with torch.inference_mode():
            logits.append(net(x))
    if not all(bool(torch.isfinite(ref).all()) for ref in logits):
        weights = [t for t in net.state_dict().values() if t.is_floating_point()]
        bad = sum(not bool(torch.isfinite(t).all()) for t in weights)
        raise ConfigError(
            f"{source}: its net gives non-finite logits (NaN/inf) on random inputs ({bad} of its "
            f"{len(weights)} weight tensors hold NaN/inf); nothing exported"
        )
    return logits


def parity(
    net: nn.Module,
    output: Path,
    sizes=PARITY_SIZES,
    reference: list[torch.Tensor] | None = None,
    name: Path | None = None,
    vouched: Collection[str] = frozenset(),
) -> float:
    """Max |logit difference| between the export at ``output`` and ``net`` on random inputs of
    several batch sizes and H×W (``reference``: ``net``'s logits on them, see
    :func:`reference_logits`; ``name``: the export's final path, for messages; default
    ``output``; ``vouched``: the targets the user vouches for, as the export is read back like
    any other). ``ConfigError`` when the export's logits are NaN or infinite,
    ``RuntimeError`` when they differ by more than :data:`PARITY_ATOL`."""
    reference = reference or reference_logits(net, "ckpt_path", sizes)
    name = name or output
    exported = load_model(output, vouched=vouched)
    worst = 0.0
    for x, ref in zip(_parity_inputs(sizes), reference, strict=True):
        got = exported.logits(x)
        if not bool(torch.isfinite(got).all()):
            raise ConfigError(
                f"output: the export '{name}' gives non-finite logits (NaN/inf) where PyTorch "
                f"gives finite ones; nothing exported"
            )
        worst = max(worst, float((got - ref).abs().max()))
    if worst > PARITY_ATOL:
        raise RuntimeError(f"export '{name}' differs from PyTorch by {worst:.3g} > {PARITY_ATOL}")
    return worst


def _parity_inputs(sizes) -> list[torch.Tensor]:
    return [
        torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(h * w)) for n, h, w in sizes
    ]


def export(cfg: DictConfig) -> Path:
    """Export ``cfg.ckpt_path``'s net to ``cfg.output`` (checked against PyTorch); its path.
    The export is written and checked under a temporary name beside ``output``, then renamed
    over it: a kill or a failed check leaves the previous file (``overwrite=true``) intact."""
    check_resolvable(cfg)
    check_values(cfg, "export")
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
    source = f"ckpt_path: '{Path(cfg.ckpt_path).expanduser().resolve()}'"
    module = module_from_checkpoint(config, state_dict, source=source)
    net = module.net.eval().float()
    reference = reference_logits(net, source)
    accept_run()  # every check that can refuse has passed: the run's record is written now
    stored = OmegaConf.to_container(config, resolve=True)
    diffs: list[float] = []

    def write_and_check(tmp: Path) -> None:
        export_net(net, stored, fmt, tmp, int(cfg.opset))
        diffs.append(parity(net, tmp, reference=reference, name=output, vouched=vouched))

    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, write_and_check, suffix=output.suffix)  # load_model reads the suffix
    print(f"wrote {output} ({fmt}); max |logit diff| vs PyTorch on random inputs: {diffs[0]:.2e}")
    return output


@entry_point("export")
@hydra.main(version_base="1.3", config_path="configs", config_name="export")
def main(cfg: DictConfig) -> None:
    with task_run(cfg):
        export(cfg)


if __name__ == "__main__":
    main()
