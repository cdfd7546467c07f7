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
from collections.abc import Collection
from contextlib import contextmanager
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

SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2", "torchscript": ".pt"}
PARITY_ATOL = 1e-4  # max |logit difference| accepted between the export and PyTorch
PARITY_SIZES = ((1, 64, 64), (3, 96, 80))  # (N, H, W) of the random parity inputs
DYNAMIC = {0: "batch", 2: "height", 3: "width"}  # (N, 3, H, W): every dim but channels


def export_net(net: nn.Module, config: dict, fmt: str, output: Path, opset: int = 18) -> None:
    """Write ``net`` (eval mode, CPU) to ``output`` in ``fmt`` with ``config`` embedded.
    ``opset``: the ONNX opset (18 or newer for the ``torch.export``-based exporter).
    ``ConfigError`` (one line) when the exporter cannot export the net."""
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
            try:
                _onnx(net, example, output, opset, extra)
            except torch.onnx.errors.OnnxExporterError as err:
                first = str(err).strip().splitlines()[0][:300]
                raise ConfigError(
                    f"opset={opset}: torch.onnx cannot export this net: {first}"
                ) from None


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
        raise ConfigError(f"format must be one of {', '.join(SUFFIXES)}, got '{fmt}'")
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
