from importlib.metadata import version

import k2_distill


def test_version_is_the_installed_distribution_version():
    assert k2_distill.__version__ == version("k2-distill")
