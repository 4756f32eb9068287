"""The token-unmerging simple feature pyramid (docs/method.md, "Merge and unfold")."""
from typing import Dict, Tuple

import torch
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid

from .tokens import TokenState
from .vit import AiluRusViT

__all__ = ["AiluRusSimpleFeaturePyramid", "TOKENS_KEPT"]

# Key of the backbone's output that holds the (B,) tokens each image kept; Detectron2's heads read
# only their in_features, so it passes them by.
TOKENS_KEPT = "tokens_kept"


class AiluRusSimpleFeaturePyramid(SimpleFeaturePyramid):
    """ViTDet's ``SimpleFeaturePyramid`` over an ``AiluRusViT``: the clustered tokens are unfolded
    back to the dense H x W map (the net's ``unfold`` mode) before the scale stages, so RPN and ROI
    heads see ordinary p2..p6 features. Parameters are those of ``SimpleFeaturePyramid``.
    """

    def __init__(self, net: AiluRusViT, **kwargs):
        if not isinstance(net, AiluRusViT):
            raise TypeError(f"AiluRusSimpleFeaturePyramid needs an AiluRusViT net, got {type(net).__name__}")
        super().__init__(net=net, **kwargs)

    @property
    def padding_constraints(self) -> Dict[str, int]:
        """Detectron2's, with ``size_divisibility`` spelled as ``ImageList.from_tensors`` reads it
        (Detectron2's ViTDet pyramid misspells it, so without ``square_pad`` its images go
        unpadded and the patch embedding drops their last partial row and column of patches)."""
        return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}

    def forward_with_state(self, x: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], TokenState]:
        """Pyramid features and the clustering state (for visualisation and analysis).

        Args:
            x: (B, 3, H_img, W_img) normalised, padded images.
        """
        self._check_grid(x)
        tokens, state = self.net.forward_tokens(x)
        features = self.net.feature_map(tokens, state)  # (B, C, H, W)
        results = [stage(features) for stage in self.stages]
        if self.top_block is not None:
            top_input = results[self._out_features.index(self.top_block.in_feature)]
            results.extend(self.top_block(top_input))
        return dict(zip(self._out_features, results)), state

    def _check_grid(self, x: torch.Tensor) -> None:
        """ValueError when the token grid is too small for the coarsest downsampling stage."""
        patch = max(self.net.patch_embed.proj.kernel_size)
        need = max(1, round(1 / min(self.scale_factors)))  # tokens per side the 1/s pooling needs
        if x.dim() == 4 and min(x.shape[2:]) // patch < need:
            raise ValueError(
                f"AiluRusSimpleFeaturePyramid: input of {x.shape[2]} x {x.shape[3]} px gives a "
                f"{x.shape[2] // patch} x {x.shape[3] // patch} token grid; its {min(self.scale_factors)}x stage "
                f"needs at least {need} x {need} tokens, i.e. images of at least {need * patch} x {need * patch} px "
                "(pad them, e.g. with square_pad or the model's size_divisibility)."
            )

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """p2..p6 features (B, C, H/s, W/s), and under ``TOKENS_KEPT`` the (B,) tokens each image kept."""
        features, state = self.forward_with_state(x)
        return {**features, TOKENS_KEPT: state.tokens_per_image}
