"""The HTTP formats' own checks: real images through POST /predict against torch eager and the direct
runner, malformed requests that must each answer a 4xx, and a schemathesis run over the service's
OpenAPI schema that must find no 5xx (README, "The HTTP service")."""

import pytest


def test_http_service(http_check):
    if http_check:
        pytest.fail("\n".join(http_check), pytrace=False)
