"""The five alert engines. Each module has `run(ctx)`: it reads one analysis through the
Context and reports Findings; none of them reaches back into the packet pipeline."""

from tapwatch.detect.engines import anomaly, malware, operational, policy, protocol_violation

ENGINES = (policy, anomaly, protocol_violation, malware, operational)

__all__ = ["ENGINES"]
