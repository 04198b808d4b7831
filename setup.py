from setuptools import find_packages, setup

# The zoo's load-time files go into the wheel as keras_fewshot/zoo_data/<name>/ (about 12 MB of
# weights), so `keras_fewshot.load(name)` works from any install, offline. The cards, pictures
# and histories stay in the repository's zoo/ (keras_fewshot.zoo explains the layout).
ZOO_FILES = ["*/config.json", "*/model.weights.h5", "*/metadata.json"]

setup(
    name="keras-fewshot",
    version="0.1.0",
    description="A Keras 3 model zoo for few-shot and meta-learning: trained, measured, servable.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["keras_fewshot", "keras_fewshot.*"])
    + ["keras_fewshot.zoo_data"],
    package_dir={"keras_fewshot.zoo_data": "zoo"},
    package_data={"keras_fewshot.data": ["splits/*/*", "omniglot_sample/*.md",
                                         "omniglot_sample/LICENSE",
                                         "omniglot_sample/*/*/*.png"],
                  "keras_fewshot.zoo_data": ZOO_FILES},
    entry_points={"console_scripts": ["keras-fewshot = keras_fewshot.cli:main"]},
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # needed by tensorflow-datasets 4.9, which does not declare it
        "tensorboard",  # training logs
        "matplotlib",  # learning curves and episode pictures (keras_fewshot.plots)
        "numpy",
        "absl-py",
    ],
    extras_require={"test": ["pytest", "pytest-xdist", "pillow"]},
)
