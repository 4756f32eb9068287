"""Detectron2's ``GeneralizedRCNN`` with checks on the images users pass in."""
from typing import Dict, List, Optional

import torch
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import Instances

from .pyramid import TOKENS_KEPT
from .vit import NonFiniteImage

__all__ = ["AiluRusRCNN"]


class AiluRusRCNN(GeneralizedRCNN):
    """``GeneralizedRCNN`` (same arguments, same state_dict) that refuses, with a ``ValueError``
    saying what the model accepts, input that Detectron2 would crop, pad oddly or fail on deep
    inside: images that are not (C, H, W) with the model's channel count, empty images, images
    larger than the backbone's ``square_pad`` canvas (Detectron2 crops them silently), and, via
    the backbone, non-finite pixels (named by index and ``file_name``). An empty list of inputs
    gives an empty list of results at inference. With an AiluRus backbone, each result also says
    how many backbone tokens its image kept (``tokens_kept``), which varies per image with
    ``budget="adaptive"``.
    """

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        if not self.training and len(batched_inputs) == 0:
            return []
        self._check_images(batched_inputs)
        try:
            return super().forward(batched_inputs)
        except NonFiniteImage as e:
            raise e.with_names([x.get("file_name") for x in batched_inputs]) from None

    def inference(
        self, batched_inputs: List[Dict[str, torch.Tensor]], detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        if detected_instances is not None or self.proposal_generator is None:
            return super().inference(batched_inputs, detected_instances, do_postprocess)
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)  # through __call__: hooks fire, a compiled backbone runs
        kept = features.pop(TOKENS_KEPT, None)
        proposals, _ = self.proposal_generator(images, features, None)
        results, _ = self.roi_heads(images, features, proposals, None)
        if not do_postprocess:
            return results
        outputs = GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)
        for output, n in zip(outputs, [] if kept is None else kept.tolist()):  # after the backbone: no stall inside it
            output[TOKENS_KEPT] = n
        return outputs

    def _check_images(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> None:
        if len(batched_inputs) == 0:
            raise ValueError("AiluRusRCNN: an empty batch cannot be trained on; pass at least one input dict.")
        channels = self.pixel_mean.numel()
        square = self.backbone.padding_constraints.get("square_size", 0)
        for i, x in enumerate(batched_inputs):
            image = x.get("image") if isinstance(x, dict) else None
            name = f"input {i}" + (f" ({x['file_name']})" if isinstance(x, dict) and x.get("file_name") else "")
            if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != channels:
                got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
                raise ValueError(
                    f"AiluRusRCNN: {name}: 'image' must be a ({channels}, H, W) tensor in {self.input_format} "
                    f"order, got {got}. Convert grey or RGBA images to {channels} channels first."
                )
            h, w = image.shape[1:]
            if h == 0 or w == 0:
                raise ValueError(f"AiluRusRCNN: {name}: the image is {h} x {w} px; it must be at least 1 x 1.")
            if square and max(h, w) > square:
                raise ValueError(
                    f"AiluRusRCNN: {name}: the image is {h} x {w} px, larger than the backbone's {square} x {square} "
                    f"canvas (square_pad), and would be cropped. Resize it so its long side is at most {square} "
                    "(e.g. with the config's test augmentation, ResizeShortestEdge(max_size=...))."
                )
