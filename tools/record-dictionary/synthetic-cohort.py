#!/usr/bin/env python3
"""Synthetic patients for training the decision record dictionary: each is one of the load mix's
patients with nation, region, age, primary site, Ki-67, grade, extent and progression redrawn.
No real patient is involved. Usage: synthetic-cohort.py SEED COUNT OUT.jsonl"""
import copy
import json
import random
import sys
from pathlib import Path

MIX = Path(__file__).resolve().parents[2] / "examples/load/patient-mix.jsonl"
SITES = ("PANCREAS STOMACH DUODENUM JEJUNUM_ILEUM APPENDIX COLON RECTUM THYMUS UNKNOWN_PRIMARY "
         "PARAGANGLIOMA PHAEOCHROMOCYTOMA OTHER").split()


def patient(rng, base):
    request = copy.deepcopy(rng.choice(base))
    p = request["patient"]
    d = p.setdefault("demographics", {})
    if rng.random() < 0.5:
        d["nation"] = "NATION_ENGLAND"
        d.pop("welsh_region", None)
    else:
        d["nation"] = "NATION_WALES"
        d["welsh_region"] = rng.choice(["WELSH_REGION_NORTH", "WELSH_REGION_SOUTH_MID"])
    d["age_years"] = rng.randint(25, 88)
    t = p.setdefault("tumour", {})
    if t.get("primary_site") != "PRIMARY_SITE_LUNG":
        t["primary_site"] = "PRIMARY_SITE_" + rng.choice(SITES)
    if rng.random() < 0.8:
        t["ki67_percent"] = round(rng.uniform(0.5, 70), 1)
    if rng.random() < 0.5:
        t["who_grade"] = rng.choice(["WHO_GRADE_G1", "WHO_GRADE_G2", "WHO_GRADE_G3"])
    else:
        t.pop("who_grade", None)
    p.setdefault("extent", {})["extent"] = rng.choice(
        ["EXTENT_LOCALISED", "EXTENT_LOCOREGIONAL", "EXTENT_METASTATIC"])
    if "progression" in p:
        p["progression"]["progressive"] = rng.random() < 0.7
    return request


def main():
    seed, count, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(seed)
    base = [json.loads(line) for line in MIX.read_text().splitlines() if line.strip()]
    with open(out, "w") as f:
        for _ in range(count):
            f.write(json.dumps(patient(rng, base)) + "\n")


if __name__ == "__main__":
    main()
