"""headcap: rig session or monocular video -> animatable 3D head avatar.

Install torch first (`pip install torch==2.13.0` on a CPU machine, the CUDA build on a GPU
machine): a bare torch requirement with no torch installed resolves to a multi-GB CUDA build.
"""
from setuptools import find_packages, setup

# The stage folders sit at the top of the repository (the design card's layout) but install
# under `headcap.` (their bare names are taken on PyPI). Subpackages are discovered, never
# listed, so a new one cannot be left out of the wheel.
STAGE_FOLDERS = ("core", "calib", "capture", "reconstruct", "avatar")


def _packages() -> tuple[list[str], dict[str, str]]:
    packages = find_packages(include=["headcap", "headcap.*"])
    package_dir = {"headcap": "headcap"}
    for folder in STAGE_FOLDERS:
        package_dir[f"headcap.{folder}"] = folder
        packages.append(f"headcap.{folder}")
        packages += [f"headcap.{folder}.{sub}" for sub in find_packages(where=folder)]
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()

INSTALL_REQUIRES = [
    "torch>=2.5,<2.15",
    "numpy>=2.0",
    "scipy>=1.11",
    "opencv-python-headless>=4.10",
    "pillow>=10",
    "matplotlib>=3.8",
    "rich>=13",
    "imageio>=2.34",
    "imageio-ffmpeg>=0.5",
    "av>=12",
    "ninja>=1.11",
    "ai-edge-litert>=2.0",  # runs MediaPipe's face models (headcap landmarks) under numpy 2
    "scikit-image>=0.22",  # marching cubes for the TSDF surface and the visual hull (headcap reconstruct)
    "pocketsphinx>=5.0,<6",  # headcap speak: forced alignment / phone recognition, ships its en-us models
    "safetensors>=0.4",  # headcap speak / register --method learned: the shipped network weights
]

EXTRAS = {
    "test": ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "setuptools>=70.1", "wheel>=0.43",
             "ray>=2.40"],  # ray: the executor tests start a local cluster
    # tinycudann has no registry package: build it from source
    # (pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch)
    "cuda": ["gsplat>=1.5"],
    "ray": ["ray>=2.40"],
    # outside implementations our tests compare against (skipped when absent)
    # espeak-english (GPL-3.0, bundles libespeak-ng 1.51): speech with known phone timings for the
    # speech tests and for training the speech model
    "oracle": ["gsplat>=1.5", "pycolmap>=3.11", "espeak-english==0.1.1"],
    "speech": ["espeak-english==0.1.1"],
    "colmap": ["pycolmap>=3.11"],
}

setup(
    name="headcap",
    version="0.1.0",
    description="Rig session or monocular video to an animatable, photoreal 3D head avatar",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={
        "headcap.reconstruct": ["csrc/*/*.cpp", "csrc/*/*.h", "csrc/*/*.cu"],
        "headcap.avatar": ["csrc/*/*.cpp", "csrc/*/*.h", "csrc/*/*.cu"],
        "headcap.core": ["csrc/*.h"],
        "headcap.viewer": ["viewer.js", "viewer.bundle.js"],
        "headcap.reconstruct.speech": ["weights/*.safetensors"],
        "headcap.reconstruct.learned_registration": ["weights/*.safetensors"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["headcap=headcap.cli:main"]},
)
