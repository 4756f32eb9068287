"""Export an AiluRus ViTDet backbone for deployment: ONNX, torch.export or TorchScript.

    python -m ailurus.export --config-file configs/vitdet_s_ailurus.py --checkpoint W.pth \\
        --format onnx --out backbone.onnx [--size 1024] [--batch 1] [key=value ...]

The forward pass of the fixed budget has static shapes and no host syncs (docs/method.md,
"Deployment"), so it exports whole: the graph maps (B, 3, size, size) normalised, padded images
to the pyramid's p2..p6 and the tokens each image kept. The adaptive budget's token count depends
on the image, so it is refused. In ONNX, stable sorts (ties to the lower index, as in PyTorch)
become ``TopK``, whose ties go to the lower index too (ONNX's definition), so onnxruntime picks the
same clusters.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import LazyConfig, instantiate

from .checkpoint import SafeCheckpointer
from .pyramid import TOKENS_KEPT, AiluRusSimpleFeaturePyramid

__all__ = ["ExportError", "export_backbone", "onnx_translations"]

FORMATS = ("onnx", "exported-program", "torchscript")
ONNX_OPSET = 18


class ExportError(ValueError):
    """A model or setting that cannot be exported; the message says why and what to do."""


def onnx_translations() -> Dict:
    """ONNX translations for the ops the exporter has none for: stable sorts as ``TopK``."""
    from onnxscript import opset18 as op

    def sort_stable(self, dim: int = -1, descending: bool = False, stable: bool = True):
        length = op.Gather(op.Shape(self), op.Constant(value_ints=[dim]))
        return op.TopK(self, length, axis=dim, largest=descending, sorted=True)

    return {torch.ops.aten.sort.stable: sort_stable}


class _FlatBackbone(torch.nn.Module):
    """The backbone with its outputs as a tuple in a fixed order (what every exporter handles)."""

    def __init__(self, backbone: AiluRusSimpleFeaturePyramid):
        super().__init__()
        self.backbone = backbone
        self.names: List[str] = list(backbone.output_shape()) + [TOKENS_KEPT]

    def forward(self, images: torch.Tensor):
        outputs = self.backbone(images)
        return tuple(outputs[name] for name in self.names)


def check_exportable(backbone: torch.nn.Module) -> None:
    if not isinstance(backbone, AiluRusSimpleFeaturePyramid):
        raise ExportError(f"ailurus.export exports an AiluRusSimpleFeaturePyramid backbone, got {type(backbone).__name__}.")
    if backbone.net.settings.enabled and backbone.net.settings.budget == "adaptive":
        raise ExportError("budget='adaptive' cannot be exported: each image's token count depends on its content "
                          "(data-dependent shapes); export model.backbone.net.budget=fixed instead.")


def export_backbone(backbone: AiluRusSimpleFeaturePyramid, images: torch.Tensor, fmt: str, out: str) -> List[str]:
    """Write ``backbone`` (eval mode) traced on ``images`` (B, 3, S, S) to ``out``; returns the names
    of its outputs, in order."""
    check_exportable(backbone)
    flat = _FlatBackbone(backbone.eval()).eval()
    with torch.no_grad():
        if fmt == "onnx":
            torch.onnx.export(flat, (images,), out, dynamo=True, opset_version=ONNX_OPSET, input_names=["images"],
                              output_names=flat.names, custom_translation_table=onnx_translations())
        elif fmt == "exported-program":
            torch.export.save(torch.export.export(flat, (images,)), out)
        elif fmt == "torchscript":
            torch.jit.trace(flat, (images,), check_trace=False).save(out)
        else:
            raise ExportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}.")
    return flat.names


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--checkpoint", default=None, help="weights to load (default: the config's init_checkpoint)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=None, help="square canvas (default: the config's square_pad)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("opts", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config_file):
        parser.exit(2, f"ailurus.export: error: --config-file {args.config_file} does not exist.\n")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    size = args.size or cfg.model.backbone.square_pad
    cfg.model.backbone.square_pad = size
    model = instantiate(cfg.model).eval()
    weights = args.checkpoint or cfg.train.get("init_checkpoint", "")
    if weights:
        SafeCheckpointer(model).load(weights)
    images = torch.randn(args.batch, 3, size, size)
    try:
        names = export_backbone(model.backbone, images, args.format, args.out)
    except ExportError as e:
        parser.exit(2, f"ailurus.export: error: {e}\n")
    print(f"wrote {args.out}: (B, 3, {size}, {size}) images -> {', '.join(names)}")
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
