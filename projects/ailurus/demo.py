"""`make demo`: AiluRus ViTDet-B against the baseline on a real photo, and its clusters as a PNG."""
import argparse
import os

from . import benchmark, visualize

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "vitdet_ailurus.py")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", default="demo_out")
    parser.add_argument("--image", default="coffee")
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    config = os.path.normpath(CONFIG)

    print(f"== ViTDet-B at 1024 on the photo '{args.image}': baseline vs AiluRus (keep 0.5)", flush=True)
    benchmark.main(["--config-file", config, "--image", args.image, "--iters", "1", "--no-e2e",
                    "--json", os.path.join(args.out_dir, "photo_benchmark.json")])
    png = os.path.join(args.out_dir, "clusters_photo.png")
    visualize.main(["--config-file", config, "--image", args.image, "--out", png])
    print(f"cluster picture: {os.path.abspath(png)}")


if __name__ == "__main__":
    main()
