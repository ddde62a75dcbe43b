"""The checks and the one pass rule: compare (statistics and verdict), tolerance (the profiles, as
layered data), noise_floor (the reference's own noise), reference (the reference checked before any
format), expectations (expected failures conditioned on machine facts), and one module per check:
parity (with the prelude every check shares), batch, dynamic, regression (suites/opset), precision."""
