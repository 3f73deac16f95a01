from importlib.metadata import version

import k2_expander


def test_version_is_the_installed_distribution_version():
    assert k2_expander.__version__ == version("k2-expander")
