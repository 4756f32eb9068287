"""Real photos shipped by scikit-image, prepared the way Detectron2's test mapper does."""
import os
from typing import Dict

import numpy as np
import torch
from detectron2.data import transforms as T

SAMPLE_PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry")


def sample_photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB photo: one of ``skimage.data``'s by name, or an image file's path."""
    import skimage.data

    if os.path.isfile(name):
        from detectron2.data.detection_utils import read_image

        return read_image(name, format="RGB")
    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {', '.join(SAMPLE_PHOTOS)} or give an image file")
    return getattr(skimage.data, name)()


def model_input(rgb: np.ndarray, size: int, input_format: str = "RGB") -> Dict:
    """A Detectron2 model input dict: the photo resized so its long edge is ``size``."""
    resized = T.ResizeShortestEdge(size, max_size=size).get_transform(rgb).apply_image(rgb)
    if input_format == "BGR":
        resized = resized[:, :, ::-1]
    image = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    return {"image": image, "height": rgb.shape[0], "width": rgb.shape[1]}
