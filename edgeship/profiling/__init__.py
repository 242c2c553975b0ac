"""Model profiling: latency, throughput and peak resources under load, and a sizing recommendation."""
