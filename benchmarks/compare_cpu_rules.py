"""v1 quick profile: equal vs async-KD under the old convergence rule (the committed v1 runs) vs the default robust rule.

python benchmarks/compare_cpu_rules.py      # prints the markdown table of results/glue5_cpu_new_rule/README.md
"""

import json
import os
import statistics as st

T = ["cola", "sst2", "mrpc", "stsb", "rte"]


def load(d, m, s):
    p = f"{d}/per_run/{m}_s{s}.json"
    return json.load(open(p)) if os.path.exists(p) else None


rows = []
base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
src = {
    "equal": (f"{base}/glue5_cpu", "equal"),
    "old rule (v1 async_kd)": (f"{base}/glue5_cpu", "async_kd"),
    "new rule": (f"{base}/glue5_cpu_new_rule", "async_kd"),
    "new rule + decline trigger": (f"{base}/glue5_cpu_decline", "async_kd_decline"),
}
print("| method | seeds | " + " | ".join(T) + " | GLUE-5 | converged tasks (near-trivial) |")
print("|---" * (len(T) + 4) + "|")
vals = {}
for name, (d, m) in src.items():
    runs = [r for r in (load(d, m, s) for s in range(3)) if r]
    if not runs:
        continue
    per = {t: [100 * r["final_dev"][f"dev_{t}_score"] for r in runs] for t in T}
    g = [st.mean(100 * r["final_dev"][f"dev_{t}_score"] for t in T) for r in runs]
    vals[name] = g
    conv = sum(1 for r in runs for t, c in (r.get("convergence") or {}).items() if c["converged"])
    nt = sum(1 for r in runs for t, c in (r.get("convergence") or {}).items() if c.get("near_trivial"))

    def f(x):
        return f"{st.mean(x):.2f} ± {st.stdev(x):.2f}" if len(x) > 1 else f"{x[0]:.2f}"

    print(
        f"| {name} | {len(runs)} | "
        + " | ".join(f(per[t]) for t in T)
        + f" | **{f(g)}** | {conv if runs[0].get('convergence') else '–'} ({nt if 'near_trivial' in str(runs[0].get('convergence')) else 'n/a'}) |"
    )
if "new rule" in vals and "equal" in vals:
    import scipy.stats as ss

    for a in ("new rule", "old rule (v1 async_kd)", "new rule + decline trigger"):
        if a not in vals:
            continue
        n = min(len(vals[a]), len(vals["equal"]))
        d = [vals[a][i] - vals["equal"][i] for i in range(n)]
        if n > 1:
            h = ss.t.ppf(0.975, n - 1) * st.stdev(d) / n**0.5
            print(f"{a} − equal (paired by seed, n={n}): {st.mean(d):+.2f} [{st.mean(d) - h:+.2f}, {st.mean(d) + h:+.2f}]")
        else:
            print(a, d)
