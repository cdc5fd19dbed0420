"""The five alert engines. Each module has `run(ctx)`: it reads one analysis through the
Context and reports Findings; none of them reaches back into the packet pipeline."""

from tapwatch.detect.engines import anomaly, malware, operational, policy, protocol_violation

# anomaly first: a scanner's probes are one scan alert, not a new-connection alert per port
ENGINES = (anomaly, policy, protocol_violation, malware, operational)

__all__ = ["ENGINES"]
