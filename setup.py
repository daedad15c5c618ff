"""Package discovery that pyproject.toml cannot express on its own.

Every package under synthcl/ is found automatically; the repository's top-level generators/ (the
generator backends, written like plugins) and recipes/ (the bundled YAML) install inside the synthcl
namespace as synthcl.generators and synthcl._recipes, so a wheel puts nothing but synthcl into
site-packages. Everything else is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

MAPPED = {"synthcl.generators": "generators", "synthcl._recipes": "recipes"}

setup(
    packages=[*find_namespace_packages(include=["synthcl", "synthcl.*"], exclude=["*.__pycache__"]), *MAPPED],
    package_dir=MAPPED,
)
