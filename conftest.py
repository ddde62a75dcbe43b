"""modelparity's pytest wiring; the engine (modelparity/) never imports pytest."""

pytest_plugins = [
    "fixtures.config", "fixtures.suites", "fixtures.parity", "fixtures.batch", "fixtures.reporting",
    "fixtures.dynamic", "fixtures.latency", "fixtures.load", "fixtures.precision", "fixtures.opset",
    "fixtures.http", "fixtures.reference",
]
