#!/usr/bin/env python3
"""Prints each failed test of a .trx file with the first lines of its message and stack.

CI keeps only the tail of a run's output, where a verbose runner's failure details are long
gone; this digest goes right before the runner's summary so the tail names what failed and why.
"""
import sys
import xml.etree.ElementTree as ET

NS = {"t": "http://microsoft.com/schemas/VisualStudio/TeamTest/2010"}
MAX_LINES = 6

failed = []
for path in sys.argv[1:]:
    for result in ET.parse(path).getroot().iterfind(".//t:UnitTestResult", NS):
        if result.get("outcome") != "Failed":
            continue
        message = result.findtext("t:Output/t:ErrorInfo/t:Message", "", NS).strip()
        stack = result.findtext("t:Output/t:ErrorInfo/t:StackTrace", "", NS).strip()
        lines = message.splitlines()[:MAX_LINES] + [l for l in stack.splitlines() if "FlowSec" in l][:2]
        failed.append((result.get("testName"), result.get("duration"), lines))

print(f"==== {len(failed)} failed test(s) ====")
for name, duration, lines in failed:
    print(f"FAILED {name} [{duration}]")
    for line in lines:
        print(f"    {line[:300]}")
