#!/usr/bin/env python3
"""Where a bulk transfer spends its time, from a packet capture of the getter's namespace
(`bench/wan.sh` with CAPTURE=1 writes one): for every TCP flow that carried at least
MIN_BYTES to the getter, the time from the getter's SYN to the first and the last data
segment, and the megabytes delivered every STEP seconds after that SYN. Two tools on the
same link then compare side by side: a slower ramp, a dip when the link fills, or a late
start show as a row that falls behind.

    bench/flows.py CAPTURE.pcap MIN_BYTES [PORT=NAME ...]

PORT=NAME names the flows from that server port (the rest are named by their port); rows
come in the order the flows started, so several links measured one after the other read
top to bottom.
Reads the capture with `tcpdump -r` (headers only are needed: `tcpdump -s 96`).
"""
import collections
import re
import subprocess
import sys

STEP = 0.25
STEPS = 24
LINE = re.compile(r"^(\d+\.\d+) .*IP (\S+) > (\S+): Flags \[[^\]]*\].*length (\d+)")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    pcap, min_bytes = sys.argv[1], int(sys.argv[2])
    names = dict(a.split("=", 1) for a in sys.argv[3:])
    # A capture cut short ends in a truncated record: tcpdump then fails after printing the
    # rest, which is still worth reading.
    run = subprocess.run(["tcpdump", "-r", pcap, "-tt", "-n"], capture_output=True, text=True)
    out = run.stdout
    if run.returncode != 0 and not out:
        sys.exit(f"tcpdump -r {pcap}: {run.stderr.strip()}")
    flows = collections.defaultdict(list)
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            flows[(m[2], m[3])].append((float(m[1]), int(m[4])))
    rows = []
    for (src, dst), pkts in flows.items():
        total = sum(n for _, n in pkts)
        back = flows.get((dst, src))
        if total < min_bytes or not back:
            continue
        port = src.rsplit(".", 1)[1]
        syn = back[0][0]
        data = [t for t, n in pkts if n > 1000]
        marks, cum, j = [], 0, 0
        for t, n in pkts:
            while j < STEPS and t - syn > STEP * (j + 1):
                marks.append(cum)
                j += 1
            cum += n
        rows.append((syn, names.get(port, f"port {port}"), total, data[0] - syn,
                     data[-1] - syn, marks))
    if not rows:
        print(f"no flow of {min_bytes} bytes or more in {pcap}")
        return
    width = max(len(r[1]) for r in rows)
    steps = max(len(r[5]) for r in rows)
    print(f"{'flow':<{width}}   MB   first  last data (s after the getter's SYN);"
          f" MB delivered by {STEP} s, {2 * STEP} s, ...")
    for _, name, total, first, last, marks in sorted(rows):
        series = " ".join(f"{m / 1e6:4.0f}" for m in marks[:steps])
        print(f"{name:<{width}} {total / 1e6:5.0f} {first:6.3f} {last:6.3f}  {series}")


if __name__ == "__main__":
    main()
