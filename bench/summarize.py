"""Print the headline figures of a bench/run.sh run from its results.jsonl (one JSON object a line)."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    with open(path) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    print("== summary")
    for row in rows:
        if row["bench"] == "B1":
            print(f"   B1 submit -> first line: p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms; "
                  f"floor (python -c pass) p50 {row['floor_p50_ms']:.1f} ms; ratio {row['ratio']:.2f}x (target <= 2.0x)")
        elif row["bench"] == "B2":
            r1 = row["round1"]
            print(f"   B2 {row['jobs']:,} jobs / {row['nodes']:,} nodes: pure plan() {row['pure_plan_rate']:,.0f} decisions/s; "
                  f"plan+commit round 1 {r1['rate_plan_commit']:,.0f}/s, round 2 {row['round2']['rate_plan_commit']:,.0f}/s, "
                  f"round 3 {row['round3']['rate_plan_commit']:,.0f}/s, all rounds {row['all_rounds_rate_plan_commit']:,.0f}/s "
                  f"(target >= 1,000/s)")
        elif row["bench"] == "B3":
            for r in row["results"]:
                if r["system"] == "kubetrain":
                    print(f"   B3 kubetrain {r['jobs']:>5} x true, {r['clients']} client(s): {r['jobs_per_s']:.1f} jobs/s "
                          f"({r['all_done_s']:.1f}s, failed {r['failed']})")
                else:
                    print(f"   B3 slurm {r['slots']:>2} slots, {r['mode']}: {r['jobs_per_s']:.1f} jobs/s "
                          f"({r['all_done_s']:.1f}s, failed {r['failed']})")


if __name__ == "__main__":
    main(sys.argv[1])
