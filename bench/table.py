#!/usr/bin/env python3
"""Formats the figures bench/run.sh recorded ("key value" lines) as one Markdown table,
with each ratio beside the speed issue's target. MB/s = 10^6 bytes/s."""
import sys

r = {}
for line in open(sys.argv[1]):
    k, _, v = line.strip().partition(" ")
    if v:
        r[k] = v


def num(k):
    try:
        return float(r[k])
    except (KeyError, ValueError):
        return None


def size(s):
    """500M, 2G, 1.5GiB -> bytes (K/M/G are powers of 1000, KiB/MiB/GiB of 1024)."""
    s = s.strip().upper().removesuffix("/S").removesuffix("B")
    units = {"KI": 2**10, "MI": 2**20, "GI": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    for u, m in units.items():
        if s.endswith(u):
            return float(s[: -len(u)]) * m
    return float(s)


def mib(b):
    return f"{b / 2**20:.0f} MiB" if b >= 2**20 else f"{b / 2**10:.0f} KiB"


rows = []


def row(what, figure, reference="", ratio=None, target=None, ok=None):
    """ratio: (value, text); target: text; ok: None when not judged."""
    if r.get("smoke") == "1":
        ok = None  # debug build and small sizes: targets are not judged
    mark = "" if ok is None else ("met" if ok else "**not met**")
    rows.append((what, figure, reference, ratio or "", target or "", mark))


def rate(bytes_, t):
    return bytes_ / t / 1e6


b = num("bytes")
get, curl, rq = num("get_single"), num("curl"), num("rqbit")
if get:
    ref = []
    if rq:
        ref.append(f"rqbit→rqbit {rq:.2f} s ({rate(b, rq):.0f} MB/s)")
    if curl:
        ref.append(f"curl from {r.get('httpd', 'http')} {curl:.2f} s ({rate(b, curl):.0f} MB/s)")
    ratio = f"{rq / get:.2f}× rqbit" if rq else ""
    if curl:
        ratio += (", " if ratio else "") + f"{curl / get:.2f}× curl"
    row(f"single source, {mib(b)}: peer get", f"{get:.2f} s ({rate(b, get):.0f} MB/s)",
        "; ".join(ref), ratio, "≥ 1.5× rqbit", (rq / get >= 1.5) if rq else None)

mb, cap = num("multi_bytes"), r.get("multi_rate")
m1 = num("multi_1")
if m1:
    capb = size(cap)
    row(f"multi-source, {mib(mb)}, 1 source at {cap}/s", f"{m1:.2f} s ({rate(mb, m1):.0f} MB/s)",
        f"cap {capb / 1e6:.0f} MB/s", f"{rate(mb, m1) / (capb / 1e6):.2f}× the cap")
    for k in (2, 4):
        t = num(f"multi_{k}")
        if t:
            tgt, ok = ("≥ 3.6×", m1 / t >= 3.6) if k == 4 else ("", None)
            row(f"multi-source, {k} sources at {cap}/s each", f"{t:.2f} s ({rate(mb, t):.0f} MB/s)",
                "1 source", f"{m1 / t:.2f}× speed-up", tgt, ok)

sw = num("swarm")
if sw:
    F, u, n = num("swarm_bytes"), size(r["swarm_rate"]), int(num("swarm_getters"))
    # Fluid bound with a seed upload u_s and n getters uploading u each:
    # T >= max(F / u_s, n F / (u_s + n u)); with u_s = u it is F / u.
    bound = max(F / u, n * F / (u + n * u))
    row(f"swarm, {mib(F)}, 1 seed + {n} getters, all at {r['swarm_rate']}/s", f"{sw:.2f} s until all finish",
        f"fluid bound {bound:.2f} s", f"{sw / bound:.2f}× the bound", "≤ 1.3×", sw / bound <= 1.3)

for what, label, tgt in (("file", f"one {mib(b)} file", 0.85), ("folder", "16 files of 1/16 the size", 1.7)):
    i, o = num(f"index_{what}"), num(f"openssl_{what}")
    if i and o:
        row(f"hashing, {label}: peer index", f"{i:.2f} s ({rate(b, i):.0f} MB/s)",
            f"openssl dgst -sha256 {o:.2f} s ({rate(b, o):.0f} MB/s)", f"{o / i:.2f}× openssl",
            f"≥ {tgt}×", o / i >= tgt)

ot = num("ot_rps")
for op, label in (("locate", "Locate of a 1,000-chunk file"), ("search", "Search (one word, 50 results)")):
    rps = num(f"{op}_rps")
    if rps is None:
        continue
    fig = f"{rps:.0f} req/s, p50 {num(op + '_p50_ms'):.2f} ms, p99 {num(op + '_p99_ms'):.2f} ms"
    ref = f"opentracker announce under wrk {ot:.0f} req/s (p50 {r['ot_p50']}, p99 {r['ot_p99']})" if ot else ""
    if op == "locate":
        row(f"tracker, 64 in flight: {label}", fig, ref, f"{rps / ot:.2f}× opentracker" if ot else "",
            "≥ 0.5× opentracker", (rps / ot >= 0.5) if ot else None)
    else:
        row(f"tracker, 64 in flight: {label}", fig, ref, f"{rps / ot:.2f}× opentracker" if ot else "")
if num("populate_s"):
    row("tracker: loading the files, peers and holdings over gRPC", f"{num('populate_s'):.1f} s")

g = num("rss_getter_kib")
if g:
    row(f"memory: peak RSS of the getting peer ({mib(b)} get)", mib(g * 1024),
        f"serving node {mib(num('rss_node_kib') * 1024)}", "", "≤ 64 MiB", g * 1024 <= 64 * 2**20)
t = num("rss_tracker_kib")
if t:
    row("memory: peak RSS of the tracker with the files above", mib(t * 1024))

print("| measurement | figure | reference, same run | ratio | target | |")
print("|---|---|---|---|---|---|")
for cells in rows:
    print("| " + " | ".join(cells) + " |")
if r.get("smoke") == "1":
    print("\nSmoke run (debug build, small sizes, no reference tools): figures show the suite works, not speed.")
