from setuptools import find_packages, setup

# Detectron2 is installed by the Makefile from the `sal-detectron2` wheel; it is deliberately not
# listed here, because that distribution is not called `detectron2`.
setup(
    name="ailurus",
    version="0.1.0",
    description="AiluRus token clustering for ViTDet Mask R-CNN in Detectron2",
    package_dir={"": "projects"},
    packages=find_packages("projects"),
    python_requires=">=3.10",
    install_requires=["torch", "fvcore", "tqdm", "psutil"],
)
