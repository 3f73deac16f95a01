from importlib.metadata import version

import k2_rl


def test_version_is_the_installed_distribution_version():
    assert k2_rl.__version__ == version("k2-rl")
