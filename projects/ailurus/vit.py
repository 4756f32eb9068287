"""AiluRusViT: Detectron2's ViT with token clustering after ``cluster_layer`` blocks."""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling.backbone.utils import get_abs_pos
from detectron2.modeling.backbone.vit import ViT, Block

from .attention import reduced_attention
from .clustering import cluster_tokens, num_clusters_for
from .reduced import AttentionLayout, ReducedState, UnfoldMode, global_layout, grid_state, merge, unfold, window_layout

__all__ = ["AiluRusViT", "AILURUS_ARGS"]

# Profiler event around the clustering step (the benchmark reads its time).
CLUSTER_EVENT = "ailurus.cluster_tokens"

# Constructor arguments that AiluRusViT adds to Detectron2's ViT.
AILURUS_ARGS = ("cluster_layer", "keep_ratio", "num_clusters", "knn_k", "radius", "assign_radius", "unfold", "enabled")


class AiluRusViT(ViT):
    """Detectron2's ``ViT`` (same parameters, same state_dict) with AiluRus token clustering.

    Blocks ``0 .. cluster_layer-1`` run on the full H x W grid; the output of block
    ``cluster_layer-1`` is clustered into M tokens, and the remaining blocks run on those. All
    blocks, before and after clustering, use the same attention kernel (``reduced_attention``),
    so ``enabled=False`` is a like-for-like baseline.
    """

    def __init__(
        self,
        *,
        cluster_layer: int = 3,
        keep_ratio: float = 0.5,
        num_clusters: Optional[int] = None,
        knn_k: int = 5,
        radius: int = 3,
        assign_radius: int = 4,
        unfold: UnfoldMode = "residual",
        enabled: bool = True,
        **vit_kwargs,
    ):
        """
        Args:
            cluster_layer: index of the first block that runs on the clustered tokens (1..depth-1).
            keep_ratio: M = ceil(keep_ratio * N) clusters per image, in (0, 1].
            num_clusters: a fixed M instead of ``keep_ratio`` (>= 1).
            knn_k: nearest neighbours that define a token's density (1 .. (radius+1)^2 - 1).
            radius: Chebyshev radius of the density-peak neighbourhood (>= 1).
            assign_radius: Chebyshev radius within which tokens look for an anchor (>= 0).
            unfold: "copy" or "residual" (see ``ailurus.reduced.unfold``).
            enabled: False runs every block on the full grid (the baseline).
            vit_kwargs: arguments of Detectron2's ``ViT``.
        """
        super().__init__(**vit_kwargs)
        depth = len(self.blocks)
        _check(1 <= cluster_layer <= depth - 1, "cluster_layer", cluster_layer, f"an integer in 1..{depth - 1}")
        _check(0 < keep_ratio <= 1, "keep_ratio", keep_ratio, "in (0, 1]")
        _check(num_clusters is None or num_clusters >= 1, "num_clusters", num_clusters, "None or >= 1")
        _check(radius >= 1, "radius", radius, "an integer >= 1")
        _check(assign_radius >= 0, "assign_radius", assign_radius, "an integer >= 0")
        max_k = (radius + 1) ** 2 - 1  # neighbours of a corner token
        _check(1 <= knn_k <= max_k, "knn_k", knn_k, f"an integer in 1..{max_k} for radius={radius}")
        _check(unfold in ("copy", "residual"), "unfold", unfold, "'copy' or 'residual'")
        late_residual = [i for i in vit_kwargs.get("residual_block_indexes", ()) if i >= cluster_layer]
        _check(
            not (enabled and late_residual),
            "residual_block_indexes",
            late_residual,
            f"indexes < cluster_layer={cluster_layer} (conv blocks need the full grid)",
        )
        self.cluster_layer = cluster_layer
        self.keep_ratio = keep_ratio
        self.num_clusters = num_clusters
        self.knn_k = knn_k
        self.radius = radius
        self.assign_radius = assign_radius
        self.unfold = unfold
        self.enabled = enabled

    def clusters_for(self, num_tokens: int) -> int:
        """M for a grid of ``num_tokens`` tokens."""
        if self.num_clusters is not None:
            return min(self.num_clusters, num_tokens)
        return num_clusters_for(num_tokens, self.keep_ratio)

    def forward_reduced(self, x: torch.Tensor) -> Tuple[torch.Tensor, ReducedState]:
        """
        Args:
            x: (B, 3, H_img, W_img) normalised images.
        Returns:
            tokens: (B, M, C) output of the last block; state: their geometry on the (H, W) grid.
        """
        is_pad = padding_tokens(x, self.patch_embed.proj.kernel_size)
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        B, H, W, C = x.shape
        tokens = x.reshape(B, H * W, C)
        state = grid_state(B, (H, W), x.device)
        split = self.cluster_layer if self.enabled else len(self.blocks)
        tokens = run_blocks(self.blocks[:split], tokens, state)
        if self.enabled:
            with torch.profiler.record_function(CLUSTER_EVENT):
                clusters = cluster_tokens(
                    tokens.reshape(B, H, W, C),
                    self.clusters_for(H * W),
                    knn_k=self.knn_k,
                    radius=self.radius,
                    assign_radius=self.assign_radius,
                    is_pad=is_pad,
                )
            tokens, state = merge(tokens, clusters, (H, W))
            tokens = run_blocks(self.blocks[split:], tokens, state)
        return tokens, state

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        tokens, state = self.forward_reduced(x)
        return {self._out_features[0]: unfold(tokens, state, self.unfold).permute(0, 3, 1, 2)}


def padding_tokens(images: torch.Tensor, patch_size: Tuple[int, int]) -> torch.Tensor:
    """(B, H, W) True for tokens whose patch is all zero: Detectron2 pads normalised images with
    zeros, and a real patch is never exactly zero in every pixel and channel."""
    return F.max_pool2d(images.abs().amax(1, keepdim=True), patch_size)[:, 0] == 0


def run_blocks(blocks: Sequence[Block], tokens: torch.Tensor, state: ReducedState) -> torch.Tensor:
    """Run blocks on one token set; its layouts are built once and shared by those blocks.

    Args:
        tokens: (B, M, C) with geometry ``state``.
    """
    layouts = {
        size: window_layout(state, size) if size > 0 else global_layout(state)
        for size in {block.window_size for block in blocks}
    }
    for block in blocks:
        tokens = run_block(block, tokens, state, layouts[block.window_size])
    return tokens


def run_block(block: Block, x: torch.Tensor, state: ReducedState, layout: AttentionLayout) -> torch.Tensor:
    """Detectron2's ``Block.forward`` on compact (B, M, C) tokens grouped by ``layout``."""
    x = x + block.drop_path(reduced_attention(block.norm1(x), layout, block.attn))
    x = x + block.drop_path(block.mlp(block.norm2(x)))
    if block.use_residual_block:  # only before clustering (checked at construction): tokens are the grid
        B, _, C = x.shape
        grid = x.reshape(B, *state.grid_hw, C).permute(0, 3, 1, 2)
        x = block.residual(grid).permute(0, 2, 3, 1).reshape(B, -1, C)
    return x


def _check(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise ValueError(f"AiluRusViT: {name}={value!r} is invalid; it must be {allowed}.")
