"""A trained model ready for new images, from a checkpoint or an export (``torch.export``
``.pt2``, ONNX, TorchScript), with the preprocessing stored in it (never re-typed by the user).

Every export's embedded config is checked like a checkpoint's before anything in the file is
loaded; a ``.pt2`` archive as a whole is checked first too (:mod:`segpets.inference.pt2`).
TorchScript is deprecated by PyTorch (``torch.jit``): such files still load, with a warning.
"""

from __future__ import annotations

import json
import logging
import warnings
import zipfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from segpets.checkpoints.load import load_checkpoint, module_from_checkpoint
from segpets.checkpoints.trust import trusted_config
from segpets.command.build import instantiate_or_explain
from segpets.data.transforms import normalize
from segpets.errors import ConfigError
from segpets.evaluation.logits import hflip_average
from segpets.inference.pt2 import read_pt2

log = logging.getLogger(__name__)

CONFIG_KEY = "segpets_config"  # ONNX metadata key / .pt2 and TorchScript extra file: the config
ONNX_INPUT, ONNX_OUTPUT = "image", "logits"


@dataclass
class Model:
    """``forward``: normalised (N, 3, h, w) float → (N, 1, h, w) logits; ``transform``: the
    training run's ``data.eval_transform`` (resize + to tensor), then its ``data.mean``/``std``
    normalisation, as the module applies it on the device."""

    config: DictConfig
    forward: Callable[[torch.Tensor], torch.Tensor]
    transform: Callable[..., dict]

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB → (3, h, w) float, exactly as eval saw its images."""
        tensor = self.transform(image=image)["image"]
        return normalize(tensor, self.config.data.mean, self.config.data.std)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, tta: str | None = None) -> torch.Tensor:
        return hflip_average(self.forward, images) if tta == "hflip" else self.forward(images)


def load_model(
    path: str | Path, device: str = "cpu", vouched: Collection[str] = frozenset()
) -> Model:
    """A :class:`Model` from ``.pt2`` (``torch.export``), ``.onnx`` (onnxruntime, CPU),
    ``.pt``/``.ts`` (TorchScript, deprecated) or any other file as a segpets checkpoint; its
    stored config is checked like a checkpoint's (``vouched``: the targets the user vouches
    for beyond segpets' own)."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"ckpt_path: no such file '{path}'")
    if path.suffix == ".pt2":
        config, forward = _exported_program(path, device, vouched)
    elif path.suffix == ".onnx":
        config, forward = _onnx(path, vouched)
    elif path.suffix in (".pt", ".ts"):
        config, forward = _torchscript(path, device, vouched)
    else:
        config, forward = _checkpoint(path, device, vouched)
    transform = instantiate_or_explain(config.data.eval_transform, "data.eval_transform")
    return Model(config, forward, transform)


def _checkpoint(path: Path, device: str, vouched: Collection[str]):
    config, state_dict = load_checkpoint(path, vouched=vouched)
    module = module_from_checkpoint(config, state_dict, source=f"ckpt_path: '{path}'")
    module.eval().to(device)
    return config, lambda x: module(x.to(device)).float().cpu()


def _onnx(path: Path, vouched: Collection[str]):
    import onnx
    import onnxruntime as ort

    try:  # the metadata first (protobuf parsing only): nothing runs before its config is checked
        meta = {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }
    except Exception as err:  # DecodeError and friends: not an ONNX file
        raise ConfigError(f"ckpt_path: cannot load ONNX model '{path}': {err}") from None
    config = exported_config(meta.get(CONFIG_KEY), path, vouched)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise ConfigError(f"ckpt_path: cannot load ONNX model '{path}': {err}") from None

    def forward(images: torch.Tensor) -> torch.Tensor:
        feed = {ONNX_INPUT: images.float().contiguous().numpy()}
        return torch.from_numpy(session.run([ONNX_OUTPUT], feed)[0])

    return config, forward


def _exported_program(path: Path, device: str, vouched: Collection[str]):
    """A ``torch.export`` archive: the archive and its config checked, then loaded."""
    config = exported_config(read_pt2(path, f"{CONFIG_KEY}.json"), path, vouched)
    try:
        net = torch.export.load(str(path)).module().to(device)
    except Exception as err:  # what torch raises for a damaged or foreign archive varies
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"ckpt_path: cannot load torch.export model '{path}': {first}") from None
    return config, lambda x: net(x.to(device)).float().cpu()


def _torchscript(path: Path, device: str, vouched: Collection[str]):
    # checked before the net is loaded
    config = exported_config(_torchscript_extra(path), path, vouched)
    log.warning(
        "'%s' is a TorchScript export: TorchScript is deprecated by PyTorch; "
        "export format=torch_export (.pt2) instead",
        path.name,
    )
    try:
        with warnings.catch_warnings():  # said above, in segpets' words
            warnings.filterwarnings("ignore", r"`torch\.jit\.load` is", FutureWarning)
            net = torch.jit.load(str(path), map_location=device)
    except Exception as err:  # RuntimeError for anything that is not a TorchScript archive
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"ckpt_path: cannot load TorchScript model '{path}': {first}") from None
    net.eval()
    return config, lambda x: net(x.to(device)).float().cpu()


def _torchscript_extra(path: Path) -> str | None:
    """The config file a TorchScript archive (a zip) carries, read without loading the net."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{CONFIG_KEY}.json")]
            return archive.read(names[0]).decode() if names else None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"ckpt_path: cannot load TorchScript model '{path}': {err}") from None


def exported_config(
    text: str | None, path: Path, vouched: Collection[str] = frozenset()
) -> DictConfig:
    """The training config an export carries, parsed as JSON and checked like a checkpoint's
    (:mod:`segpets.checkpoints.trust`, ``vouched`` included): an export is data, its targets
    are never instantiated blindly."""
    if not text:
        raise ConfigError(f"ckpt_path: '{path}' was not written by segpets.export (no config)")
    try:
        stored = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"ckpt_path: '{path}' holds an unreadable config ({err})") from None
    return trusted_config(stored, f"ckpt_path: '{path}'", vouched=vouched)
