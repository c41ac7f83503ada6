"""Parses a Prometheus scrape with the official Python client's parsers.

Usage: parse_metrics.py FILE
Reads the scrape from FILE, parses it with the strict OpenMetrics parser and
with the classic Prometheus text-format parser (both must accept it), and
prints {"families": {name: type}, "samples": {"name{k=v,...}": value}}.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as prom_parse


def main() -> None:
    text = open(sys.argv[1], encoding="utf-8").read()
    families = {}
    samples = {}
    for fam in om_parse(text):
        families[fam.name] = fam.type
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    # The classic parser must take it too (Prometheus servers and most tools).
    classic = sum(1 for _ in prom_parse(text.replace("# EOF\n", "")))
    print(json.dumps({"families": families, "samples": samples, "classic_families": classic}))


if __name__ == "__main__":
    main()
