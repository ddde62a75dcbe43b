"""The HTTP service formats end to end: the service over ONNX Runtime matches the direct runner and
torch on tensors and real images and answers every bad request with a 4xx; a service whose
pre-processing differs from the spec's, and one without input validation, fail."""

import json

import pytest

from tests.conftest import BROKEN_FORMATS, TINY

pytestmark = pytest.mark.slow
MODEL = ("--model", f"{TINY}:build_with_preprocess", "--format-plugin", str(BROKEN_FORMATS))


def test_the_service_passes_parity_images_and_bad_requests(run_parity):
    result = run_parity(*MODEL, "--formats", "onnx-dynamo-ort-http")
    result.assert_outcomes(passed=6)  # b1, b4, images, bad requests, the schemathesis run
    report = json.loads((result.reports / "http.json").read_text())
    bad = next(c for c in report["checks"] if c["kind"] == "bad-requests")
    statuses = {row["request"]: row["status"] for row in bad["rows"]}
    assert statuses["50 MB body"] == 413 and statuses["truncated PNG"] == 400
    assert statuses["tensor of the wrong dtype"] == 422 and statuses["GET /health afterwards"] == 200
    assert all(400 <= s < 500 for r, s in statuses.items() if r != "GET /health afterwards")
    images = next(c for c in report["checks"] if c["kind"] == "images")
    names = {r["image"] for r in images["rows"]}
    assert names >= {"flower-rgba.png", "china-gray.png", "china-odd-123x77.png", "digit-0-gray.png"}
    assert "<table>" in (result.reports / "http.html").read_text()


def test_a_service_with_other_preprocessing_or_without_validation_fails(run_parity):
    result = run_parity(*MODEL, "--formats", "onnx-dynamo-ort-http-bgr,onnx-dynamo-ort-http-unchecked",
                        "-k", "test_http_service")
    # (the schemathesis run passes both: its generated tensors' data never matches their shape, so
    # none reaches the runtime; the hand-written bad requests are what catch the missing checks)
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines_random([
        "*china-rgb.jpg via HTTP vs torch* FAILED*",
        "*tensor with a dimension missing (/v1/infer): answered 500, not a 4xx*",
        "FAILED*tiny_images-onnx-dynamo-ort-http-bgr-images*",
        "FAILED*tiny_images-onnx-dynamo-ort-http-unchecked-bad-requests*"])


def test_schemathesis_finds_a_500_from_the_openapi_schema_alone(run_parity):
    result = run_parity(*MODEL, "--formats", "onnx-dynamo-ort-http-rgbonly", "-k", "openapi")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    # the 500 is JSON naming the exception (modelparity.serve's handler), not "Internal Server Error"
    assert 'POST /predict answered 500: {"error":"ValueError: axes don\'t match array"' in out
    assert "  reproduce: curl -X POST -H 'Content-Type: multipart/form-data" in out
    report = json.loads((result.reports / "http.json").read_text())
    rows = report["checks"][0]["rows"]
    assert {r["operation"] for r in rows} == {"GET /health", "POST /v1/infer", "POST /predict"}
    assert "500" in next(r for r in rows if r["operation"] == "POST /predict")["statuses"]
