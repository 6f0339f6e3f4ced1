"""Parses Prometheus text on stdin with prometheus_client's own parser (the
one Prometheus' Python tooling uses) and prints what it found as JSON:
{family: {"type": ..., "samples": [[name, labels, value], ...]}}. A text
the parser refuses makes it exit non-zero with the parser's error."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {
            "type": family.type,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
    print(json.dumps(families))


if __name__ == "__main__":
    main()
