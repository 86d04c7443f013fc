"""headcap: rig session or monocular video -> animatable 3D head avatar.

Install torch first (`pip install torch==2.13.0` on a CPU machine, the CUDA build on a GPU
machine): a bare torch requirement with no torch installed resolves to a multi-GB CUDA build.
"""
from setuptools import setup

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
]

EXTRAS = {
    "test": ["pytest>=8", "pytest-timeout>=2.3"],
    # tinycudann has no registry package: build it from source
    # (pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch)
    "cuda": ["gsplat>=1.5"],
    "ray": ["ray>=2.40"],
    # outside implementations our tests compare against (skipped when absent)
    "oracle": ["gsplat>=1.5", "pycolmap>=3.11"],
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
    packages=["calib", "capture", "reconstruct", "avatar", "headcap"],
    package_data={
        "reconstruct": ["csrc/*.cpp", "csrc/*.h", "csrc/*.cu"],
        "avatar": ["csrc/*.cpp", "csrc/*.h", "csrc/*.cu"],
        "headcap": ["assets/*"],
    },
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["headcap=headcap.cli:main"]},
)
