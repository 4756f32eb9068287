"""python -m ailurus.experiments.visualize: cluster pictures, one setting or a grid of reducers x keep ratios."""
import os

import pytest
from conftest import REPO
from PIL import Image
from test_benchmark import TINY

from ailurus.experiments import visualize

CONFIG = os.path.join(REPO, "configs/vitdet_ailurus.py")


def test_grid_of_reducers_and_keep_ratios(tmp_path):
    out = str(tmp_path / "grid.png")
    visualize.main(["--config-file", CONFIG, "--input", "coffee", "--size", "128", "--keep-ratio", "0.5", "0.25",
                    "--reducer", "ailurus", "tome", "pool", "--out", out] + TINY)
    w, h = Image.open(out).size
    assert (w, h) == (2 * 128 + 6, 3 * 128 + 2 * 6)  # 3 rows (reducers) x 2 columns (keep ratios)


def test_an_image_file_and_a_clear_error_for_a_bad_one(tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (100, 60), (200, 30, 30)).save(photo)
    out = str(tmp_path / "one.png")
    visualize.main(["--config-file", CONFIG, "--input", str(photo), "--size", "128", "--out", out] + TINY)
    assert Image.open(out).size == (2 * 128, 128)  # canvas with borders, and the mean-colour picture
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    for bad, message in ((str(tmp_path / "missing.jpg"), "neither an image file"), (str(broken), "cannot read")):
        with pytest.raises(SystemExit, match=message):
            visualize.main(["--config-file", CONFIG, "--input", bad, "--size", "128", "--out", out] + TINY)


def test_several_images_side_by_side_with_their_own_budgets(tmp_path):
    out = str(tmp_path / "budgets.png")
    visualize.main(["--config-file", CONFIG, "--input", "coffee", "chelsea", "immunohistochemistry", "--size", "128",
                    "--out", out, "model.backbone.net.budget=adaptive"] + TINY)
    assert Image.open(out).size == (3 * 128 + 2 * 6, 128)  # one canvas per image
