"""Export an AiluRus ViTDet backbone or whole Mask R-CNN for deployment: ONNX, torch.export or TorchScript.

    python -m ailurus.export --config-file configs/vitdet_s_ailurus.py --checkpoint W.pth \\
        --format onnx --out backbone.onnx [--size 1024] [--batch 1] [key=value ...]
    python -m ailurus.export --config-file C --checkpoint W.pth --part mask-rcnn \\
        --format onnx --out model.onnx [--image photo.jpg]

The forward pass of the fixed budget has static shapes and no host syncs (docs/method.md,
"Deployment"), so the backbone exports whole: the graph maps (B, 3, size, size) normalised, padded
images to the pyramid's p2..p6 and the tokens each image kept. The adaptive budget's token count
depends on the image, so it is refused. ONNX goes through the TorchScript-based exporter, as
Detectron2's own ``export_model.py`` does (the ``torch.export``-based one took 11x longer on the
tests' backbone and cannot take the whole model); stable sorts (ties to the lower index, as in
PyTorch) become ``TopK``, whose ties go to the lower index too (ONNX's definition), so onnxruntime
picks the same clusters.

``--part mask-rcnn`` exports the whole model as Detectron2's ``export_model.py`` does: traced by
``TracingAdapter`` on one image (``--image``, else noise) of the size it will be run at, mapping
a (3, H, W) image in the model's input format to the flattened instances (boxes, classes, 28 x 28
mask probabilities, scores, image size) of ``inference(do_postprocess=False)``. Detectron2's
post-processing has data-dependent shapes (the number of detections), so this goes through the
TorchScript-based exporters (ONNX, TorchScript), not ``torch.export``.
"""
import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.export import TracingAdapter
from detectron2.modeling import GeneralizedRCNN

from .checkpoint import SafeCheckpointer
from .pyramid import TOKENS_KEPT, AiluRusSimpleFeaturePyramid

__all__ = ["ExportError", "export_backbone", "export_mask_rcnn"]

FORMATS = ("onnx", "exported-program", "torchscript")
PARTS = ("backbone", "mask-rcnn")
ONNX_OPSET = 17  # ScatterElements sums (the merge) from opset 16


class ExportError(ValueError):
    """A model or setting that cannot be exported; the message says why and what to do."""


def _write(module: torch.nn.Module, inputs: tuple, fmt: str, out: str, **onnx_names) -> None:
    """``module`` (eval mode) traced on ``inputs`` and written to ``out`` in ``fmt``. ONNX goes
    through TorchScript, with stable sorts exported as ``TopK``."""
    with torch.no_grad():
        if fmt == "onnx":
            _register_stable_sort()
            torch.onnx.export(module, inputs, out, dynamo=False, opset_version=ONNX_OPSET, **onnx_names)
        elif fmt == "exported-program":
            torch.export.save(torch.export.export(module, inputs), out)
        elif fmt == "torchscript":
            torch.jit.trace(module, inputs, check_trace=False).save(out)
        else:
            raise ExportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}.")


def _register_stable_sort() -> None:
    """``TopK`` for sorts: the TorchScript-based exporter has no symbolic for stable ones."""
    from torch.onnx import register_custom_op_symbolic
    from torch.onnx import symbolic_helper

    def sort(g, self, *args):  # args: (dim, descending) or (stable, dim, descending)
        dim = symbolic_helper._get_const(args[-2], "i", "dim")
        descending = symbolic_helper._get_const(args[-1], "b", "descending")
        length = g.op("Gather", g.op("Shape", self), g.op("Constant", value_t=torch.tensor([dim])), axis_i=0)
        return g.op("TopK", self, length, axis_i=dim, largest_i=int(descending), sorted_i=1, outputs=2)

    register_custom_op_symbolic("aten::sort", sort, ONNX_OPSET)


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
    _write(flat, (images,), fmt, out, input_names=["images"], output_names=flat.names)
    return flat.names


def _unprocessed_inference(model: GeneralizedRCNN, inputs: List[Dict]) -> List[Dict]:
    """Detectron2's export inference: instances at the input's size, masks as 28 x 28 ROI masks."""
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def mask_rcnn_adapter(model: GeneralizedRCNN, image: torch.Tensor) -> TracingAdapter:
    """``model`` (eval mode) as a function of one (3, H, W) image to flat tensors; its
    ``outputs_schema`` turns them back into ``[{"instances": Instances}]``."""
    check_exportable(model.backbone)
    # The adapter in eval mode too: exporters restore the adapter's mode, recursively, afterwards.
    return TracingAdapter(model.eval(), [{"image": image}], _unprocessed_inference).eval()


def export_mask_rcnn(model: GeneralizedRCNN, image: torch.Tensor, fmt: str, out: str) -> TracingAdapter:
    """Write the whole Mask R-CNN traced on ``image`` (3, H, W) to ``out``; returns the adapter
    (its ``outputs_schema`` rebuilds instances from the exported model's outputs)."""
    if fmt == "exported-program":
        raise ExportError("--part mask-rcnn cannot be a torch.export program: Detectron2's post-processing has "
                          "data-dependent shapes (the number of detections); use --format onnx or torchscript, "
                          "or export the backbone (--part backbone).")
    adapter = mask_rcnn_adapter(model, image)
    _write(adapter, (image,), fmt, out, input_names=["image"])
    return adapter


def _sample_image(path: Optional[str], size: int, input_format: str) -> torch.Tensor:
    """(3, H, W) uint8: the photo at ``path`` resized as ViTDet's test augmentation does, else noise."""
    if path is None:
        return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    photo = read_image(path, format=input_format)
    photo = T.ResizeShortestEdge(size, max_size=size).get_transform(photo).apply_image(photo)
    return torch.as_tensor(photo.transpose(2, 0, 1).copy())


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--checkpoint", default=None, help="weights to load (default: the config's init_checkpoint)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--part", default="backbone", choices=PARTS, help="the backbone, or the whole model")
    parser.add_argument("--image", default=None, help="--part mask-rcnn: the photo to trace on (default: noise)")
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
    if args.image is not None and not os.path.isfile(args.image):
        parser.exit(2, f"ailurus.export: error: --image {args.image} does not exist.\n")
    try:
        if args.part == "backbone":
            names = export_backbone(model.backbone, torch.randn(args.batch, 3, size, size), args.format, args.out)
            print(f"wrote {args.out}: (B, 3, {size}, {size}) images -> {', '.join(names)}")
        else:
            image = _sample_image(args.image, size, model.input_format)
            export_mask_rcnn(model, image, args.format, args.out)
            print(f"wrote {args.out}: a {tuple(image.shape)} {model.input_format} image -> boxes, classes, "
                  "28 x 28 masks, scores, image size")
    except ExportError as e:
        parser.exit(2, f"ailurus.export: error: {e}\n")
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
