"""Reading the platform's Prometheus metrics in tests: scrape a process, sum series by labels, and
read the table of documented metrics from docs/operations.md."""
import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT


def scrape(port):
    """Every sample of a process's /metrics as {(name, labels as a sorted tuple): value}, parsed by
    the Prometheus client's own parser (a malformed exposition fails here)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples, name, **labels):
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


def delta(before, after, name, **labels):
    return total(after, name, **labels) - total(before, name, **labels)


def documented():
    """Rows of the metrics table in docs/operations.md: (name, type, labels, processes)."""
    rows = []
    for line in (ROOT / "docs/operations.md").read_text().splitlines():
        m = re.match(r"\|\s*`(xerotier:[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|\s*([a-z_, ]*?)\s*\|\s*([a-z, -]+?)\s*\|", line)
        if m:
            labels = [l.strip() for l in m.group(3).split(",") if l.strip()]
            rows.append((m.group(1), m.group(2), labels, [p.strip() for p in m.group(4).split(",")]))
    return rows


def sample_names(samples):
    """Family names present (histograms by their base name, counters with their `_total`)."""
    names = set()
    for (n, _) in samples:
        names.add(n)
        names.add(re.sub(r"_(bucket|sum|count)$", "", n))
    return names
