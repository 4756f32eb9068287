"""FLOP counting with fvcore, with handles for the ops fvcore skips or does not know.

fvcore counts one flop per multiply-add of matrix products and silently ignores data movement
(gather, index) or lists other ops as unsupported. Here attention is counted like a matrix
product and every clustering, gather and elementwise op as one flop per element it reads or
writes (n log n for sort), for the baseline and AiluRus alike, so the clustering overhead shows.
"""
import logging
import math
import warnings
from collections import Counter
from typing import Any, List, Tuple

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

_PER_ELEMENT_OPS = """
abs add amax amin any argmin bincount clamp_min clone cumsum div exp fill_ gelu index index_add_
index_copy_ index_select gather le log logaddexp logsumexp lt max_pool2d mean mul neg new_ones one_hot
pad pow repeat repeat_interleave rsub scatter scatter_ softmax sqrt sub sum topk upsample_bicubic2d
where __or__ masked_fill eq ge gt ne unfold cartesian_prod layer_norm add_ maximum __and__ remainder floor_divide
minimum scatter_add scatter_add_ ones_like argmax linalg_vector_norm isfinite
""".split()


def _numel(value) -> int:
    shape = get_shape(value)
    return math.prod(shape) if shape is not None else 0


def per_element(inputs: List[Any], outputs: List[Any]) -> int:
    """Largest tensor an op reads or writes, in elements."""
    return max([_numel(v) for v in list(inputs) + list(outputs)] + [0])


def sort_flops(inputs: List[Any], outputs: List[Any]) -> int:
    shape = get_shape(inputs[0])
    n = shape[-1] if shape else 1
    return math.prod(shape) * max(1, math.ceil(math.log2(max(n, 2))))


def sdpa_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """Multiply-adds of q @ k^T and attn @ v."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    return math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def flop_analysis(model: torch.nn.Module, inputs: Tuple) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(model, inputs).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    handles = {f"aten::{op}": per_element for op in _PER_ELEMENT_OPS}
    handles.update({"aten::sort": sort_flops, "aten::argsort": sort_flops, "aten::scaled_dot_product_attention": sdpa_flops})
    # shape queries and views do no arithmetic either
    handles.update({"aten::numel": None, "aten::empty_like": None, "aten::expand_as": None})
    return analysis.set_op_handle(**handles)


def count_flops(model: torch.nn.Module, inputs: Tuple) -> Tuple[float, Counter]:
    """Total flops of one forward and the ops still left uncounted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warnings about data-dependent shapes
        analysis = flop_analysis(model, inputs)
        return float(analysis.total()), Counter(analysis.unsupported_ops())
