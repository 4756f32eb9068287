"""AiluRusViT: Detectron2's ViT with token clustering after ``cluster_layer`` blocks."""
import inspect
from dataclasses import replace
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils import checkpoint as activation_checkpoint
from detectron2.modeling.backbone.utils import get_abs_pos
from detectron2.modeling.backbone.vit import ViT, Block

from .attention import reduced_attention
from .clustering import Clusters, num_clusters_for
from .layouts import AttentionLayout, global_layout, window_layout
from .reducers import REDUCERS, ClusteringInput
from .settings import SETTING_NAMES, AiluRusSettings, split_settings
from .tokens import TokenState, UnfoldMode, grid_state, merge, unfold

__all__ = ["AiluRusViT", "NonFiniteImage", "padding_tokens", "validate_arguments"]

class NonFiniteImage(ValueError):
    """Input images with NaN or Inf values.

    counts: {index in the batch: number of non-finite values}; names: a label per index
    (e.g. the file name), filled in by callers that know them.
    """

    def __init__(self, counts: Dict[int, int], names: Optional[Dict[int, str]] = None):
        self.counts, self.names = counts, names or {}
        images = "; ".join(
            f"image {i}" + (f" ({self.names[i]})" if self.names.get(i) else "") + f": {n} non-finite values"
            for i, n in counts.items()
        )
        super().__init__(
            f"non-finite (NaN or Inf) input pixels in the batch: {images}. Fix or drop these images; "
            "AiluRusViT(check_finite=False) lets them through, giving them non-finite outputs "
            "(the other images of the batch are unaffected)."
        )

    def with_names(self, names: Sequence[Optional[str]]) -> "NonFiniteImage":
        return NonFiniteImage(self.counts, {i: names[i] for i in self.counts if names[i]})


