from importlib.metadata import version

import k2_styleref


def test_version_is_the_installed_distribution_version():
    assert k2_styleref.__version__ == version("k2-styleref")
