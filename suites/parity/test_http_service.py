"""The HTTP formats' own checks: real images through POST /predict against torch eager and the direct
runner, and malformed requests that must each answer a 4xx (README, "The HTTP service")."""

import pytest


def test_http_service(http_check):
    if http_check:
        pytest.fail("\n".join(http_check), pytrace=False)