class AiluRusViT(ViT):
    """Detectron2's ``ViT`` (same parameters, same state_dict) with AiluRus token clustering.

    Blocks ``0 .. cluster_layer-1`` run on the full H x W grid; the output of block
    ``cluster_layer-1`` is clustered into M tokens, and blocks ``cluster_layer ..`` run on those.
    All blocks, before and after clustering, use the same attention kernel
    (``reduced_attention``), so ``enabled=False`` is a like-for-like baseline.

    The AiluRus settings (``ailurus.settings.AiluRusSettings``) are keyword arguments beside
    Detectron2's ``ViT`` arguments, so ``model.backbone.net.keep_ratio=0.4`` overrides work in
    lazy configs. They are held, validated, in ``self.settings`` and read (or, validated again,
    set) as attributes: ``net.keep_ratio``.
    """

    def __init__(self, *, use_act_checkpoint: bool = False, **kwargs):
        """
        Args:
            use_act_checkpoint: recompute each block's activations in the backward pass
                (``torch.utils.checkpoint``) to save memory while training; no fairscale needed.
            kwargs: the AiluRus settings (``AiluRusSettings``) and Detectron2's ``ViT`` arguments.
        """
        settings = validate_arguments({**kwargs, "use_act_checkpoint": use_act_checkpoint})
        _, vit_kwargs = split_settings(kwargs)
        # Detectron2 would wrap blocks with fairscale's checkpoint_wrapper, which our block runner
        # bypasses: checkpointing is done by ``run_blocks`` instead.
        super().__init__(use_act_checkpoint=False, **vit_kwargs)
        self.use_act_checkpoint = use_act_checkpoint
        self.settings = settings
        self._freeze(settings.freeze_blocks)

    def _freeze(self, num_blocks: int) -> None:
        """Freeze the patch and position embeddings and the first ``num_blocks`` blocks (0: none)."""
        if num_blocks:
            frozen = [self.patch_embed, *self.blocks[:num_blocks]]
            for p in [q for m in frozen for q in m.parameters()] + [self.pos_embed]:
                if p is not None:
                    p.requires_grad_(False)

    def with_settings(self, **changes) -> AiluRusSettings:
        """``self.settings`` with ``changes``, validated for this ViT."""
        residual = [i for i, b in enumerate(self.blocks) if b.use_residual_block]
        return replace(self.settings, **changes).validate(len(self.blocks), REDUCERS, residual,
                                                          self.use_act_checkpoint)

    def __getattr__(self, name: str):
        if name in SETTING_NAMES and "settings" in self.__dict__:
            return getattr(self.__dict__["settings"], name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value) -> None:
        if name in SETTING_NAMES:  # net.keep_ratio = 0.3: a validated new settings object
            name, value = "settings", self.with_settings(**{name: value})
        super().__setattr__(name, value)

    def clusters_for(self, num_tokens: int) -> int:
        """M for a grid of ``num_tokens`` tokens."""
        s = self.settings
        if s.num_clusters is not None:
            return min(s.num_clusters, num_tokens)
        return num_clusters_for(num_tokens, s.keep_ratio)

    @property
    def unfold_mode(self) -> UnfoldMode:
        """The unfold used: ``unfold``, or the reducer's own when that is None."""
        return self.settings.unfold or REDUCERS[self.settings.reducer].unfold

    def grid_tokens(self, x: torch.Tensor, num_blocks: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Output of the first ``num_blocks`` blocks, on the full grid.

        Args:
            x: (B, 3, H_img, W_img) normalised images.
        Returns:
            (B, H, W, C) tokens and (B, H, W) True where the patch is Detectron2's zero padding.
        """
        self._check_input(x)
        is_pad = padding_tokens(x, self.patch_embed.proj.kernel_size)
        # Detectron2's PatchEmbed returns a channel-major view (a permuted conv output); every residual
        # add would keep that layout and every layer norm copy it. Row-major tokens: 7% less backbone
        # time at 512 px on a CPU, the same values.
        x = self.patch_embed(x).contiguous()
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (x.shape[1], x.shape[2]))
        B, H, W, C = x.shape
        tokens = run_blocks(self.blocks[:num_blocks], x.reshape(B, H * W, C), grid_state(B, (H, W), x.device),
                            self._checkpointed())
        return tokens.reshape(B, H, W, C), is_pad

    def forward_tokens(self, x: torch.Tensor) -> Tuple[torch.Tensor, TokenState]:
        """
        Args:
            x: (B, 3, H_img, W_img) normalised images.
        Returns:
            tokens: (B, M, C) output of the last block; state: their geometry on the (H, W) grid.
        """
        enabled = self.settings.enabled
        split = self.settings.cluster_layer if enabled else len(self.blocks)
        grid, is_pad = self.grid_tokens(x, split)
        B, H, W, C = grid.shape
        if not enabled:
            return grid.reshape(B, H * W, C), grid_state(B, (H, W), grid.device)
        clusters = self.find_clusters(grid, is_pad, self.blocks[split:])
        tokens, state = merge(grid.reshape(B, H * W, C), clusters, (H, W))
        return run_blocks(self.blocks[split:], tokens, state, self._checkpointed(), self.settings.span_windows), state

    def _checkpointed(self) -> bool:
        return self.use_act_checkpoint and self.training and torch.is_grad_enabled()

    def find_clusters(self, x: torch.Tensor, is_pad: torch.Tensor, later_blocks: Sequence[Block]) -> Clusters:
        """Clusters of the grid tokens ``x`` (B, H, W, C) by the settings' reducer, for ``later_blocks``."""
        B, H, W, C = x.shape
        reducer = REDUCERS[self.settings.reducer]
        keys = None
        if reducer.needs_keys:  # the keys the next block would compute on the grid, mean over heads
            with torch.no_grad():
                attn = later_blocks[0].attn
                qkv = attn.qkv(later_blocks[0].norm1(x))
                keys = qkv.reshape(B, H, W, 3, attn.num_heads, -1)[:, :, :, 1].mean(3)
        return reducer.cluster(ClusteringInput(
            x=x, num_clusters=self.clusters_for(H * W), is_pad=is_pad,
            window_size=next((b.window_size for b in later_blocks if b.window_size), 0), keys=keys,
            settings=self.settings,
        ))

    def _check_input(self, x: torch.Tensor) -> None:
        """ValueError for input the model cannot process correctly: x must be (B, C, H, W) with the
        patch embedding's C channels and at least one patch per side, and finite (``check_finite``)."""
        conv = self.patch_embed.proj
        if x.dim() != 4 or x.shape[1] != conv.in_channels:
            raise ValueError(
                f"AiluRusViT takes (B, {conv.in_channels}, H, W) images, got a tensor of shape {tuple(x.shape)}."
            )
        if x.shape[0] == 0 or min(x.shape[2:]) < max(conv.kernel_size):
            raise ValueError(
                f"AiluRusViT needs a non-empty batch of images of at least {max(conv.kernel_size)} x "
                f"{max(conv.kernel_size)} px (one patch), got a tensor of shape {tuple(x.shape)}."
            )
        # The one value check, before the patch embedding; compiled and exported graphs leave it out
        # (it needs the value on the host), as they cannot raise: check images before them instead.
        if self.settings.check_finite and not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
            bad = (~torch.isfinite(x)).flatten(1).sum(1)
            if bad.any():
                raise NonFiniteImage({i: int(n) for i, n in enumerate(bad.tolist()) if n})

    def feature_map(self, tokens: torch.Tensor, state: TokenState) -> torch.Tensor:
        """(B, C, H, W) map of ``forward_tokens``' output, unfolded by ``unfold_mode``, in PyTorch's
        default layout whatever the tokens' (so the convolutions after it run the same kernels with
        AiluRus on and off; channels-last ones are slower in the backward pass on CPUs)."""
        grid = unfold(tokens, state, self.unfold_mode, self.settings.unfold_topk, self.settings.unfold_temperature)
        return grid.permute(0, 3, 1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return {self._out_features[0]: self.feature_map(*self.forward_tokens(x))}


def padding_tokens(images: torch.Tensor, patch_size: Tuple[int, int]) -> torch.Tensor:
    """(B, H, W) True for tokens whose patch is all zero: Detectron2 pads normalised images with
    zeros, and a real patch is never exactly zero in every pixel and channel."""
    return F.max_pool2d(images.abs().amax(1, keepdim=True), patch_size)[:, 0] == 0


def run_blocks(
    blocks: Sequence[Block], tokens: torch.Tensor, state: TokenState, checkpointed: bool = False,
    span_windows: bool = True,
) -> torch.Tensor:
    """Run blocks on one token set; its layouts are built once and shared by those blocks.

    Args:
        tokens: (B, M, C) with geometry ``state``.
        checkpointed: recompute each block's activations in the backward pass instead of storing them.
        span_windows: window blocks see a cluster in every window that holds its cells (``window_layout``).
    """
    layouts = {
        size: window_layout(state, size, span_windows) if size > 0 else global_layout(state)
        for size in {block.window_size for block in blocks}
    }
    for block in blocks:
        layout = layouts[block.window_size]
        if checkpointed:
            tokens = activation_checkpoint.checkpoint(run_block, block, tokens, state, layout, use_reentrant=False)
        else:
            tokens = run_block(block, tokens, state, layout)
    return tokens


def run_block(block: Block, x: torch.Tensor, state: TokenState, layout: AttentionLayout) -> torch.Tensor:
    """Detectron2's ``Block.forward`` on compact (B, M, C) tokens grouped by ``layout``."""
    x = x + block.drop_path(reduced_attention(block.norm1(x), layout, block.attn))
    x = x + block.drop_path(block.mlp(block.norm2(x)))
    if block.use_residual_block:  # only before clustering (checked at construction): tokens are the grid
        B, _, C = x.shape
        grid = x.reshape(B, *state.grid_hw, C).permute(0, 3, 1, 2)
        x = block.residual(grid).permute(0, 2, 3, 1).reshape(B, -1, C)
    return x


_VIT_DEPTH = inspect.signature(ViT.__init__).parameters["depth"].default


def validate_arguments(kwargs: Mapping[str, Any]) -> AiluRusSettings:
    """The AiluRus settings among ``AiluRusViT(**kwargs)``'s arguments, validated against the others
    (``depth``, ``residual_block_indexes``, ``use_act_checkpoint``) without building anything;
    ``ValueError`` naming the first invalid one. Used by the constructor and by train_net."""
    ours, vit_kwargs = split_settings(kwargs)
    return AiluRusSettings(**ours).validate(
        vit_kwargs.get("depth", _VIT_DEPTH), REDUCERS, vit_kwargs.get("residual_block_indexes", ()),
        vit_kwargs.get("use_act_checkpoint", False))
