"""Attention over a compact token set grouped by an ``AttentionLayout`` (docs/method.md, "Reduced attention").

Relative positions come from each token's real (row, col); proportional attention adds
log(size) of each key (in a window, of the cluster's cells there), so a cluster weighs like the
tokens it replaced.
"""
import torch
import torch.nn.functional as F
from detectron2.modeling.backbone.vit import Attention

from .layouts import AttentionLayout, masked_value


def resized_rel_table(table: torch.Tensor, extent: int) -> torch.Tensor:
    """A rel-pos table (L, D) resized to 2 * extent - 1 entries as Detectron2's ``get_rel_pos`` does."""
    length = 2 * extent - 1
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.t()[None], size=length, mode="linear")
    return resized[0].t()


def axis_terms(q: torch.Tensor, table: torch.Tensor, coord: torch.Tensor, extent: int) -> torch.Tensor:
    """Rel-pos term of each query against every coordinate of one axis of the frame.

    Args:
        q: (S, h, P, D) queries; table: (2 * extent - 1, D); coord: (S, P) query coordinates.
    Returns:
        (S, h, P, extent): ``out[..., p, t] = q_p . table[coord_p - t + extent - 1]``.
    """
    S, h, P, _ = q.shape
    q_table = q @ table.t().to(q.dtype)  # (S, h, P, 2 * extent - 1)
    lookup = coord[:, None, :, None] - torch.arange(extent, device=q.device) + extent - 1
    return q_table.gather(-1, lookup.expand(S, h, P, extent))


def _masked_logsumexp(t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    # A finite fill, not -inf: logsumexp over an all -inf row has a NaN gradient.
    return t.masked_fill(~keep, masked_value(t.dtype)).logsumexp(-1, keepdim=True)


def attention_bias(q: torch.Tensor, layout: AttentionLayout, attn: Attention) -> torch.Tensor:
    """Additive logits bias: decomposed rel-pos plus log(size), and the collapsed pad-key term.

    Args:
        q: (S, h, P, D) queries.
    Returns:
        (S, h, P, K) bias over the K = P + n_pad keys of each group.
    """
    S, h, P, _ = q.shape
    (n_rows, n_cols), dtype = layout.extent, q.dtype
    if attn.use_rel_pos:
        a = axis_terms(q, resized_rel_table(attn.rel_pos_h, n_rows), layout.rows, n_rows)
        b = axis_terms(q, resized_rel_table(attn.rel_pos_w, n_cols), layout.cols, n_cols)
    else:  # zero terms: the pad key then weighs log(number of pad positions), as it should
        a = q.new_zeros(S, 1, P, n_rows)
        b = q.new_zeros(S, 1, P, n_cols)
    query_code = [a, b, a.new_ones(a.shape[:-1] + (1,))]
    if layout.pad is not None:
        rows, cols = layout.pad.pad_rows, layout.pad.pad_cols
        # log(exp(p) + exp(q)) as a logsumexp of a stack: every ONNX exporter has logsumexp, not logaddexp.
        pad_term = torch.stack((
            _masked_logsumexp(a, rows) + b.logsumexp(-1, keepdim=True),
            _masked_logsumexp(a, ~rows) + _masked_logsumexp(b, cols),
        )).logsumexp(0)
        query_code.append(pad_term.clamp_min(masked_value(dtype)))  # windows without padding
    # The fp32 "masked" entries would overflow to -inf in fp16: re-clamp in the compute dtype.
    key_code = layout.key_code.to(dtype).clamp_min(masked_value(dtype))
    return torch.cat(query_code, -1) @ key_code.transpose(-1, -2)


def reduced_attention(x: torch.Tensor, layout: AttentionLayout, attn: Attention) -> torch.Tensor:
    """Multi-head attention of a Detectron2 ``Attention`` module over grouped compact tokens.

    q/k/v and the output projection run on the compact tokens; only attention itself runs on the
    padded (S, P) groups.

    Args:
        x: (B, M, C) normalised tokens.
    Returns:
        (B, M, C).
    """
    B, M, C = x.shape
    h = attn.num_heads
    S, P = layout.slot_token.shape
    qkv = attn.qkv(x).reshape(B * M, 3, h, C // h)
    # Empty slots index the zero row appended here: a zero key and value, never another token's.
    # index_select copies whole rows: 3x faster than indexing with the (S, P) tensor on CPUs.
    qkv = torch.cat([qkv, qkv.new_zeros(1, 3, h, C // h)]).index_select(0, layout.slot_token.reshape(-1))
    q, k, v = qkv.reshape(S, P, 3, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)  # (S, h, P, D)
    mask = attention_bias(q, layout, attn)
    if layout.pad is not None:
        # Pad keys are zero tokens, so their k and v are the qkv projection of zero (its bias).
        pad_kv = attn.qkv(x.new_zeros(1, C)).reshape(3, 1, h, 1, C // h)
        k = torch.cat([k, pad_kv[1].expand(S, h, 1, -1)], dim=2)
        v = torch.cat([v, pad_kv[2].expand(S, h, 1, -1)], dim=2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.expand(S, h, P, -1))  # (S, h, P, D)
    # A copy, not .contiguous(): that is a no-op where the kernel already returned this layout, and the
    # exporters then record a view that the decomposed attention's layout cannot satisfy.
    out = out.permute(0, 2, 1, 3).clone(memory_format=torch.contiguous_format).reshape(S * P, C)
    out = out * layout.slot_weight.reshape(S * P, 1).to(out.dtype)
    # Each token sums its slots' weighted outputs; empty slots add zero to a dropped extra row.
    index = layout.slot_token.reshape(S * P, 1).expand(S * P, C)
    out = out.new_zeros(B * M + 1, C).scatter_add(0, index, out)[:-1]
    return attn.proj(out.reshape(B, M, C))
