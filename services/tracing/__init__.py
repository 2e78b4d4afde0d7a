"""The CircuitService: attribution graphs as jobs, graph reads, interventions."""
