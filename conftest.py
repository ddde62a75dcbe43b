"""modelparity's pytest wiring in this repository: the modules of the plugin package fixtures/
(installed, the same code is modelparity.plugin, loaded by its entry point, and then not loaded
twice; the package itself cannot be named here, pytest's own plugin is called "fixtures"). The engine
(modelparity/) never imports pytest."""

import sys

from fixtures import MODULES

pytest_plugins = [] if "modelparity.plugin" in sys.modules else [f"fixtures.{m}" for m in MODULES]
